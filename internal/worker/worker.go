// Package worker is the worker process: it embeds CPython through pybridge, runs the app on a
// fixed pool of OS-locked Python threads, and speaks frames with the front through two rings
// in shared memory. It holds no HTTP: requests arrive as packed environs and leave as response
// heads and chunks.
package worker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gowsgi/internal/frame"
	"gowsgi/internal/pybridge"
	"gowsgi/internal/wsgi"
)

// Exit codes of a worker process; the front decides on respawning from them.
const (
	ExitOK       = 0
	ExitFailure  = 1 // something broke: respawn
	ExitAppLoad  = 3 // the app cannot be imported: do not respawn, stop the server
	ExitBadSetup = 4 // the worker was started wrongly (no socket, bad options)
)

// Options configure a worker process.
type Options struct {
	SocketFD     int          // the worker's end of the socketpair to the front
	CounterFD    int          // the front's frame.SharedCounter of requests taken
	ChunksFD     int          // the front's frame.SharedChunks for big body chunks
	ToFront      [3]int       // the frame.Ring for frames to the front: memory, reader's and writer's eventfds
	FromFront    [3]int       // the frame.Ring for frames from the front, the same way
	App          wsgi.AppSpec // what to import
	AppName      string       // the spec as the user wrote it, for messages
	Threads      int          // Python threads
	Paths        []string     // prepended to sys.path
	Multiprocess bool         // wsgi.multiprocess
	SchedBatch   bool         // run under SCHED_BATCH (config.Config.WorkerScheduling)
	CheckOnly    bool         // load the app, report, and exit without serving
	Logger       *slog.Logger
}

