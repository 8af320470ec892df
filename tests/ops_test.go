package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// load keeps clients keep-alive connections busy with GETs of one URL until finish; every
// response that is not a 200, and every transport error, counts as a failure.
type load struct {
	ok, failed atomic.Int64
	conns      atomic.Int64 // connections opened (a client whose connection was closed opens another)
	stop       chan struct{}
	wg         sync.WaitGroup

	mu     sync.Mutex // guards errors
	errors []string
}

// startLoad starts clients looping over url, each pausing pause between requests. It is
// bounded by finish, which the test must call (a cleanup calls it too).
func startLoad(t *testing.T, url string, clients int, pause time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: ioTimeout}
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				if !info.Reused {
					l.conns.Add(1)
				}
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errors) < 10 {
						l.errors = append(l.errors, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

var loadStopOnce sync.Map

// finish stops the clients, waits for them, and returns the counts.
func (l *load) finish() (ok, failed int64) {
	if _, done := loadStopOnce.LoadOrStore(l, true); !done {
		close(l.stop)
	}
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load()
}

// wantNoFailures finishes l and fails the test on any failed request or too few successes.
func (l *load) wantNoFailures(t *testing.T, minOK int64) {
	t.Helper()
	ok, failed := l.finish()
	if failed != 0 || ok < minOK {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("load: %d ok, %d failed (want 0 failed, at least %d ok); first errors: %q", ok, failed, minOK, l.errors)
	}
	t.Logf("load: %d requests, 0 failed", ok)
}

// workerPids returns the worker processes of the server.
func workerPids(t *testing.T, s *testenv.Server) []int {
	t.Helper()
	pids, err := testenv.Descendants(s.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

func servedBy(t *testing.T, s *testenv.Server) string {
	t.Helper()
	resp, body := get(t, s.URL+"/pid")
	wantStatus(t, resp, body, 200)
	return string(body)
}

// TestReloadUnderLoad: two HUPs under a keep-alive load lose no request and no connection,
// and afterwards other processes serve.
func TestReloadUnderLoad(t *testing.T) {
	s := startRaw(t, "-w", "2", "--threads", "2")
	before := workerPids(t, s)
	l := startLoad(t, s.URL+"/status?code=200", 16, 0)
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 2; i++ {
		s.Signal(syscall.SIGHUP)
		time.Sleep(1500 * time.Millisecond)
	}
	l.wantNoFailures(t, 200)
	if n := l.conns.Load(); n != 16 {
		t.Errorf("the 16 keep-alive clients opened %d connections: reloads must not touch connections", n)
	}
	after := workerPids(t, s)
	for _, p := range before {
		for _, q := range after {
			if p == q {
				t.Errorf("worker %d survived two reloads (before %v, after %v)", p, before, after)
			}
		}
	}
	if len(after) != 2 {
		t.Errorf("after reloads: %d workers %v, want 2", len(after), after)
	}
}

// TestMaxRequestsUnderLoad: workers recycled every ~50 requests lose no request.
func TestMaxRequestsUnderLoad(t *testing.T) {
	s := startRaw(t, "-w", "2", "--threads", "2", "--max-requests", "50", "--max-requests-jitter", "10")
	l := startLoad(t, s.URL+"/status?code=200", 16, 0)
	time.Sleep(3 * time.Second)
	l.wantNoFailures(t, 200)
	if n := l.conns.Load(); n != 16 {
		t.Errorf("the 16 keep-alive clients opened %d connections: recycling must not touch connections", n)
	}
	if n := strings.Count(s.Stderr(), "(--max-requests)"); n < 2 {
		t.Errorf("%d recycles logged, want at least 2:\n%s", n, s.Stderr())
	}
}

// TestMaxWorkerMemory: a leaking app is recycled by --max-worker-memory without a failed
// request.
func TestMaxWorkerMemory(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2", "--max-worker-memory", "150")
	l := startLoad(t, s.URL+"/leak?mb=4", 2, 50*time.Millisecond)
	if !eventually(20*time.Second, func() bool { return strings.Contains(s.Stderr(), "exceeds --max-worker-memory") }) {
		t.Fatalf("no memory recycle logged:\n%s", s.Stderr())
	}
	time.Sleep(2 * time.Second) // the replacement takes over while the load goes on
	l.wantNoFailures(t, 20)
	for _, p := range workerPids(t, s) {
		if rss, _ := testenv.RSS(p); rss > 400<<20 {
			t.Errorf("worker %d has %d MiB resident after recycling", p, rss>>20)
		}
	}
}

// TestTTINTTOU: one worker more, then one fewer, under load, with no failed request.
func TestTTINTTOU(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2")
	l := startLoad(t, s.URL+"/status?code=200", 8, 0)
	s.Signal(syscall.SIGTTIN)
	if !eventually(10*time.Second, func() bool { return len(workerPids(t, s)) == 2 }) {
		t.Fatalf("after TTIN: workers %v, want 2", workerPids(t, s))
	}
	time.Sleep(500 * time.Millisecond)
	s.Signal(syscall.SIGTTOU)
	if !eventually(10*time.Second, func() bool { return len(workerPids(t, s)) == 1 }) {
		t.Fatalf("after TTOU: workers %v, want 1", workerPids(t, s))
	}
	l.wantNoFailures(t, 100)
	if n := l.conns.Load(); n != 8 {
		t.Errorf("the 8 keep-alive clients opened %d connections", n)
	}
}

// TestTimeoutPythonLoop: a request stuck in a Python loop gets 504 at the timeout, the
// exception lands in its thread (traceback logged), other requests on the same worker complete,
// and the worker is not replaced.
func TestTimeoutPythonLoop(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "4", "--timeout", "1")
	pid := servedBy(t, s)
	start := time.Now()
	stuck := getAsync(s.URL + "/spin?s=60")
	l := startLoad(t, s.URL+"/status?code=200", 3, 10*time.Millisecond)
	r := <-stuck
	if r.err != nil || r.status != 504 || time.Since(start) > 4*time.Second {
		t.Fatalf("stuck request: %d %v after %v, want 504 after about 1s", r.status, r.err, time.Since(start))
	}
	time.Sleep(time.Second)
	l.wantNoFailures(t, 20)
	if !eventually(5*time.Second, func() bool { return strings.Contains(s.Stderr(), "RequestTimeout") }) {
		t.Errorf("no RequestTimeout traceback in the log:\n%s", s.Stderr())
	}
	if !strings.Contains(s.Stderr(), "in spin") {
		t.Errorf("the traceback does not show where the request was stuck:\n%s", s.Stderr())
	}
	if got := servedBy(t, s); got != pid {
		t.Errorf("the worker was replaced (%s → %s); the thread came back, so it should not be", pid, got)
	}
}

// stuckInC checks that a request stuck where the interrupt cannot reach it gets 504 and that
// its worker is replaced, new before old; sibling says whether other requests on that worker
// must still complete meanwhile (false when the app holds the GIL and freezes the worker).
func stuckInC(t *testing.T, path string, sibling bool) {
	s := startRaw(t, "-w", "1", "--threads", "4", "--timeout", "1")
	pid := servedBy(t, s)
	stuck := getAsync(s.URL + path)
	var l *load
	if sibling {
		l = startLoad(t, s.URL+"/status?code=200", 3, 10*time.Millisecond)
	}
	if r := <-stuck; r.err != nil || r.status != 504 {
		t.Fatalf("stuck request: %d %v, want 504", r.status, r.err)
	}
	var got string
	if !eventually(20*time.Second, func() bool {
		resp, err := client.Get(s.URL + "/pid")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = string(b)
		return resp.StatusCode == 200 && got != pid
	}) {
		t.Fatalf("worker %s was not replaced:\n%s", pid, s.Stderr())
	}
	if l != nil {
		l.wantNoFailures(t, 20)
	}
	if !eventually(10*time.Second, func() bool {
		n, _ := strconv.Atoi(pid)
		return syscall.Kill(n, 0) != nil
	}) {
		t.Errorf("the stuck worker %s is still alive", pid)
	}
	log := s.Stderr()
	if strings.Index(log, "Booting worker") == strings.LastIndex(log, "Booting worker") {
		t.Errorf("no replacement booted:\n%s", log)
	}
}

// TestTimeoutSleepReplacesWorker: time.sleep ignores the exception until it returns, so the
// worker is replaced; the other requests on it complete.
func TestTimeoutSleepReplacesWorker(t *testing.T) { stuckInC(t, "/sleep?s=60", true) }

// TestTimeoutRegexReplacesWorker: a catastrophic regex holds the GIL; the worker is replaced.
func TestTimeoutRegexReplacesWorker(t *testing.T) { stuckInC(t, "/regex?n=40", false) }

// TestSegfault: an app that segfaults on one URL fails that request; the server keeps serving.
func TestSegfault(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2")
	resp, body := get(t, s.URL+"/segfault")
	if resp.StatusCode != 502 {
		t.Fatalf("segfaulting request: %d, want 502", resp.StatusCode)
	}
	_ = body
	for i := 0; i < 5; i++ {
		stillServes(t, s)
	}
	if !strings.Contains(s.Stderr(), " died: ") {
		t.Errorf("the log does not say the worker crashed:\n%s", s.Stderr())
	}
}

// TestCrashKeepsFinishedResponses: when a worker crashes, requests it finished before get
// their responses (the frames are in the ring, which the front drains after the worker's
// exit); only the request that crashed it fails. The crashing request waits until every
// other one was answered, so none is caught half done.
func TestCrashKeepsFinishedResponses(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "4")
	for round := 0; round < 5; round++ {
		// Written together, so the worker reads them in batches of up to 4.
		const fast = 6
		conns := make([]net.Conn, fast+1)
		for i := range conns {
			conns[i] = dial(t, s)
		}
		crash := 2 // two answered before it in its batch, the rest after
		for i, c := range conns {
			path := "/counted"
			if i == crash {
				path = fmt.Sprintf("/segfault_after?n=%d", fast)
			}
			write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		for i, c := range conns {
			resp, body := readResponse(t, bufio.NewReader(c), "GET")
			if i == crash {
				if resp.StatusCode != 502 {
					t.Fatalf("round %d: the crashing request got %d, want 502", round, resp.StatusCode)
				}
			} else if resp.StatusCode != 200 || string(body) != "counted\n" {
				t.Fatalf("round %d, request %d: %d %q, want 200 \"counted\\n\"", round, i, resp.StatusCode, body)
			}
			c.Close()
		}
	}
}

// TestSlowloris: 300 connections trickling their heads do not delay normal requests.
func TestSlowloris(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
		conns = append(conns, c)
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			for _, c := range conns {
				c.Write([]byte("X: y\r\n"))
			}
		}
	}()
	defer close(stop)
	for i := 0; i < 50; i++ {
		start := time.Now()
		stillServes(t, s)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("request %d took %v behind 300 slow clients", i, d)
		}
	}
}

