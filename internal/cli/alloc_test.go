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
	"strings"
	"sync"
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
// this budget was first set, at 3 since streams are pooled; raise it only with a reason.
const frontAllocsBudget = 4

// TestFrontAllocsPerRequest runs the real front (supervisor and HTTP server, in this process)
// with a real worker, and counts the heap allocations of this process per request. The
// clients reuse their buffers, so what is counted is the front's.
func TestFrontAllocsPerRequest(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (make test runs without it)")
	}
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
	srv := front.New(front.Config{Listeners: []net.Listener{ln}, Logger: log, Timeout: 30 * time.Second}, sup)
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

	addr := ln.Addr().String()
	get := []byte("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: alloc-test\r\nAccept: */*\r\n\r\n")
	post := []byte("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 16384\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n" + strings.Repeat("0123456789abcdef", 1024))

	// Keep-alive GETs one after another: the count of allocations.
	allocs, size := measure(t, addr, get, 1, 5000, &logs)
	t.Logf("GET, 1 connection: %.2f allocations, %.0f bytes per request", allocs, size)
	if allocs > frontAllocsBudget {
		t.Errorf("the front makes %.2f allocations per GET, budget %d", allocs, frontAllocsBudget)
	}
	// 16 KiB POSTs on 16 connections at once: frames pile up while others are written, and
	// the buffers that carry them must be reused, not allocated per request.
	allocs, size = measure(t, addr, post, 16, 5000, &logs)
	t.Logf("POST 16 KiB, 16 connections: %.2f allocations, %.0f bytes per request", allocs, size)
	if size > frontBytesBudget {
		t.Errorf("the front allocates %.0f bytes per 16 KiB POST, budget %d", size, frontBytesBudget)
	}
}

// frontBytesBudget bounds the bytes the front allocates per 16 KiB POST under concurrency:
// about 1.6 KiB when first set, 1,065 bytes before streams were pooled and 271 since, and more
// than 16 KiB if request bodies get copied into fresh buffers.
const frontBytesBudget = 1 << 10

// measure sends n requests req over conns keep-alive connections to addr (after a warm-up)
// and returns the heap allocations and bytes of this process per request.
func measure(t *testing.T, addr string, req []byte, conns, n int, logs *bytes.Buffer) (allocs, size float64) {
	t.Helper()
	run := func(count int) {
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for g := 0; g < conns; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				buf := make([]byte, 4096)
				for i := 0; i < count/conns; i++ {
					if _, err := c.Write(req); err != nil {
						errs <- err
						return
					}
					if err := readResponse(c, buf); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
	}
	run(500) // warm up: pools, buffers, the worker's interpreter
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	run(n)
	runtime.ReadMemStats(&after)
	// The client goroutines and their connections are counted too: a few per connection.
	return float64(after.Mallocs-before.Mallocs) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
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