// Run runs a worker until the front asks it to stop or goes away, and returns its exit code.
// It must be called from the main goroutine, which it locks to its OS thread: that thread
// initialises and finalises Python.
func Run(opts Options) int {
	runtime.LockOSThread()
	log := opts.Logger
	// Signals belong to the front: a Ctrl-C sent to the whole process group must stop the
	// server once, through the front, not kill workers mid-request.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGQUIT)
	if opts.SchedBatch {
		if err := schedBatch(); err != nil {
			log.Warn("worker: cannot use SCHED_BATCH; running with the normal policy: " + err.Error())
		}
	}

	// The shared chunks are mapped first: their arena must be Python's before the app loads.
	var chunks *frame.SharedChunks
	if !opts.CheckOnly {
		var err error
		if chunks, err = frame.MapSharedChunks(opts.ChunksFD); err != nil {
			log.Error("worker: " + err.Error())
			return ExitBadSetup
		}
	}
	if err := pybridge.Init(pybridge.Config{Paths: opts.Paths, Multithread: opts.Threads > 1, Multiprocess: opts.Multiprocess}); err != nil {
		log.Error("worker: cannot start Python: " + err.Error())
		return ExitAppLoad
	}
	if chunks != nil {
		if err := pybridge.UseArena(chunks.Arena(), chunks.HeldStates(), chunks.Freed()); err != nil {
			log.Error("worker: " + err.Error())
			return ExitBadSetup
		}
	}
	if err := pybridge.LoadApp(opts.App.Module, opts.App.Attr, opts.App.Call, opts.App.Args); err != nil {
		log.Error(fmt.Sprintf("Failed to load application %q: %s", opts.AppName, err))
		return ExitAppLoad
	}
	desc := pybridge.Describe()
	if opts.CheckOnly {
		log.Info(fmt.Sprintf("Application %s loaded: %s", opts.AppName, desc))
		pybridge.DetachMain()
		pybridge.Finalize()
		return ExitOK
	}
	pybridge.DetachMain()

	conn, err := frontConn(opts.SocketFD)
	if err != nil {
		log.Error("worker: " + err.Error())
		return ExitBadSetup
	}
	taken, err := frame.MapSharedCounter(opts.CounterFD)
	if err != nil {
		log.Error("worker: " + err.Error())
		return ExitBadSetup
	}
	ring, err := frame.MapRing(opts.ToFront[0], opts.ToFront[1], opts.ToFront[2])
	if err != nil {
		log.Error("worker: " + err.Error())
		return ExitBadSetup
	}
	in, err := frame.MapRing(opts.FromFront[0], opts.FromFront[1], opts.FromFront[2])
	if err != nil {
		log.Error("worker: " + err.Error())
		return ExitBadSetup
	}
	// The socket carries nothing to us any more: it becoming readable means the front is gone.
	in.WatchPeer(int(conn.Fd()))
	w := &worker{
		log:        log,
		conn:       conn,
		chunks:     chunks,
		out:        frame.NewRingWriter(ring, conn),
		up:         ring,
		in:         in,
		tasks:      make(map[uint32]*task),
		interrupts: make(chan *task, 1024),
		end:        make(chan bool, 1),
	}
	w.queue.shared = taken
	if w.rkick, err = frame.NewEventFD(true); err != nil {
		log.Error("worker: " + err.Error())
		return ExitBadSetup
	}
	w.r = frame.NewRingReader(w.in)
	w.r.Alloc = requestBuffer
	w.queue.pump, w.queue.rkick = w.tryPump, w.rkick
	if w.queue.watchdog, err = newTimerFD(); err == nil {
		w.queue.wait = func(kick int) { w.in.WaitReadable(-1, kick) } // threads may lead (see runq)
	} else {
		// Threads cannot lead without the watchdog; the reader keeps the duty.
		log.Warn("worker: no watchdog timer; threads will not read the front's frames themselves: " + err.Error())
	}
	go w.interrupter()
	if chunks != nil { // before the threads, which kick it
		w.sweep = newSweeper(chunks.Freed())
		started := make(chan error, 1)
		go w.sweep.run(started)
		if err := <-started; err != nil {
			log.Error("worker: start the sweeper: " + err.Error())
			return ExitFailure
		}
	}
	if err := w.startThreads(opts.Threads); err != nil {
		log.Error("worker: " + err.Error())
		return ExitFailure
	}
	log.Info(fmt.Sprintf("Booted worker: %s, app %s, %d threads", desc, opts.AppName, opts.Threads))
	if err := w.out.Send(frame.AppendReady(nil, frame.ReadyInfo{
		Version: frame.Version, Threads: uint32(opts.Threads), Pid: uint32(os.Getpid()), Python: desc,
	})); err != nil {
		log.Error("worker: announce ready", "err", err)
		return ExitFailure
	}

	go w.readLoop() // ends when the connection closes, below or by the front
	hbDone := make(chan struct{})
	hbStopped := make(chan struct{})
	go w.heartbeat(hbDone, hbStopped)
	graceful := <-w.end
	close(hbDone)
	<-hbStopped
	if !graceful {
		// The front is gone: nobody will read our answers, and Python threads may be stuck.
		return ExitOK
	}
	// From here the reader only ends if the front dies, and then it exits the process: a
	// finalization that hangs (an app's non-daemon thread) must not outlive the front.
	w.finishing.Store(true)
	w.queue.close()
	w.threads.Wait()
	if w.sweep != nil {
		w.sweep.stop()
	}
	w.stopCompanions()
	_ = w.out.Close() // the front may already be gone; nothing left to tell it
	pybridge.Finalize()
	return ExitOK
}

// HeartbeatInterval is how often a worker tells the front it is alive. The heartbeat runs in
// Go, not Python, so it says the process lives; stuck Python threads are found by timeouts.
const HeartbeatInterval = time.Second

func (w *worker) heartbeat(done <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			_ = w.out.Send(frame.AppendHeader(nil, frame.Heartbeat, 0, 0, 0)) // a dead front ends the reader
		}
	}
}