// holdIdle opens n connections to s, makes one exchange on each, and leaves them open, idle
// (closed when the test ends); it returns them with the front's RSS before and after.
func holdIdle(t *testing.T, s *testenv.Server, n int, exchange func(c net.Conn) error) (conns []net.Conn, before, after int64) {
	t.Helper()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	before, _ = testenv.RSS(s.Pid)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if err := exchange(c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	after, _ = testenv.RSS(s.Pid)
	return conns, before, after
}

// getOK sends a GET /status?code=200 on c and expects a 200.
func getOK(c net.Conn) error {
	buf := make([]byte, 4096)
	c.Write([]byte("GET /status?code=200 HTTP/1.1\r\nHost: x\r\n\r\n"))
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		return fmt.Errorf("%q %v", buf[:n], err)
	}
	return nil
}

// TestIdleKeepAlive3000: 3,000 idle keep-alive connections are held with bounded memory and
// the server still answers.
func TestIdleKeepAlive3000(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2", "--keep-alive", "60")
	conns, before, after := holdIdle(t, s, 3000, getOK)
	if growth := after - before; growth > 96<<20 {
		t.Errorf("front RSS grew by %d MiB for 3000 idle connections", growth>>20)
	}
	t.Logf("front RSS %d MiB → %d MiB with 3000 idle keep-alive connections", before>>20, after>>20)
	stillServes(t, s)
	// The idle connections are still open and usable.
	for _, i := range []int{0, 1500, 2999} {
		if err := getOK(conns[i]); err != nil {
			t.Errorf("idle connection %d: %v", i, err)
		}
	}
}

