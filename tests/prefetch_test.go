package tests

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRecallFromHeldUpWorker: requests queued in a worker whose only thread is held up come
// back and are served by the other worker, instead of waiting for the thread (--prefetch).
func TestRecallFromHeldUpWorker(t *testing.T) {
	s := startRaw(t, "-w", "2", "--threads", "1", "--prefetch", "2", "--log-level", "debug")
	for round := 0; round < 3; round++ {
		// One worker's thread sleeps 3 s, the other's 0.3 s: each took one idle thread.
		slow := dial(t, s)
		write(t, slow, "GET /sleep?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(50 * time.Millisecond)
		short := dial(t, s)
		write(t, short, "GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(50 * time.Millisecond)
		// Four more fill both workers' queues: two of them queue behind the 3 s sleep.
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- getCounted(s.Addr)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Fatalf("round %d: the queued requests took %v: some waited for the 3 s sleep", round, took.Round(time.Millisecond))
		}
		for _, c := range []net.Conn{slow, short} {
			if resp, body := readResponse(t, bufio.NewReader(c), "GET"); resp.StatusCode != 200 || string(body) != "slept" {
				t.Fatalf("round %d: sleep answered %d %q", round, resp.StatusCode, body)
			}
			c.Close()
		}
	}
	if !strings.Contains(s.Stderr(), "recalling them") {
		t.Errorf("the log does not say a worker's queue was recalled:\n%s", s.Stderr())
	}
}

// getCounted GETs /counted on a connection of its own and checks the answer.
func getCounted(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprint(c, "GET /counted HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read /counted: %w", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200 ") {
		return fmt.Errorf("/counted: %q", line)
	}
	return nil
}

// TestCrashRetriesQueuedRequests: requests sent to a worker beyond its threads (--prefetch:
// into its ring and queue, not held in the front) had not reached the app when it crashes:
// they are sent again and answered; only the request that crashed it fails. The log shows
// that some were sent to the worker that crashed.
func TestCrashRetriesQueuedRequests(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "1", "--prefetch", "3")
	for round := 0; round < 5; round++ {
		const queued = 3
		crash := dial(t, s)
		write(t, crash, "GET /segfault_after?n=0&wait=0 HTTP/1.1\r\nHost: x\r\n\r\n")
		conns := make([]net.Conn, queued)
		for i := range conns {
			conns[i] = dial(t, s)
			write(t, conns[i], "GET /counted HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		if resp, _ := readResponse(t, bufio.NewReader(crash), "GET"); resp.StatusCode != 502 {
			t.Fatalf("round %d: the crashing request got %d, want 502", round, resp.StatusCode)
		}
		for i, c := range conns {
			resp, body := readResponse(t, bufio.NewReader(c), "GET")
			if resp.StatusCode != 200 || string(body) != "counted\n" {
				t.Fatalf("round %d, request %d: %d %q, want 200 \"counted\\n\"", round, i, resp.StatusCode, body)
			}
			c.Close()
		}
		crash.Close()
	}
	if !strings.Contains(s.Stderr(), "died before starting GET /counted") {
		t.Errorf("no queued request was sent again after a crash:\n%s", s.Stderr())
	}
}