// stop ends the worker's serving once: graceful after a drained Shutdown, or not when the
// front is gone.
func (w *worker) stop(graceful bool) {
	w.endOnce.Do(func() { w.end <- graceful })
}

// worker is the state of a worker process.
type worker struct {
	log    *slog.Logger
	conn   *os.File            // the socket: our File frames' descriptors, and the front's end
	out    *frame.Writer       // frames to the front, through up
	up     *frame.Ring         // frames to the front
	in     *frame.Ring         // frames from the front
	chunks *frame.SharedChunks // big response chunks, for every thread

	// mu guards the fields that follow.
	mu       sync.Mutex
	tasks    map[uint32]*task
	draining bool // Shutdown arrived: exit once tasks is empty

	end       chan bool // receives once: true to drain and exit, false when the front is gone
	endOnce   sync.Once
	finishing atomic.Bool // drained: finalizing Python

	// rmu is held by whoever reads the frames from the front (readLoop, or a thread through
	// runq's pump), and guards the fields that follow.
	rmu   sync.Mutex
	r     *frame.Reader
	batch []*task // requests read, not yet queued

	readDone atomic.Bool // the connection from the front ended, or broke the protocol
	rkick    int         // eventfd that wakes readLoop from a nap (runq.readerNap)

	sweep      *sweeper       // drops lent chunks while the threads idle; nil without an arena
	queue      runq           // requests waiting for a free Python thread
	interrupts chan *task     // timed-out requests for the interrupter
	threads    sync.WaitGroup // the Python thread goroutines
	slots      []*slot
}

// readLoop reads the frames from the front until the connection ends, whenever it has the
// duty of reading them (see runq); while a thread has it, readLoop naps. After Shutdown it
// keeps serving the streams in flight (their body, credit and cancel frames) until they are
// done.
func (w *worker) readLoop() {
	w.queue.serveReader(w.in, func() bool {
		w.rmu.Lock()
		defer w.rmu.Unlock()
		return w.pump()
	}, w.readDone.Load)
}

// tryPump is runq's pump: it reads what the front sent, unless another reader is at it, and
// reports whether the connection is still up.
func (w *worker) tryPump() bool {
	if !w.rmu.TryLock() {
		return !w.readDone.Load()
	}
	defer w.rmu.Unlock()
	if !w.pump() {
		frame.Kick(w.rkick) // the reader ends too
		return false
	}
	return true
}

// pump reads and handles the frames the front has sent, without waiting for more unless a
// frame is cut short, and queues the requests among them; dispatching them is the caller's
// business. It reports false once the connection is done. rmu must be held.
func (w *worker) pump() bool {
	for !w.readDone.Load() && (w.r.HasFrame() || w.in.Readable()) {
		f, err := w.r.Next()
		if err == nil {
			err = w.handle(f)
		}
		if err != nil {
			w.readDone.Store(true)
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				w.log.Error("worker: read from front", "err", err)
			}
			if w.finishing.Load() {
				os.Exit(ExitOK) // the front is gone while we finalize: nobody waits for us
			}
			// Nobody reads our frames any more: a sender waiting for room in the ring (the
			// heartbeat, which Run waits for) must not wait forever.
			w.up.Close()
			w.stop(false)
			return false
		}
	}
	w.queueBatch()
	return !w.readDone.Load()
}

// queueBatch queues the requests read so far; rmu must be held.
func (w *worker) queueBatch() {
	if len(w.batch) > 0 {
		w.queue.push(w.batch...)
		clear(w.batch)
		w.batch = w.batch[:0]
	}
}