// TestIdleAfterBody: connections that sent a request body and then idle keep no buffer for
// it: 1000 of them, each after a 48 KiB POST, cost the front about what idle ones do.
func TestIdleAfterBody(t *testing.T) {
	s := startRaw(t, "-w", "1", "--threads", "2", "--keep-alive", "60")
	body := strings.Repeat("b", 48<<10)
	req := "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	_, before, after := holdIdle(t, s, 1000, func(c net.Conn) error {
		if _, err := c.Write([]byte(req)); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || len(got) != len(body) {
			return fmt.Errorf("%s, %d bytes, %v", resp.Status, len(got), err)
		}
		return nil
	})
	// Idle connections cost ~13 KiB each (TestIdleKeepAlive3000); a body buffer kept per
	// connection would add 48 MiB here.
	if growth := after - before; growth > 32<<20 {
		t.Errorf("front RSS grew by %d MiB for 1000 idle connections that each sent a 48 KiB body", growth>>20)
	}
	t.Logf("front RSS %d MiB → %d MiB with 1000 idle connections after a 48 KiB POST each", before>>20, after>>20)
}

// TestFrontKilledWorkersExit: when the front dies, its workers notice and exit.
func TestFrontKilledWorkersExit(t *testing.T) {
	s := startRaw(t, "-w", "2")
	workers := workerPids(t, s)
	if len(workers) != 2 {
		t.Fatalf("workers %v, want 2", workers)
	}
	syscall.Kill(s.Pid, syscall.SIGKILL)
	if !eventually(5*time.Second, func() bool {
		for _, w := range workers {
			if _, err := os.Stat("/proc/" + strconv.Itoa(w)); err == nil {
				if st, _ := os.ReadFile("/proc/" + strconv.Itoa(w) + "/stat"); !strings.Contains(string(st), ") Z ") {
					return false
				}
			}
		}
		return true
	}) {
		t.Fatalf("workers %v still alive 5s after the front was killed", workers)
	}
}

