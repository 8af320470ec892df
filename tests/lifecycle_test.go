package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

type result struct {
	status int
	body   string
	err    error
}

// getAsync GETs url in a goroutine and delivers the outcome on the returned channel.
func getAsync(url string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := client.Get(url)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- result{resp.StatusCode, string(b), err}
	}()
	return ch
}

// TestSIGTERMDrain: SIGTERM lets the in-flight request finish with its real response, then
// gowsgi exits 0. An idle keep-alive connection does not hold the exit up.
func TestSIGTERMDrain(t *testing.T) {
	s := startRaw(t)
	idle := dial(t, s)
	write(t, idle, headRequest("GET", "/status?code=200"))
	inflight := getAsync(s.URL + "/sleep?s=2")
	time.Sleep(300 * time.Millisecond)
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-inflight
	if r.err != nil || r.status != 200 || r.body != "slept" {
		t.Errorf("in-flight request during drain: %d %q %v, want 200 \"slept\"", r.status, r.body, r.err)
	}
	code, err := s.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Errorf("after SIGTERM: exit %d, %v; want 0 within 10s", code, err)
	}
}

func TestSIGINTStops(t *testing.T) {
	s := startRaw(t)
	stillServes(t, s) // the workers are up
	if err := s.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code, err := s.Wait(10 * time.Second); err != nil || code != 0 {
		t.Errorf("after SIGINT: exit %d, %v; want 0 within 10s", code, err)
	}
}

// TestAppSIGTERMHandlerFenced: an app that installs its own SIGTERM handler (which would
// kill its process) must not take the signal from gowsgi: with the whole process group
// signalled, as a service manager does, the in-flight request still completes and gowsgi
// exits 0.
func TestAppSIGTERMHandlerFenced(t *testing.T) {
	s := startApp(t, "sigterm_handler:application")
	resp, body := get(t, s.URL+"/")
	wantStatus(t, resp, body, 200)
	inflight := getAsync(s.URL + "/sleep")
	time.Sleep(300 * time.Millisecond)
	if err := s.SignalGroup(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-inflight
	if r.err != nil || r.status != 200 || r.body != "Hello, World!" {
		t.Errorf("in-flight request: %d %q %v, want 200 (the app's handler must not have run)", r.status, r.body, r.err)
	}
	if code, err := s.Wait(10 * time.Second); err != nil || code != 0 {
		t.Errorf("after SIGTERM to the group: exit %d, %v; want 0", code, err)
	}
}

// TestGracefulTimeout: a request that outlives --graceful-timeout does not hold the exit up.
func TestGracefulTimeout(t *testing.T) {
	s := startRaw(t, "--graceful-timeout", "1")
	inflight := getAsync(s.URL + "/sleep?s=30")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Wait(6 * time.Second); err != nil && !s.Exited() {
		t.Errorf("still running %v after SIGTERM with --graceful-timeout 1: %v", time.Since(start), err)
	}
	select {
	case r := <-inflight:
		if r.err == nil && r.status == 200 {
			t.Errorf("a 30 s request completed with 200 despite --graceful-timeout 1")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the cut-off request's connection was left open")
	}
}

// TestRequestTimeout: past --timeout the front answers 504 itself, and the server keeps
// serving (replacing the worker if need be).
func TestRequestTimeout(t *testing.T) {
	s := startRaw(t, "--timeout", "1")
	start := time.Now()
	resp, body := get(t, s.URL+"/sleep?s=10")
	if d := time.Since(start); resp.StatusCode != 504 || d > 4*time.Second {
		t.Errorf("request sleeping 10 s with --timeout 1: %q after %v, want 504 within 4s; body %q", resp.Status, d, body)
	}
	c := &http.Client{Timeout: 20 * time.Second}
	r, err := c.Get(s.URL + "/status?code=200")
	if err != nil {
		t.Fatalf("after a timeout: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("after a timeout: %q, want 200", r.Status)
	}
}

// TestKeepAliveTimeout: an idle keep-alive connection is closed --keep-alive after its last
// response, however many requests it carried before (the front re-arms its deadlines only
// when they move by more than a slack), and pauses shorter than that do not end it.
func TestKeepAliveTimeout(t *testing.T) {
	s := startRaw(t, "--keep-alive", "1")
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(what string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", what, resp.Status)
		}
	}
	for i := 0; i < 50; i++ {
		ask(fmt.Sprintf("request %d in a row", i+1))
	}
	for i := 0; i < 3; i++ { // 1.8 s in all, each pause shorter than the timeout
		time.Sleep(600 * time.Millisecond)
		ask(fmt.Sprintf("request after pause %d", i+1))
	}
	start := time.Now()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = br.ReadByte()
	idle := time.Since(start)
	if err != io.EOF {
		t.Fatalf("idle connection: read gave %v after %v, want EOF", err, idle)
	}
	if idle < 900*time.Millisecond || idle > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 1s (--keep-alive 1)", idle)
	}
}

// TestWorkerKilledIsReplaced: a worker killed with SIGKILL is replaced, and a request made
// while the replacement boots waits in the front and is served.
func TestWorkerKilledIsReplaced(t *testing.T) {
	s := startRaw(t)
	stillServes(t, s)
	workers, err := testenv.Descendants(s.Pid)
	if err != nil || len(workers) == 0 {
		t.Fatalf("no worker processes under pid %d: %v", s.Pid, err)
	}
	for _, w := range workers {
		syscall.Kill(w, syscall.SIGKILL)
	}
	// Wait until the front has reaped the killed workers (so it knows), then ask while the
	// replacement boots.
	if !eventually(10*time.Second, func() bool {
		now, _ := testenv.Descendants(s.Pid)
		return !containsAny(now, workers)
	}) {
		t.Fatalf("killed workers %v not reaped within 10s", workers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/status?code=200", nil)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request after killing the workers %v: %v", workers, err)
	}
	t.Logf("served %v after the kill", time.Since(start))
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("request after killing the workers: %q, want 200", resp.Status)
	}
}

