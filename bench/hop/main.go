// Command hop measures what the hop between gowsgi's front and a worker costs per request
// over each transport it could use: the unix stream socket gowsgi uses ("socket"), a ring in
// shared memory with an eventfd to wake a sleeping reader ("ring"), and that ring with the
// front woken once per batch of responses instead of per response ("ring-batch"). Issue 4
// asks for this measurement before giving up on a target the socket cannot meet.
//
// Each run is two processes shaped like gowsgi's: a front whose client goroutines (one per
// connection, 64) send request frames through one coalescing writer and wait for their
// responses, which a reader goroutine hands back; and a worker whose thread, locked like a
// Python thread, reads requests, spends the app's time on each (a busy loop of -work) and
// sends each response as soon as it has it. The transports carry the same frames, sizes and
// batching; only how bytes cross and how the sleeping side is woken differ. There is no HTTP,
// no Python and no client process: what is measured is the hop, plus the app's time given,
// and the latency the clients see.
//
//	hop                                  # the matrix: every transport, pinned and unpinned
//	hop -works 0,3us,60us -transports socket,ring-batch -d 3s -reps 3 -out /tmp/hop.md
//
// Pinned runs start the front under `taskset -c 0`; the worker inherits the CPU, as gowsgi's
// workers do in `make bench`.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"gowsgi/internal/frame"
)

func main() {
	role := flag.String("role", "driver", "driver, front or worker (front and worker are started by the driver)")
	transport := flag.String("transport", "socket", "front/worker: socket, ring or ring-batch")
	work := flag.Duration("work", 0, "front/worker: the app's time per request, spent in a busy loop")
	dur := flag.Duration("d", 3*time.Second, "measured time per run")
	warm := flag.Duration("warm", 500*time.Millisecond, "warm-up per run")
	conns := flag.Int("c", 64, "requests in flight (client goroutines)")
	works := flag.String("works", "0,3us,60us", "driver: app times to run, comma-separated")
	transports := flag.String("transports", "socket,ring,ring-batch", "driver: transports to run")
	modes := flag.String("modes", "pinned,unpinned", "driver: pinned (one CPU, `taskset -c 0`) and/or unpinned")
	reps := flag.Int("reps", 3, "driver: repetitions, interleaved; the median is shown")
	out := flag.String("out", "", "driver: also write the markdown report to this file")
	flag.Parse()

	var err error
	switch *role {
	case "driver":
		err = drive(driveConfig{works: *works, transports: *transports, modes: *modes, reps: *reps,
			d: *dur, warm: *warm, conns: *conns, out: *out})
	case "front":
		err = runFront(*transport, *work, *dur, *warm, *conns)
	case "worker":
		err = runWorker(*transport, *work)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hop: "+err.Error())
		os.Exit(1)
	}
}

// result is what a front reports for one run.
type result struct {
	Transport string  `json:"transport"`
	WorkUS    float64 `json:"work_us"`
	Pinned    bool    `json:"pinned"`
	Requests  int64   `json:"requests"`
	RPS       float64 `json:"rps"`
	FrontUS   float64 `json:"front_us_per_req"`  // CPU time of the front per request
	WorkerUS  float64 `json:"worker_us_per_req"` // CPU time of the worker per request
	FrontCS   float64 `json:"front_switches_per_req"`
	WorkerCS  float64 `json:"worker_switches_per_req"`
	P50US     float64 `json:"p50_us"` // from a client's send to the end of its response
	P99US     float64 `json:"p99_us"`
}

// Frames like gowsgi's for hello: a request with a packed environ of a typical size, and a
// response of head, 13 body bytes and end.
var (
	environ    = bytes.Repeat([]byte("e"), 360)
	packedHead = bytes.Repeat([]byte("h"), 48)
	helloBody  = []byte("Hello, World!")
)

// Descriptors the worker inherits (exec.Cmd.ExtraFiles start at 3): the socket's end, or the
// two rings, each as memory, reader's eventfd and writer's eventfd.
const (
	fdConn     = 3
	fdToWorker = 3 // 3, 4, 5
	fdToFront  = 6 // 6, 7, 8
)

