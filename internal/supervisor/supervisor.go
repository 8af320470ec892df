// Package supervisor runs the lives of the worker processes: it re-executes the gowsgi binary in
// worker mode, waits for each worker to announce itself, multiplexes request streams over each
// worker's socket, hands out free Python threads to the front, and respawns a worker that dies.
// It knows frames, not HTTP.
package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gowsgi/internal/frame"
)

// Config says how to start workers.
type Config struct {
	Exe     string   // the gowsgi binary
	Args    []string // arguments that put it in worker mode
	Env     []string // the workers' full environment
	Workers int      // how many to keep running
	Stdout  *os.File // the workers' stdout
	Stderr  *os.File // the workers' stderr: the error log
	Logger  *slog.Logger
	// AppLoadExit is the worker exit code that means "the app cannot be imported": the server
	// stops instead of respawning.
	AppLoadExit int
}

// ErrAppLoad reports that a worker could not import the application.
var ErrAppLoad = errors.New("the application could not be loaded")

// ErrStopped is returned by Open once the supervisor is stopping.
var ErrStopped = errors.New("supervisor stopped")

// Supervisor keeps Config.Workers workers running. It is safe for concurrent use.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	// tokens holds one entry per idle Python thread of a live worker; taking one is how a
	// request waits in the front for a thread.
	tokens chan *workerConn

	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the keep goroutines
	fatal  chan error     // an app-load failure: the server must stop

	nextID atomic.Uint32

	// mu guards workers: every worker process started and not yet lost.
	mu      sync.Mutex
	workers map[*workerConn]struct{}
}

// New returns a supervisor; Start launches the workers.
func New(cfg Config) *Supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{
		cfg: cfg, log: cfg.Logger, tokens: make(chan *workerConn, 1<<16),
		ctx: ctx, cancel: cancel, fatal: make(chan error, 1), workers: make(map[*workerConn]struct{}),
	}
}

// Start spawns the workers and waits until the first is ready to take requests, or fails
// with ErrAppLoad when a worker cannot import the app.
func (s *Supervisor) Start() error {
	ready := make(chan struct{}, s.cfg.Workers)
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go s.keep(i, ready)
	}
	select {
	case <-ready:
		return nil
	case err := <-s.fatal:
		s.Stop(0)
		return err
	case <-s.ctx.Done():
		return ErrStopped
	}
}

// Fatal reports an error after which the server cannot go on.
func (s *Supervisor) Fatal() <-chan error { return s.fatal }

// keep runs worker i, again and again, with capped exponential backoff between quick deaths.
func (s *Supervisor) keep(i int, ready chan<- struct{}) {
	defer s.wg.Done()
	backoff := 100 * time.Millisecond
	for s.ctx.Err() == nil {
		started := time.Now()
		code, wasReady, err := s.runWorker(i, ready)
		if s.ctx.Err() != nil {
			return
		}
		if code == s.cfg.AppLoadExit && !wasReady {
			select {
			case s.fatal <- fmt.Errorf("worker %d: %w", i, ErrAppLoad):
			default:
			}
			return
		}
		if err != nil {
			s.log.Error(fmt.Sprintf("Worker %d failed: %v", i, err))
		}
		if time.Since(started) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.log.Info(fmt.Sprintf("Restarting worker %d in %v", i, backoff))
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// runWorker starts one worker process and serves it until it exits.
func (s *Supervisor) runWorker(i int, ready chan<- struct{}) (code int, wasReady bool, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "worker")
	theirs := os.NewFile(uintptr(fds[1]), "front")
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return -1, false, fmt.Errorf("socket to worker: %w", err)
	}
	conn := fc.(*net.UnixConn)
	defer conn.Close()

	cmd := exec.Command(s.cfg.Exe, s.cfg.Args...)
	cmd.Env = s.cfg.Env
	cmd.Stdout = s.cfg.Stdout
	cmd.Stderr = s.cfg.Stderr
	cmd.ExtraFiles = []*os.File{theirs} // fd 3 in the worker
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return -1, false, fmt.Errorf("start worker: %w", err)
	}
	s.log.Info(fmt.Sprintf("Booting worker with pid: %d", cmd.Process.Pid))

	w := &workerConn{sup: s, pid: cmd.Process.Pid, conn: conn, out: frame.NewWriter(conn),
		streams: make(map[uint32]*Stream), proc: cmd.Process}
	s.mu.Lock()
	s.workers[w] = struct{}{}
	stopping := s.ctx.Err() != nil
	s.mu.Unlock()
	if stopping {
		_ = cmd.Process.Kill() // Stop ran while we were spawning; it could not see this one
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		w.readLoop(ready)
	}()
	select {
	case <-exited:
		conn.Close() // unblocks the reader
		<-readDone
	case <-readDone:
		// The socket broke first; the process is exiting or must be made to.
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill() // it is already lost to us
			<-exited
		}
	}
	w.lost()
	_ = w.out.Close() // the socket is gone; errors are expected
	code = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		if s.ctx.Err() == nil {
			return code, w.wasReady.Load(), fmt.Errorf("pid %d killed by signal %v", w.pid, ws.Signal())
		}
		return code, w.wasReady.Load(), nil
	}
	if s.ctx.Err() == nil && waitErr != nil {
		return code, w.wasReady.Load(), fmt.Errorf("pid %d exited: %w", w.pid, waitErr)
	}
	if s.ctx.Err() == nil {
		return code, w.wasReady.Load(), fmt.Errorf("pid %d exited with code %d", w.pid, code)
	}
	return code, w.wasReady.Load(), nil
}

