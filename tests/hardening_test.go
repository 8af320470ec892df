package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// TestUpgradeNonASCII: a WebSocket upgrade with non-ASCII header bytes (Granian's
// CVE-2026-42544 crashed a worker with it) gets a 400, and the server keeps serving.
func TestUpgradeNonASCII(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("GET /status?code=200 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Protocol: chat\xff\xfe\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	if resp.StatusCode != 400 {
		t.Fatalf("got %d, want 400", resp.StatusCode)
	}
	stillServes(t, s)
}

// TestWorkerDeathAnswers502: a request executing when its worker is killed gets a 502; the
// worker is replaced and the next request succeeds.
func TestWorkerDeathAnswers502(t *testing.T) {
	s := startRaw(t)
	stillServes(t, s)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := client.Get(s.URL + "/sleep?s=5")
		if err != nil {
			t.Errorf("request in flight: %v", err)
			done <- nil
			return
		}
		resp.Body.Close()
		done <- resp
	}()
	time.Sleep(500 * time.Millisecond) // the request is executing in the worker
	workers, err := testenv.Descendants(s.Pid)
	if err != nil || len(workers) == 0 {
		t.Fatalf("no workers under %d: %v", s.Pid, err)
	}
	for _, w := range workers {
		syscall.Kill(w, syscall.SIGKILL)
	}
	select {
	case resp := <-done:
		if resp != nil && resp.StatusCode != 502 {
			t.Fatalf("executing request: %q, want 502", resp.Status)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the executing request was not answered after its worker died")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/status?code=200", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the worker died: %q, want 200", resp.Status)
	}
	if !strings.Contains(s.Stderr(), "killed by signal") {
		t.Errorf("the error log does not say the worker was killed:\n%s", s.Stderr())
	}
}

// TestStrayWriteAndInput: write() and wsgi.input kept by the app past their request fail in a
// later request instead of writing into (or reading from) whatever that thread serves next.
func TestStrayWriteAndInput(t *testing.T) {
	t.Parallel()
	s := startApp(t, "rawapp:raw_application", "--threads", "1")
	req, _ := http.NewRequest("POST", s.URL+"/keep_write", strings.NewReader(strings.Repeat("x", 200000)))
	resp, body := do(t, req)
	wantStatus(t, resp, body, 200)
	resp, body = get(t, s.URL+"/use_stray")
	wantStatus(t, resp, body, 200)
	if got := string(body); got != "write: OSError, read: OSError" || strings.Contains(got, "LEAKED") {
		t.Fatalf("stray calls: %q, want both to raise OSError", got)
	}
}

// TestUnreadBodyLingeringClose: a response to a request whose body the app did not read, on a
// connection that closes after it, must reach a client that sends its whole body before it
// reads: closing with unread input would make the kernel reset the connection and drop the
// response.
func TestUnreadBodyLingeringClose(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for i := 0; i < 3; i++ {
		c := dial(t, s)
		const size = 512 << 10 // past what travels with the request, within the linger bound
		write(t, c, fmt.Sprintf("POST /single HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", size))
		for sent := 0; sent < size; sent += 16 << 10 {
			if _, err := c.Write(bytes.Repeat([]byte("x"), 16<<10)); err != nil {
				t.Fatalf("round %d: sending the body after %d bytes: %v", i, sent, err)
			}
			time.Sleep(time.Millisecond) // a client slower than the app
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("round %d: the response was lost: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("round %d: status %d, body %q, err %v", i, resp.StatusCode, body, err)
		}
		c.Close()
	}
}