// ringSize is the size of each ring (gowsgi's was 1 MiB when this was measured; 256 KiB since).
const ringSize = 1 << 20

// ringWriter writes to a ring and wakes its reader, as gowsgi's frame.Writer does.
type ringWriter struct{ r *frame.Ring }

func (w ringWriter) Write(p []byte) (int, error) {
	err := w.r.Append(p)
	w.r.Wake()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// runFront starts a worker over the transport, keeps conns requests in flight through it,
// and prints the result of the measured part as one JSON line.
func runFront(transport string, work, d, warm time.Duration, conns int) error {
	var (
		in      io.Reader
		out     io.Writer
		files   []*os.File   // the worker's, closed once it has them
		started func() error // after the worker's start (ring: see frame.Ring.Started)
		stop    func() error // tells the worker no more requests come
	)
	switch transport {
	case "socket":
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socketpair: %w", err)
		}
		c, err := net.FileConn(os.NewFile(uintptr(fds[0]), "worker"))
		if err != nil {
			return fmt.Errorf("front socket: %w", err)
		}
		uc := c.(*net.UnixConn)
		in, out, stop = uc, uc, uc.CloseWrite
		files = []*os.File{os.NewFile(uintptr(fds[1]), "front")}
	case "ring", "ring-batch":
		// frame.Ring both ways, as gowsgi has them: the front sleeps on Go's poller.
		toWorker, memW, rW, wW, err := frame.NewRing(ringSize, true)
		if err != nil {
			return err
		}
		toFront, memF, rF, wF, err := frame.NewRing(ringSize, false)
		if err != nil {
			return err
		}
		in, out, stop = toFront, ringWriter{toWorker}, func() error { toWorker.Close(); return nil }
		files = []*os.File{memW, rW, wW, memF, rF, wF}
		started = func() error { return errors.Join(toWorker.Started(), toFront.Started()) }
	default:
		return fmt.Errorf("unknown transport %q", transport)
	}

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	cmd := exec.Command(self, "-role", "worker", "-transport", transport, "-work", work.String())
	cmd.ExtraFiles, cmd.Stderr = files, os.Stderr
	// A worker on a ring would wait for the front forever: it goes when the front does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	// The worker's end of the socket must close with the worker, so that its exit ends the
	// front's reader; the rings' memory is mapped, their eventfds the rings' own.
	for _, f := range files {
		f.Close()
	}
	if started != nil {
		if err := started(); err != nil {
			_ = cmd.Process.Kill()
			return err
		}
	}
	workerDone := make(chan error, 1)
	go func() { workerDone <- cmd.Wait() }()

	l := newLoad(out, conns)
	readErr := make(chan error, 1)
	go func() { readErr <- l.readResponses(in) }()
	l.start()

	time.Sleep(warm)
	f0, w0 := usage(os.Getpid()), usage(cmd.Process.Pid)
	l.measuring.Store(true)
	n0, t0 := l.count.Load(), time.Now()
	time.Sleep(d)
	f1, w1 := usage(os.Getpid()), usage(cmd.Process.Pid)
	n1, elapsed := l.count.Load(), time.Since(t0)
	l.measuring.Store(false)

	l.stop()
	if err := stop(); err != nil {
		return fmt.Errorf("end the worker's input: %w", err)
	}
	select {
	case err := <-workerDone:
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("worker did not end")
	}
	select {
	case err := <-readErr:
		if err != nil {
			return fmt.Errorf("read responses: %w", err)
		}
	case <-time.After(10 * time.Second):
		return errors.New("the worker's responses did not end")
	}
	if f0.err != nil || f1.err != nil || w0.err != nil || w1.err != nil {
		return errors.Join(f0.err, f1.err, w0.err, w1.err)
	}

	n := float64(n1 - n0)
	if n == 0 {
		return errors.New("no request completed")
	}
	var pinned bool
	if set, err := cpuCount(); err == nil {
		pinned = set == 1
	}
	return json.NewEncoder(os.Stdout).Encode(result{
		Transport: transport, WorkUS: float64(work) / 1e3, Pinned: pinned,
		Requests: n1 - n0, RPS: n / elapsed.Seconds(),
		FrontUS:  (f1.cpu - f0.cpu).Seconds() * 1e6 / n,
		WorkerUS: (w1.cpu - w0.cpu).Seconds() * 1e6 / n,
		FrontCS:  float64(f1.switches-f0.switches) / n,
		WorkerCS: float64(w1.switches-w0.switches) / n,
		P50US:    l.latency(0.50), P99US: l.latency(0.99),
	})
}

