package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"gowsgi/internal/front"
	"gowsgi/internal/supervisor"
	"gowsgi/internal/testenv"
	"gowsgi/internal/worker"
	"gowsgi/internal/wsgi"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// frontAllocsBudget is how many heap allocations the front may make per keep-alive GET of
// the hello app, everything included: reading and parsing the request, packing the environ,
// waiting for a thread, the frames both ways, the response head and body. Measured at 8 when
// this budget was set; raise it only with a reason.
const frontAllocsBudget = 9

// TestFrontAllocsPerRequest runs the real front (supervisor and HTTP server, in this process)
// with a real worker, and counts the heap allocations of this process per request. The
// client reuses its buffers, so what is counted is the front's.
func TestFrontAllocsPerRequest(t *testing.T) {
	exe := testenv.BuildBinary(t)
	dir := filepath.Join(testenv.RepoRoot(t), "examples", "hello")
	wjson, err := json.Marshal(workerOptions{App: wsgi.AppSpec{Module: "app", Attr: "application"},
		AppName: "app:application", Threads: 2, Paths: []string{dir}, LogLevel: "warning"})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sup := supervisor.New(supervisor.Config{Exe: exe, Args: []string{workerArg},
		Env: append(os.Environ(), workerEnv+"="+string(wjson)), Workers: 1,
		Stdout: io.Discard, Stderr: io.Discard, Logger: log, AppLoadExit: worker.ExitAppLoad})
	if err := sup.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := front.New(front.Config{Listeners: []net.Listener{ln}, Logger: log}, sup)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, func() time.Duration { return time.Second })
		close(served)
	}()
	t.Cleanup(func() {
		stop()
		<-served
		sup.Stop(time.Second)
	})

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: alloc-test\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4096)
	roundTrip := func() error {
		if _, err := c.Write(req); err != nil {
			return err
		}
		return readResponse(c, buf)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	for i := 0; i < 500; i++ { // warm up: pools, buffers, the worker's interpreter
		if err := roundTrip(); err != nil {
			t.Fatalf("warm-up request %d: %v\n%s", i, err, logs.String())
		}
	}
	const n = 5000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		if err := roundTrip(); err != nil {
			t.Fatalf("request %d: %v\n%s", i, err, logs.String())
		}
	}
	runtime.ReadMemStats(&after)
	perReq := float64(after.Mallocs-before.Mallocs) / n
	t.Logf("front: %.2f allocations, %.0f bytes per request", perReq, float64(after.TotalAlloc-before.TotalAlloc)/n)
	if perReq > frontAllocsBudget {
		t.Fatalf("the front makes %.2f allocations per request, budget %d", perReq, frontAllocsBudget)
	}
}

// readResponse reads one response with a Content-Length body from c into buf, without
// allocating.
func readResponse(c net.Conn, buf []byte) error {
	have := 0
	for {
		k, err := c.Read(buf[have:])
		if err != nil {
			return err
		}
		have += k
		end := bytes.Index(buf[:have], []byte("\r\n\r\n"))
		if end < 0 {
			if have == len(buf) {
				return fmt.Errorf("response head over %d bytes", len(buf))
			}
			continue
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
			return fmt.Errorf("unexpected response %q", buf[:end])
		}
		i := bytes.Index(buf[:end], []byte("\r\nContent-Length: "))
		if i < 0 {
			return fmt.Errorf("no Content-Length in %q", buf[:end])
		}
		v := buf[i+len("\r\nContent-Length: "):]
		v = v[:bytes.IndexByte(v, '\r')]
		cl, err := strconv.Atoi(string(v)) // string(v) does not escape: no allocation
		if err != nil {
			return fmt.Errorf("bad Content-Length %q", v)
		}
		total := end + 4 + cl
		for have < total {
			k, err := c.Read(buf[have:total])
			if err != nil {
				return err
			}
			have += k
		}
		if have != total {
			return fmt.Errorf("%d bytes after the response", have-total)
		}
		return nil
	}
}
