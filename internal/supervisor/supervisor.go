// Package supervisor runs the lives of the worker processes: it re-executes the gowsgi binary in
// worker mode, waits for each worker to announce itself, multiplexes request streams over each
// worker's socket, hands out free Python threads to the front, and replaces workers — after a
// crash, on reload, when they reach their request or memory limit, or when a request is stuck —
// always starting the new worker before retiring the old one. It knows frames, not HTTP.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gowsgi/internal/frame"
)

// Config says how to run workers. Zero durations take the documented defaults.
type Config struct {
	Exe     string   // the gowsgi binary
	Args    []string // arguments that put it in worker mode
	Env     []string // the workers' full environment
	Workers int      // how many to keep running
	Threads int      // Python threads per worker (0: 1); each gets its own shared chunk buffers
	// Prefetch is how many requests each worker may hold beyond its threads, queued in it until
	// a thread is free (0: none; a request goes only to a free thread). Requests go to free
	// threads first. A batch of requests that waits in the worker is run back to back, without
	// a round trip through the front for each (see docs/architecture.md); a request still
	// queued when its worker dies is sent again, and a worker whose threads are all held up
	// hands its queue back (see recallEvery).
	Prefetch int
	Stdout   io.Writer // the workers' stdout
	Stderr   io.Writer // the workers' stderr: the error log
	Logger   *slog.Logger
	// AppLoadExit is the worker exit code that means "the app cannot be imported": at startup
	// the server stops instead of respawning; on reload the old workers keep serving.
	AppLoadExit int

	// GracefulTimeout bounds how long a retired worker may finish its requests (default 30s).
	GracefulTimeout time.Duration
	// MaxRequests recycles a worker after this many requests (0: never); MaxRequestsJitter
	// adds a random 0..jitter to each worker's limit so they do not all recycle at once.
	MaxRequests, MaxRequestsJitter int
	// MaxMemory recycles a worker whose resident memory exceeds it, in bytes (0: never).
	MaxMemory int64
	// HeartbeatTimeout kills a worker that has sent nothing for this long (default 30s).
	HeartbeatTimeout time.Duration
	// StuckGrace is how long a timed-out request's thread may take to come back after its
	// interrupt before its worker is replaced (default 5s).
	StuckGrace time.Duration
}

func (c *Config) defaults() {
	if c.GracefulTimeout == 0 {
		c.GracefulTimeout = 30 * time.Second
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 30 * time.Second
	}
	if c.StuckGrace == 0 {
		c.StuckGrace = 5 * time.Second
	}
	if c.Workers < 1 {
		c.Workers = 1
	}
	if c.Threads < 1 {
		c.Threads = 1
	}
}

// ErrAppLoad reports that a worker could not import the application.
var ErrAppLoad = errors.New("the application could not be loaded")

// ErrStopped is returned by Open once the supervisor is stopping.
var ErrStopped = errors.New("supervisor stopped")

// Supervisor keeps Config.Workers workers running. Its methods are safe for concurrent use;
// the worker set itself is owned by one control goroutine that all changes go through.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	// tokens holds one entry per idle Python thread of a worker taking requests; taking one is
	// how a request waits in the front for a thread. spare holds the places of the workers'
	// queues (Config.Prefetch), taken when no thread is idle.
	tokens chan *workerConn
	spare  chan *workerConn
	// recallKick wakes the recaller (recallLoop) when a request went to a worker's queue.
	recallKick chan struct{}
	nextID     atomic.Uint32

	ctrl     chan func()   // work for the control goroutine
	stopping chan struct{} // closed when Stop or Kill begins
	stopOnce sync.Once
	done     chan struct{} // closed when the control goroutine has ended
	ready    chan struct{} // closed when the first worker is ready
	fatal    chan error    // an app-load failure at startup
	procs    sync.WaitGroup

	dataPool frame.BufPool // buffers for big body chunks (see dataBuffer)

	// mu guards workers: every worker process started and not yet reaped.
	mu      sync.Mutex
	workers map[*workerConn]struct{}

	// Owned by the control goroutine.
	slots     []*slot
	everReady bool
	killed    bool
}

// slot is one position in the worker pool: the worker serving it and, while it is being
// replaced, its successor.
type slot struct {
	cur, next *workerConn
	backoff   time.Duration
	wantNext  bool // a successor for cur failed to start: try again after the backoff
}