// TestImportErrorNoLoop: a worker that cannot import the app stops the server with the error
// shown once; no respawn loop.
func TestImportErrorNoLoop(t *testing.T) {
	code, out := testenv.StartCmd(t, 20*time.Second, "--chdir", testenv.AppsDir(t), "-w", "2", "importerr_raises:application")
	if code == 0 {
		t.Fatalf("exit 0, want non-zero:\n%s", out)
	}
	if n := strings.Count(out, "Traceback"); n < 1 || n > 2 {
		t.Errorf("%d tracebacks, want the import error once per worker that started:\n%s", n, out)
	}
	if strings.Contains(out, "Starting a new worker") {
		t.Errorf("the server tried to respawn a worker that cannot import the app:\n%s", out)
	}
}

// TestSilentWorkerKilled: a worker that stops sending heartbeats (here: stopped with SIGSTOP)
// is killed and replaced; requests go on being served.
func TestSilentWorkerKilled(t *testing.T) {
	s := startRaw(t, "-w", "1", "--timeout", "3")
	workers := workerPids(t, s)
	if len(workers) != 1 {
		t.Fatalf("workers %v, want 1", workers)
	}
	syscall.Kill(workers[0], syscall.SIGSTOP)
	defer syscall.Kill(workers[0], syscall.SIGCONT)
	if !eventually(15*time.Second, func() bool { return strings.Contains(s.Stderr(), "sent no heartbeat") }) {
		t.Fatalf("the stopped worker was not noticed:\n%s", s.Stderr())
	}
	if !eventually(15*time.Second, func() bool {
		resp, err := client.Get(s.URL + "/status?code=200")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatal("no worker serves after the silent one was killed")
	}
}

// TestSIGTERMLongRequests: SIGTERM with several long requests in flight on two workers lets
// every one of them complete, then exits 0.
func TestSIGTERMLongRequests(t *testing.T) {
	s := startRaw(t, "-w", "2", "--threads", "3")
	var inflight []<-chan result
	for i := 0; i < 6; i++ {
		inflight = append(inflight, getAsync(s.URL+"/sleep?s=2"))
	}
	time.Sleep(500 * time.Millisecond)
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, ch := range inflight {
		if r := <-ch; r.err != nil || r.status != 200 || r.body != "slept" {
			t.Errorf("request %d: %d %q %v, want 200 slept", i, r.status, r.body, r.err)
		}
	}
	if code, err := s.Wait(15 * time.Second); err != nil || code != 0 {
		t.Errorf("after SIGTERM: exit %d, %v; want 0", code, err)
	}
}

// schedPolicies counts the scheduling policies (field 41 of /proc/PID/task/TID/stat) of every
// thread of pid.
func schedPolicies(t *testing.T, pid int) map[int]int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		// The fields after the command name, which is in parentheses and may hold spaces.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		policy, err := strconv.Atoi(fields[41-3])
		if err != nil {
			t.Fatalf("stat of thread %s: %v", task.Name(), err)
		}
		got[policy]++
	}
	return got
}

// TestWorkerScheduling: workers run every thread under SCHED_BATCH (3) by default, the front
// under the normal policy (0); --worker-scheduling normal keeps workers normal too.
func TestWorkerScheduling(t *testing.T) {
	t.Parallel()
	const normal, batch = 0, 3
	s := startRaw(t, "--threads", "3")
	stillServes(t, s)
	for _, pid := range workerPids(t, s) {
		if got := schedPolicies(t, pid); got[batch] == 0 || len(got) != 1 {
			t.Errorf("worker %d threads by policy: %v, want all SCHED_BATCH (3)", pid, got)
		}
	}
	if got := schedPolicies(t, s.Pid); got[normal] == 0 || len(got) != 1 {
		t.Errorf("front threads by policy: %v, want all normal (0)", got)
	}
	n := startRaw(t, "--threads", "3", "--worker-scheduling", "normal")
	stillServes(t, n)
	for _, pid := range workerPids(t, n) {
		if got := schedPolicies(t, pid); got[normal] == 0 || len(got) != 1 {
			t.Errorf("--worker-scheduling normal: worker %d threads by policy: %v, want all normal", pid, got)
		}
	}
}