// handle acts on one frame from the front; an error ends the worker.
func (w *worker) handle(f frame.Frame) error {
	switch f.Kind {
	case frame.Request:
		env, body, err := frame.ParseRequest(f.Payload)
		if err != nil {
			return fmt.Errorf("bad request frame: %w", err)
		}
		t := newTask(f.Stream, env, body, f.Flags&frame.FlagEnd != 0, f.Payload)
		t.q = &w.queue
		w.mu.Lock()
		w.tasks[f.Stream] = t
		w.mu.Unlock()
		w.batch = append(w.batch, t)
	case frame.Body:
		if t := w.task(f.Stream); t != nil {
			t.deliverBody(append([]byte(nil), f.Payload...), f.Flags&frame.FlagEnd != 0)
		}
	case frame.Credit:
		n, err := f.U32()
		if err != nil {
			return fmt.Errorf("bad credit frame: %w", err)
		}
		if t := w.task(f.Stream); t != nil {
			t.addCredit(int64(n))
		}
	case frame.Cancel:
		if t := w.task(f.Stream); t != nil {
			t.cancel()
		}
	case frame.Interrupt:
		if t := w.task(f.Stream); t != nil {
			select {
			case w.interrupts <- t:
			default:
				w.log.Warn("worker: too many pending interrupts; dropping one", "stream", f.Stream)
			}
		}
	case frame.Recall:
		w.queueBatch() // requests read before the Recall are in the worker's queue too
		for _, t := range w.queue.handBack(w.sendRequeue) {
			t.release()
			w.forget(t.id)
		}
	case frame.Shutdown:
		w.mu.Lock()
		w.draining = true
		idle := len(w.tasks) == 0
		w.mu.Unlock()
		if idle {
			w.stop(true)
		}
	default:
		return fmt.Errorf("unexpected frame %s from the front", f.Kind)
	}
	return nil
}

// sendRequeue hands requests back to the front (runq.handBack). They must be in the ring
// before the shared count includes them: a worker dying in between would otherwise leave the
// front counting them among the requests that reached the app.
func (w *worker) sendRequeue(ts []*task) {
	var b []byte
	for _, t := range ts {
		b = frame.AppendHeader(b, frame.Requeue, 0, t.id, 0)
	}
	_ = w.out.SendNow(b) // a front that is gone needs no answer
}

func (w *worker) task(id uint32) *task {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tasks[id]
}

func (w *worker) forget(id uint32) {
	w.mu.Lock()
	delete(w.tasks, id)
	drained := w.draining && len(w.tasks) == 0
	w.mu.Unlock()
	if drained {
		w.stop(true)
	}
}

// startThreads starts n Python threads and waits until each has its thread state.
func (w *worker) startThreads(n int) error {
	errs := make(chan error, n)
	w.queue.threads = n
	for i := 0; i < n; i++ {
		s, err := newSlot(w)
		if err != nil {
			return fmt.Errorf("start Python thread %d: %w", i, err)
		}
		w.slots = append(w.slots, s)
		w.threads.Add(1)
		go s.run(errs)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			return fmt.Errorf("start Python thread: %w", err)
		}
	}
	return nil
}

func (w *worker) stopCompanions() {
	for _, s := range w.slots {
		s.stop()
	}
}

// frontConn opens the worker's end of the socketpair the front passed as fd, in blocking mode:
// the reader and the Python threads use it with plain system calls from their own threads, so
// that no goroutine of Go's network poller has to be woken in between (see runq).
func frontConn(fd int) (*os.File, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return nil, fmt.Errorf("no socket to the front on fd %d", fd)
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("socket to the front: %w", err)
	}
	return os.NewFile(uintptr(fd), "front"), nil
}

// interrupter raises RequestTimeout in the threads of timed-out requests. It has a goroutine of
// its own because raising needs the GIL, which an app stuck in C may hold forever; it lives as
// long as the process.
func (w *worker) interrupter() {
	for t := range w.interrupts {
		for _, s := range w.slots {
			if s.cur.Load() != t {
				continue
			}
			if th := s.th.Load(); th != nil && th.Interrupt(uint64(t.id)) {
				w.log.Warn(fmt.Sprintf("Request timed out: raised RequestTimeout in its thread (stream %d)", t.id))
			}
		}
	}
}