// New returns a supervisor; Start launches the workers.
func New(cfg Config) *Supervisor {
	cfg.defaults()
	return &Supervisor{
		cfg: cfg, log: cfg.Logger, tokens: make(chan *workerConn, 1<<16),
		spare: make(chan *workerConn, 1<<16), recallKick: make(chan struct{}, 1),
		ctrl: make(chan func(), 64), stopping: make(chan struct{}), done: make(chan struct{}),
		ready: make(chan struct{}), fatal: make(chan error, 1), workers: make(map[*workerConn]struct{}),
	}
}

// Start spawns the workers and waits until the first is ready to take requests, or fails
// with ErrAppLoad when a worker cannot import the app.
func (s *Supervisor) Start() error {
	go s.control()
	s.do(func() {
		for i := 0; i < s.cfg.Workers; i++ {
			sl := &slot{}
			s.slots = append(s.slots, sl)
			sl.cur = s.spawn(sl)
		}
	})
	select {
	case <-s.ready:
		return nil
	case err := <-s.fatal:
		s.Stop(0)
		return err
	case <-s.stopping:
		return ErrStopped
	}
}

// Fatal reports an error after which the server cannot go on.
func (s *Supervisor) Fatal() <-chan error { return s.fatal }

// do runs fn on the control goroutine, unless it has ended.
func (s *Supervisor) do(fn func()) {
	select {
	case s.ctrl <- fn:
	case <-s.done:
	}
}

// Reload replaces every worker with a fresh one that imports the app anew (SIGHUP): each new
// worker takes requests once ready, then its predecessor finishes what it runs and exits.
func (s *Supervisor) Reload() {
	s.do(func() {
		s.log.Info("Reloading: starting new workers")
		for _, sl := range s.slots {
			if sl.cur != nil && sl.next == nil {
				sl.next = s.spawn(sl)
			}
		}
	})
}

// Add starts one more worker (SIGTTIN).
func (s *Supervisor) Add() {
	s.do(func() {
		sl := &slot{}
		s.slots = append(s.slots, sl)
		sl.cur = s.spawn(sl)
		s.log.Info(fmt.Sprintf("Number of workers: %d", len(s.slots)))
	})
}

// Remove retires one worker (SIGTTOU); the last one stays.
func (s *Supervisor) Remove() {
	s.do(func() {
		if len(s.slots) <= 1 {
			s.log.Info("Number of workers: 1 (the last one stays)")
			return
		}
		sl := s.slots[len(s.slots)-1]
		s.slots = s.slots[:len(s.slots)-1]
		s.retire(sl.cur, "fewer workers asked for")
		s.retire(sl.next, "fewer workers asked for")
		s.log.Info(fmt.Sprintf("Number of workers: %d", len(s.slots)))
	})
}

// Replace starts a successor for w and retires w once the successor is ready.
func (s *Supervisor) replace(w *workerConn, reason string) {
	s.do(func() { s.replaceLocked(w, reason) })
}

// Open waits for a free Python thread, or a place in a worker's queue when no thread is
// idle, and returns a new stream on it, for a request of size bytes (the environ and body
// sent with it). It then waits, if it must, until the bytes of the requests no thread of
// that worker took yet leave room for it (queueBudget), in turn; turned away by a worker
// retired or lost, it takes another. Waiting ends with ctx.
func (s *Supervisor) Open(ctx context.Context, size int) (*Stream, error) {
	for {
		var w *workerConn
		queued := false
		select {
		case w = <-s.tokens: // an idle thread first
		default:
			select {
			case w = <-s.tokens:
			case w = <-s.spare:
				queued = true
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.stopping:
				return nil, ErrStopped
			}
		}
		held, err := w.acquireRoom(ctx, s.stopping, size)
		if errors.Is(err, errNoRoom) {
			continue // a token of a worker that died or retired: drop it
		}
		if err != nil {
			if ctx.Err() != nil {
				if queued {
					s.spare <- w
				} else {
					s.tokens <- w
				}
			}
			return nil, err
		}
		if st := w.open(held); st != nil {
			if held > 0 {
				w.holdRoom(st)
			}
			return st, nil
		}
		w.releaseRoom(held)
		// A token of a worker that died or retired: drop it.
	}
}

// Stop asks every worker to finish and exit, waits up to grace, then kills what is left; it
// returns when every worker process is gone.
func (s *Supervisor) Stop(grace time.Duration) {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.do(func() {
		for _, w := range s.allWorkers() {
			s.retire(w, "")
			w.deadline = time.Now().Add(grace)
		}
	})
	s.procs.Wait()
	s.do(func() {}) // let the control goroutine see the last exits
}