// load is the front's side: client goroutines, the coalescing writer, the response reader.
type load struct {
	w     *coalescer
	done  []chan struct{} // per client: its response ended
	count atomic.Int64    // responses received

	measuring atomic.Bool       // the clients record latencies
	lat       [][]time.Duration // per client; read once the clients are stopped
	quit      chan struct{}
	wg        sync.WaitGroup // the clients and the writer's flusher
}

func newLoad(out io.Writer, conns int) *load {
	l := &load{w: newCoalescer(out), done: make([]chan struct{}, conns), quit: make(chan struct{}),
		lat: make([][]time.Duration, conns)}
	for i := range l.done {
		l.done[i] = make(chan struct{}, 1)
	}
	return l
}

func (l *load) start() {
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.w.flushLoop(l.quit) }()
	for i := range l.done {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.client(uint32(i)) }()
	}
}

// stop ends the clients and the flusher and waits for them; responses still on their way
// are read and dropped.
func (l *load) stop() {
	close(l.quit)
	l.wg.Wait()
}

func (l *load) client(i uint32) {
	stream := i + 1
	for {
		start := time.Now()
		l.w.send(func(dst []byte) []byte { return frame.AppendRequest(dst, stream, environ, nil, true) })
		select {
		case <-l.done[i]:
			l.count.Add(1)
			if l.measuring.Load() {
				l.lat[i] = append(l.lat[i], time.Since(start))
			}
		case <-l.quit:
			return
		}
	}
}

// latency returns the q-quantile of the latencies recorded, in µs; the clients must be
// stopped.
func (l *load) latency(q float64) float64 {
	var all []float64
	for _, ds := range l.lat {
		for _, d := range ds {
			all = append(all, float64(d)/1e3)
		}
	}
	if len(all) == 0 {
		return 0
	}
	sort.Float64s(all)
	return all[min(len(all)-1, int(q*float64(len(all))))]
}

// readResponses hands each ended response to its client, until the worker closes its end.
func (l *load) readResponses(in io.Reader) error {
	r := frame.NewReader(bufio.NewReaderSize(in, 64<<10))
	for {
		f, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if f.Kind != frame.End {
			continue
		}
		i := int(f.Stream) - 1
		if i < 0 || i >= len(l.done) {
			return fmt.Errorf("response for unknown stream %d", f.Stream)
		}
		select {
		case l.done[i] <- struct{}{}:
		default:
			return fmt.Errorf("stream %d ended twice", f.Stream)
		}
	}
}

// coalescer is the front's frame writer in miniature (frame.Writer's flusher mode): senders
// append to a pending buffer and one flusher writes whatever has piled up, so one write
// carries the frames of every client that ran meanwhile.
type coalescer struct {
	out  io.Writer
	wake chan struct{}

	mu      sync.Mutex // guards pending
	pending []byte
}

func newCoalescer(out io.Writer) *coalescer {
	return &coalescer{out: out, wake: make(chan struct{}, 1)}
}

func (c *coalescer) send(fn func([]byte) []byte) {
	c.mu.Lock()
	c.pending = fn(c.pending)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *coalescer) flushLoop(quit <-chan struct{}) {
	var spare []byte
	for {
		select {
		case <-c.wake:
		case <-quit:
			return
		}
		runtime.Gosched() // let runnable senders append first, as frame.Writer does
		c.mu.Lock()
		buf := c.pending
		c.pending = spare[:0]
		c.mu.Unlock()
		if len(buf) > 0 {
			if _, err := c.out.Write(buf); err != nil {
				fmt.Fprintln(os.Stderr, "hop: write requests: "+err.Error())
				return
			}
		}
		spare = buf
	}
}