// containsAny reports whether some element of b is in a.
func containsAny(a, b []int) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// TestThreadLocal: each Python thread keeps its thread state (and so threading.local)
// from one request to the next, and a worker has exactly --threads threads serving.
func TestThreadLocal(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "--threads", "2")
	const total = 200
	var mu sync.Mutex
	counts := map[int64][]int{}
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/4; i++ {
				resp, err := client.Get(s.URL + "/tlocal")
				if err != nil {
					errs <- err
					return
				}
				var r struct {
					Ident int64
					Count int
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err := jsonUnmarshal(b, &r); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				counts[r.Ident] = append(counts[r.Ident], r.Count)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(counts) > 2 {
		t.Errorf("%d thread idents served /tlocal, want at most 2 (--threads 2)", len(counts))
	}
	n := 0
	for ident, cs := range counts {
		sort.Ints(cs)
		for i, c := range cs {
			if c != i+1 {
				t.Errorf("thread %d: counts %v, want 1..%d (threading.local lost between requests?)", ident, cs, len(cs))
				break
			}
		}
		n += len(cs)
	}
	if n != total {
		t.Errorf("%d responses, want %d", n, total)
	}
}

// TestBigResponseBoundedMemory streams 1 GiB and checks that the server's processes (front
// and workers) stay under 200 MiB of resident memory throughout, including while the client
// stops reading for two seconds (the front must push back on the worker, not buffer).
func TestBigResponseBoundedMemory(t *testing.T) {
	t.Parallel()
	const limit = 200 << 20
	s := startRaw(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var maxRSS int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := testenv.TreeRSS(s.Pid); err == nil && rss > maxRSS {
				maxRSS = rss
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/big?mb=1024", nil)
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.CopyN(io.Discard, resp.Body, 1<<20)
	if err == nil {
		time.Sleep(2 * time.Second) // a stalled reader
		var m int64
		m, err = io.Copy(io.Discard, resp.Body)
		n += m
	}
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if n != 1<<30 {
		t.Errorf("read %d bytes, want %d", n, 1<<30)
	}
	if maxRSS == 0 || maxRSS >= limit {
		t.Errorf("max RSS of the server's processes %d MiB, want below %d MiB", maxRSS>>20, limit>>20)
	}
	t.Logf("max RSS %.1f MiB", float64(maxRSS)/(1<<20))
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("bad JSON %q: %w", b, err)
	}
	return nil
}

// TestStopWithHangingFinalize: an app whose non-daemon thread never ends makes finalizing
// Python hang; SIGTERM still ends gowsgi and its worker within --graceful-timeout and a bit.
func TestStopWithHangingFinalize(t *testing.T) {
	s := startApp(t, "nondaemon:application", "--graceful-timeout", "2")
	stillServesPath(t, s.URL+"/")
	workers, _ := testenv.Descendants(s.Pid)
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Wait(10 * time.Second); err != nil {
		t.Fatalf("gowsgi did not stop: %v", err)
	}
	for _, w := range workers {
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(w) + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
			t.Errorf("worker %d outlived the front", w)
		}
	}
}

// TestBlockedThreadDoesNotHoldUpOthers: a worker gives a batch of requests to the thread that
// is already running, so a request that blocks must not keep the requests queued behind it
// from the worker's other threads, whether they arrived in its batch or later.
func TestBlockedThreadDoesNotHoldUpOthers(t *testing.T) {
	s := startRaw(t, "--threads", "2")
	slow, fast := dial(t, s), dial(t, s)
	start := time.Now()
	// Both requests go out at once, so the worker often reads them in one batch.
	write(t, slow, "GET /sleep?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
	write(t, fast, "GET /single HTTP/1.1\r\nHost: x\r\n\r\n")
	fr := bufio.NewReader(fast)
	resp, body := readResponse(t, fr, "GET")
	wantStatus(t, resp, body, 200)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("a fast request waited %v behind a 3 s one on a worker with a free thread", d)
	}
	// And a request that arrives while the slow one runs.
	start = time.Now()
	write(t, fast, "GET /single HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body = readResponse(t, fr, "GET")
	wantStatus(t, resp, body, 200)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("a later fast request waited %v behind a 3 s one", d)
	}
	resp, body = readResponse(t, bufio.NewReader(slow), "GET")
	wantStatus(t, resp, body, 200)
}