// Kill stops at once: no new streams, and every worker is killed, failing what it executes.
// Stop must still be called to wait for the processes.
func (s *Supervisor) Kill() {
	s.stopOnce.Do(func() { close(s.stopping) })
	for _, w := range s.allWorkers() {
		_ = w.proc.Kill() // an already dead worker needs nothing
	}
}

func (s *Supervisor) allWorkers() []*workerConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := make([]*workerConn, 0, len(s.workers))
	for w := range s.workers {
		ws = append(ws, w)
	}
	return ws
}

func (s *Supervisor) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// control is the goroutine that owns the worker set. Everything that changes it runs here.
func (s *Supervisor) control() {
	defer close(s.done)
	recallDone := make(chan struct{})
	go func() {
		defer close(recallDone)
		s.recallLoop()
	}()
	defer func() { <-recallDone }() // it ends with stopping, which allGone needs
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var allGone chan struct{} // closed once stopping and every worker goroutine has ended
	for {
		select {
		case fn := <-s.ctrl:
			fn()
		case <-tick.C:
			s.check()
		case <-allGone:
			return
		}
		if allGone == nil && s.isStopping() && len(s.allWorkers()) == 0 {
			allGone = make(chan struct{})
			go func(c chan struct{}) { s.procs.Wait(); close(c) }(allGone)
		}
	}
}

// spawn starts a worker for sl; it runs on the control goroutine.
func (s *Supervisor) spawn(sl *slot) *workerConn {
	if s.isStopping() {
		return nil
	}
	w, err := s.start()
	if err != nil {
		s.log.Error(fmt.Sprintf("Cannot start a worker: %v", err))
		sl.wantNext = sl.cur != nil
		s.retryLater(sl, nil)
		return nil
	}
	w.slot = sl
	w.maxRequests = s.cfg.MaxRequests
	if s.cfg.MaxRequests > 0 && s.cfg.MaxRequestsJitter > 0 {
		w.maxRequests += rand.IntN(s.cfg.MaxRequestsJitter + 1)
	}
	return w
}

// retryLater spawns a worker for sl after its backoff, which doubles up to 10s.
func (s *Supervisor) retryLater(sl *slot, failed *workerConn) {
	var servedFor time.Duration
	if failed != nil && failed.readyAt.Load() != 0 {
		servedFor = time.Since(time.Unix(0, failed.readyAt.Load()))
	}
	sl.backoff = nextBackoff(sl.backoff, servedFor)
	d := sl.backoff
	s.log.Info(fmt.Sprintf("Starting a new worker in %v", d))
	time.AfterFunc(d, func() {
		s.do(func() {
			if !s.hasSlot(sl) {
				return
			}
			if sl.cur == nil {
				sl.cur = s.spawn(sl)
			} else if sl.next == nil && sl.wantNext {
				sl.wantNext = false
				sl.next = s.spawn(sl)
			}
		})
	})
}

// Respawn backoff: it starts at minBackoff, doubles after each quick death up to maxBackoff,
// and starts over once a worker served for goodService.
const (
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 10 * time.Second
	goodService = 30 * time.Second
)

// nextBackoff returns the wait before respawning after a worker died; prev is the previous
// wait of the slot (0 at first) and servedFor how long the dead worker had been ready.
func nextBackoff(prev, servedFor time.Duration) time.Duration {
	if servedFor > goodService {
		prev = 0 // it ran well for a while: this is not a crash loop
	}
	return min(max(prev*2, minBackoff), maxBackoff)
}

func (s *Supervisor) hasSlot(sl *slot) bool {
	for _, x := range s.slots {
		if x == sl {
			return true
		}
	}
	return false
}

// onReady runs on the control goroutine when w announced itself.
func (s *Supervisor) onReady(w *workerConn, threads int) {
	if w.retiring {
		return
	}
	sl := w.slot
	if sl == nil || (sl.next != w && sl.cur != w) {
		s.retire(w, "no longer needed")
		return
	}
	s.log.Info(fmt.Sprintf("Worker %d ready with %d threads", w.pid, threads))
	sl.backoff = 0
	w.mu.Lock()
	w.threads = threads
	w.mu.Unlock()
	s.addTokens(s.tokens, w, threads)
	s.addTokens(s.spare, w, s.cfg.Prefetch)
	if sl.next == w {
		old := sl.cur
		sl.cur, sl.next = w, nil
		s.retire(old, fmt.Sprintf("replaced by worker %d", w.pid))
	}
	if !s.everReady {
		s.everReady = true
		close(s.ready)
	}
}