// runWorker serves requests on the inherited transport until the front ends it.
func runWorker(transport string, work time.Duration) error {
	// One thread serves, as a Python thread of gowsgi does: locked, blocking in system calls.
	runtime.LockOSThread()
	var (
		in  io.Reader
		out io.Writer
		// ring-batch: responses are published at once but the front is woken only when no
		// further request is at hand. They are in memory the front maps, so a crash of the
		// worker after publishing one loses nothing: the front reads what was published.
		responses *frame.Ring
	)
	switch transport {
	case "socket":
		if err := syscall.SetNonblock(fdConn, false); err != nil {
			return fmt.Errorf("worker socket: %w", err)
		}
		f := os.NewFile(fdConn, "front") // blocking: reads block this thread, not a poller
		in, out = f, f
		defer f.Close()
	case "ring", "ring-batch":
		toWorker, err := frame.MapRing(fdToWorker, fdToWorker+1, fdToWorker+2)
		if err != nil {
			return err
		}
		toFront, err := frame.MapRing(fdToFront, fdToFront+1, fdToFront+2)
		if err != nil {
			return err
		}
		in, out = toWorker, ringWriter{toFront}
		defer toFront.Close()
		if transport == "ring-batch" {
			responses = toFront
		}
	default:
		return fmt.Errorf("unknown transport %q", transport)
	}

	r := frame.NewReader(bufio.NewReaderSize(in, 256<<10))
	var resp []byte
	for {
		f, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read requests: %w", err)
		}
		if f.Kind != frame.Request {
			return fmt.Errorf("unexpected %s frame", f.Kind)
		}
		spin(work)
		resp = frame.AppendHeadFrame(resp[:0], f.Stream, 200, int64(len(helloBody)), packedHead)
		resp = frame.Append(resp, frame.Data, 0, f.Stream, helloBody)
		resp = frame.AppendHeader(resp, frame.End, 0, f.Stream, 0)
		if responses == nil {
			_, err = out.Write(resp)
		} else if err = responses.Append(resp); !r.HasFrame() {
			responses.Wake()
		}
		if err != nil {
			return fmt.Errorf("write response: %w", err)
		}
	}
}

// spin keeps the CPU busy for d, the way an app's Python code would.
func spin(d time.Duration) {
	if d <= 0 {
		return
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// procUsage is a process's CPU time (all threads) and context switches (all threads,
// voluntary and not).
type procUsage struct {
	cpu      time.Duration
	switches int64
	err      error
}

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux everywhere).
const clockTick = 10 * time.Millisecond

func usage(pid int) procUsage {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{err: fmt.Errorf("read CPU time: %w", err)}
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(rest) < 13 {
		return procUsage{err: fmt.Errorf("read CPU time of %d: short stat", pid)}
	}
	utime, err1 := strconv.ParseInt(rest[11], 10, 64) // field 14 of stat
	stime, err2 := strconv.ParseInt(rest[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return procUsage{err: fmt.Errorf("read CPU time of %d: %w", pid, err)}
	}
	u := procUsage{cpu: time.Duration(utime+stime) * clockTick}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return procUsage{err: fmt.Errorf("list threads: %w", err)}
	}
	for _, t := range tasks {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread has exited
		}
		for _, line := range strings.Split(string(status), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				u.switches += n
			}
		}
	}
	return u
}

// cpuCount is how many CPUs this process may run on.
func cpuCount() (int, error) {
	var set [128]byte // a cpu_set_t of 1024 CPUs
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, uintptr(len(set)), uintptr(unsafe.Pointer(&set[0])))
	if errno != 0 {
		return 0, errno
	}
	n := 0
	for _, b := range set {
		for ; b != 0; b &= b - 1 {
			n++
		}
	}
	return n, nil
}

// median of xs, which it sorts.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m]
	}
	return (xs[m-1] + xs[m]) / 2
}