// Open waits for a free Python thread and returns a new stream on it. Waiting ends with ctx.
func (s *Supervisor) Open(ctx context.Context) (*Stream, error) {
	for {
		select {
		case w := <-s.tokens:
			if st := w.open(); st != nil {
				return st, nil
			}
			// A token of a worker that died or retired: drop it.
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, ErrStopped
		}
	}
}

// Stop asks every worker to finish and exit, waits up to grace, then kills what is left.
func (s *Supervisor) Stop(grace time.Duration) {
	s.cancel()
	s.mu.Lock()
	ws := make([]*workerConn, 0, len(s.workers))
	for w := range s.workers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		_ = w.out.Send(frame.AppendHeader(nil, frame.Shutdown, 0, 0, 0)) // a dead worker needs no telling
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(grace + time.Second):
	}
	for _, w := range ws {
		_ = w.proc.Kill() // it ignored shutdown for too long
	}
	<-done
}

// Kill stops at once: no new streams, and every worker is killed, failing what it executes.
// Stop must still be called to wait for the workers' goroutines.
func (s *Supervisor) Kill() {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.workers {
		_ = w.proc.Kill() // an already dead worker needs nothing
	}
}

// workerConn is the front's side of one live worker.
type workerConn struct {
	sup  *Supervisor
	pid  int
	conn *net.UnixConn
	out  *frame.Writer
	proc *os.Process

	wasReady atomic.Bool

	// mu guards the fields that follow.
	mu      sync.Mutex
	streams map[uint32]*Stream
	dead    bool
}

// open starts a stream on w, or returns nil when w no longer takes requests.
func (w *workerConn) open() *Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead {
		return nil
	}
	id := w.sup.nextID.Add(1)
	st := newStream(id, w)
	w.streams[id] = st
	return st
}

// finish forgets a stream whose thread is free again, and gives the thread back.
func (w *workerConn) finish(id uint32) {
	w.mu.Lock()
	_, ok := w.streams[id]
	delete(w.streams, id)
	dead := w.dead
	w.mu.Unlock()
	if ok && !dead {
		w.sup.tokens <- w
	}
}

// lost fails every stream of a worker that is gone.
func (w *workerConn) lost() {
	w.mu.Lock()
	w.dead = true
	streams := w.streams
	w.streams = map[uint32]*Stream{}
	w.mu.Unlock()
	w.sup.mu.Lock()
	delete(w.sup.workers, w)
	w.sup.mu.Unlock()
	for _, st := range streams {
		if st.started.Load() {
			st.push(Event{Kind: EventFailed})
		} else {
			st.push(Event{Kind: EventRetry}) // the app never saw it: safe to send elsewhere
		}
	}
}

func (w *workerConn) stream(id uint32) *Stream {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams[id]
}

// readLoop turns the worker's frames into stream events until the socket closes.
func (w *workerConn) readLoop(ready chan<- struct{}) {
	fr := frame.NewFDReader(w.conn)
	defer fr.CloseFDs()
	r := frame.NewReader(bufio.NewReaderSize(fr, 256<<10))
	log := w.sup.log
	for {
		f, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Error(fmt.Sprintf("Worker %d: read: %v", w.pid, err))
			}
			return
		}
		switch f.Kind {
		case frame.Ready:
			info, err := frame.ParseReady(f.Payload)
			if err != nil || info.Version != frame.Version {
				log.Error(fmt.Sprintf("Worker %d speaks protocol %d, want %d", w.pid, info.Version, frame.Version))
				return
			}
			w.wasReady.Store(true)
			log.Info(fmt.Sprintf("Worker %d ready with %d threads", w.pid, info.Threads))
			for i := 0; i < int(info.Threads); i++ {
				w.sup.tokens <- w
			}
			select {
			case ready <- struct{}{}:
			default:
			}
		case frame.Head:
			p := append([]byte(nil), f.Payload...)
			e := Event{Kind: EventHead}
			if err := frame.ParseHeadFrame(p, &e.Head); err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			if st := w.stream(f.Stream); st != nil {
				st.push(e)
			}
		case frame.Data:
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventData, Data: append([]byte(nil), f.Payload...)})
			}
		case frame.File:
			off, n, err := frame.ParseFileFrame(f.Payload)
			fd := fr.TakeFD()
			if err != nil || fd < 0 {
				log.Error(fmt.Sprintf("Worker %d: file frame without a descriptor", w.pid))
				return
			}
			file := os.NewFile(uintptr(fd), "wsgi.file_wrapper")
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventFile, File: file, Offset: off, Length: n})
			} else {
				file.Close()
			}
		case frame.WantBody:
			n, err := f.U32()
			if err != nil {
				log.Error(fmt.Sprintf("Worker %d: %v", w.pid, err))
				return
			}
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventWantBody, N: int(n)})
			}
		case frame.End:
			if st := w.stream(f.Stream); st != nil {
				st.push(Event{Kind: EventEnd, Abort: f.Flags&frame.FlagAbort != 0})
			}
			w.finish(f.Stream)
		case frame.Started:
			if st := w.stream(f.Stream); st != nil {
				st.started.Store(true)
			}
		case frame.Heartbeat:
		default:
			log.Error(fmt.Sprintf("Worker %d sent an unexpected %v frame", w.pid, f.Kind))
			return
		}
	}
}