// addTokens puts n tokens of w in ch (tokens or spare), purging stale tokens of gone workers
// when the channel fills up.
func (s *Supervisor) addTokens(ch chan *workerConn, w *workerConn, n int) {
	if len(ch)+n > cap(ch)/2 {
		var keep []*workerConn
	drain:
		for {
			select {
			case t := <-ch:
				if t.accepting() {
					keep = append(keep, t)
				}
			default:
				break drain
			}
		}
		for _, t := range keep {
			ch <- t
		}
	}
	for i := 0; i < n; i++ {
		ch <- w
	}
}

// onExit runs on the control goroutine when w's process has been reaped.
func (s *Supervisor) onExit(w *workerConn, code int, why string) {
	sl := w.slot
	if w.retiring || s.isStopping() {
		s.log.Info(fmt.Sprintf("Worker %d exited", w.pid))
		return
	}
	wasReady := w.readyAt.Load() != 0
	if code == s.cfg.AppLoadExit && !wasReady && !s.everReady {
		select {
		case s.fatal <- fmt.Errorf("worker %d: %w", w.pid, ErrAppLoad):
		default:
		}
		return
	}
	if code == s.cfg.AppLoadExit && !wasReady {
		s.log.Error(fmt.Sprintf("Worker %d could not load the application; the running workers keep serving", w.pid))
	} else {
		s.log.Error(fmt.Sprintf("Worker %d died: %s", w.pid, why))
	}
	if sl == nil || !s.hasSlot(sl) {
		return
	}
	switch w {
	case sl.cur:
		sl.cur = nil
		if sl.next != nil {
			return // its successor is booting and takes over when ready
		}
		s.retryLater(sl, w)
	case sl.next:
		sl.next = nil
		if code == s.cfg.AppLoadExit && !wasReady {
			return // a reload with broken code: keep the old worker
		}
		sl.wantNext = true
		s.retryLater(sl, w)
	}
}

// retire stops giving w requests and asks it to finish what it runs and exit.
func (s *Supervisor) retire(w *workerConn, reason string) {
	if w == nil || w.retiring {
		return
	}
	w.retiring = true
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.closeRoom()
	w.deadline = time.Now().Add(s.cfg.GracefulTimeout)
	if reason != "" {
		s.log.Info(fmt.Sprintf("Retiring worker %d: %s", w.pid, reason))
	}
	w.shutdown()
}

// check runs every second on the control goroutine: retired workers past their deadline, or
// left only with stuck requests, are killed; silent workers are killed; limits recycle.
func (s *Supervisor) check() {
	now := time.Now()
	for _, w := range s.allWorkers() {
		switch {
		case w.retiring:
			if now.After(w.deadline) {
				s.log.Warn(fmt.Sprintf("Worker %d did not finish in time; killing it", w.pid))
				_ = w.proc.Kill()
			} else if w.onlyStuck() {
				if w.stuckSince.IsZero() {
					w.stuckSince = now
				} else if now.Sub(w.stuckSince) >= time.Second {
					s.log.Warn(fmt.Sprintf("Worker %d has only stuck requests left; killing it", w.pid))
					_ = w.proc.Kill()
				}
			}
		case w.readyAt.Load() != 0:
			if last := time.Unix(0, w.lastSeen.Load()); now.Sub(last) > s.cfg.HeartbeatTimeout {
				s.log.Error(fmt.Sprintf("Worker %d sent no heartbeat for %v; killing it", w.pid, now.Sub(last).Round(time.Second)))
				_ = w.proc.Kill()
				continue
			}
			if s.cfg.MaxMemory > 0 {
				if rss, err := processRSS(w.pid); err == nil && rss > s.cfg.MaxMemory {
					s.replaceLocked(w, fmt.Sprintf("resident memory %d MiB exceeds --max-worker-memory %d MiB", rss>>20, s.cfg.MaxMemory>>20))
				}
			}
			if w.maxRequests > 0 && w.requests.Load() >= int64(w.maxRequests) {
				s.replaceLocked(w, fmt.Sprintf("served %d requests (--max-requests)", w.requests.Load()))
			}
		}
	}
}

// replaceLocked is replace on the control goroutine: a no-op unless w still serves a slot of
// the pool and no successor is booting.
func (s *Supervisor) replaceLocked(w *workerConn, reason string) {
	sl := w.slot
	if sl == nil || !s.hasSlot(sl) || sl.cur != w || sl.next != nil || s.isStopping() {
		return
	}
	s.log.Info(fmt.Sprintf("Replacing worker %d: %s", w.pid, reason))
	sl.next = s.spawn(sl)
}

// processRSS returns the resident set size of pid in bytes.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/statm: %w", pid, err)
	}
	return rss * int64(os.Getpagesize()), nil
}
