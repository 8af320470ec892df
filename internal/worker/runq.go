package worker

import (
	"cmp"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"gowsgi/internal/frame"
)

// rescueAfter is how long queued requests may wait while the threads running requests make no
// progress before idle threads are woken for them (see runq).
const rescueAfter = 200 * time.Microsecond

// leadBelow is the longest app call, on a thread's running average, for which the thread
// watches for the front's frames itself when it runs out of requests (see runq). Above it, the
// requests that arrive while it runs one are better read by the reader, which batches them.
const leadBelow = 50 * time.Microsecond

// watchdogTick is how often the reader looks at the thread that has the duty (see runq).
// Setting a timer costs a VM exit on this kind of machine (a timerfd set and cleared per batch
// took back all that leading saved), so the watchdog ticks steadily while a thread has the
// duty, and is set and cleared only when the duty changes hands.
const watchdogTick = time.Millisecond

// runq hands requests to the Python threads.
//
// An idle thread sleeps in a blocking read of its own eventfd rather than on a Go channel:
// waking a goroutine locked to its OS thread goes through the Go scheduler's hand-off of a P
// between threads, which cost several thread switches per request. And a batch of requests is
// given to the thread already running, not spread over sleeping ones: Python runs one thread at
// a time, so on a busy machine waking a second thread for a request that takes microseconds
// only adds switches and GIL hand-offs. A thread that blocks (I/O, sleep) must not hold up the
// queue, though: when queued requests see no progress for rescueAfter, the reader wakes idle
// threads for all of them.
//
// Who reads the frames from the front ("duty") is either the reader goroutine
// (worker.readLoop) or a thread. A thread out of requests whose app calls are short
// (leadBelow) takes the duty and waits for the front's frames itself, as the leader: the
// front's next batch then wakes one thread, which reads and runs it, instead of the reader,
// which would wake a thread in turn (hello: 0.9 → 0.55 worker thread switches per request).
// While the leader runs what it read (the runner), nobody watches for frames; the thread reads
// them again when it runs out (pump), and a timer (the watchdog) hands the duty back to the
// reader if the runner has not taken a request for rescueAfter, so a request that blocks holds
// nothing up for longer than with the reader on duty. A wait for a frame (body, credit) also gives the
// duty back to the reader: the waiting thread cannot read.
type runq struct {
	// mu guards the fields that follow.
	mu       sync.Mutex
	tasks    []*task // tasks[head:] wait for a thread
	head     int
	idle     []*slot // threads asleep in take (the leader too)
	active   int     // threads running a request
	threads  int     // threads in all, set before they start
	taken    uint64  // requests taken (or handed back) so far, the progress the rescue looks for
	lastTake time.Duration
	closed   bool

	duty       duty
	holder     *slot  // the leader or the runner
	ticked     uint64 // taken when the watchdog last ticked
	frameWaits int    // threads (or companions) waiting for a frame from the front
	// readerBlind: the reader, on duty, waits for frames without a time limit because no
	// request waited next to an idle thread when it looked (progress). A thread that reads
	// requests itself (pump) and leaves some waiting next to an idle thread must kick it, or
	// nobody would watch them: the ring they came through is drained.
	readerBlind bool
	sockDone    bool // the connection from the front ended: nobody leads

	// shared publishes taken to the front, which dispatches the requests beyond it again if
	// the worker dies (nil in tests). Requests are taken, or handed back, in the order they
	// arrived, so the count says which ones may have reached the app.
	shared *frame.SharedCounter

	// Set by the worker before the threads start; in tests, pump and wait may be nil, and
	// then the reader keeps the duty.
	pump     func() bool    // reads what the front sent, queues its requests; false once the connection ended
	wait     func(kick int) // waits until the front sent something, or kick is readable
	rkick    int            // non-blocking eventfd that wakes the reader from a nap
	watchdog int            // timerfd ticking while a thread has the duty; the reader naps on it
	tick     time.Duration  // how often the watchdog ticks; 0: watchdogTick (tests slow it)

	napping atomic.Bool // the reader naps: a change of duty must kick rkick
}

// duty says who reads the frames from the front.
type duty int

const (
	dutyReader duty = iota // the reader goroutine
	dutyLeader             // holder, asleep in take watching for frames
	dutyRunner             // holder, running the requests it read; the watchdog is armed
)

// epoch is the origin of runq's monotonic times.
var epoch = time.Now()

// newTimerFD returns a non-blocking monotonic timerfd, disarmed.
func newTimerFD() (int, error) {
	const clockMonotonic = 1
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		return -1, fmt.Errorf("timerfd: %w", errno)
	}
	return int(fd), nil
}

// setTimer arms the timerfd fd to expire every d, or disarms it when d is 0.
func setTimer(fd int, d time.Duration) {
	var spec [4]int64 // struct itimerspec: interval, then value
	spec[0], spec[1] = int64(d/time.Second), int64(d%time.Second)
	spec[2], spec[3] = spec[0], spec[1]
	_, _, _ = syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, uintptr(fd), 0, uintptr(unsafe.Pointer(&spec[0])), 0, 0, 0) // only a bad fd fails
}

// push queues requests; dispatch must follow.
func (q *runq) push(ts ...*task) {
	q.mu.Lock()
	q.tasks = append(q.tasks, ts...)
	q.mu.Unlock()
}

// dispatch wakes one idle thread for the queued requests unless a thread is running one and
// took a request within rescueAfter: that thread takes the queue in turn when it is done.
func (q *runq) dispatch() {
	q.mu.Lock()
	var s *slot
	if q.waiting() > 0 && (q.active == 0 || time.Since(epoch)-q.lastTake > rescueAfter) {
		s = q.popIdle()
	}
	q.mu.Unlock()
	if s != nil {
		frame.Kick(s.efd)
	}
}

// progress returns whether requests wait while a thread is idle, and how many were taken so
// far. Requests waiting while every thread is busy need no rescue: the first thread done
// takes them before it sleeps. The reader calls it before it waits for frames, without a
// time limit unless stalled (see readerBlind).
func (q *runq) progress() (stalled bool, taken uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stalled = q.waiting() > 0 && len(q.idle) > 0
	q.readerBlind = !stalled
	return stalled, q.taken
}

// rescue wakes idle threads for every waiting request if none was taken since progress
// reported taken.
func (q *runq) rescue(taken uint64) {
	q.mu.Lock()
	var wake []*slot
	if q.taken == taken {
		for n := q.waiting(); n > 0; n-- {
			s := q.popIdle()
			if s == nil {
				break
			}
			wake = append(wake, s)
		}
	}
	q.mu.Unlock()
	for _, s := range wake {
		frame.Kick(s.efd)
	}
}

func (q *runq) waiting() int { return len(q.tasks) - q.head }

// popIdle takes the thread that went idle last; q.mu must be held. The leader, if it is the
// one, loses the duty to the reader.
func (q *runq) popIdle() *slot {
	n := len(q.idle)
	if n == 0 {
		return nil
	}
	s := q.idle[n-1]
	q.idle = q.idle[:n-1]
	if q.holder == s {
		q.toReader() // called by the reader itself (dispatch, rescue): it does not nap
	}
	return s
}

// toReader gives the duty back to the reader; q.mu must be held. It reports whether the
// reader naps, in which case the caller must kick it once q.mu is released (see readerNap).
func (q *runq) toReader() (kickReader bool) {
	if q.duty != dutyReader {
		setTimer(q.watchdog, 0)
	}
	q.duty, q.holder = dutyReader, nil
	return q.napping.Load()
}

// handBack empties the queue of the requests no thread has taken (frame.Recall) and returns
// them, if every thread runs a request and none took one for rescueAfter: the front saw no
// progress, but it may itself have been slow to deliver them (a full ring), and a thread
// that is idle takes them soon enough. send tells the front, before they count as taken
// and with q.mu held, so that no thread takes a later request meanwhile: the front takes a
// request counted in shared for one that reached the app, unless it heard first that it
// came back.
func (q *runq) handBack(send func([]*task)) []*task {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active < q.threads || time.Since(epoch)-q.lastTake < rescueAfter {
		return nil // a thread is idle, or between requests: it takes them soon enough
	}
	ts := append([]*task(nil), q.tasks[q.head:]...)
	clear(q.tasks)
	q.tasks, q.head = q.tasks[:0], 0
	if len(ts) > 0 {
		send(ts)
		q.taken += uint64(len(ts))
		if q.shared != nil {
			q.shared.Store(q.taken)
		}
	}
	return ts
}

// close wakes every idle thread; take returns false once the queue is empty.
func (q *runq) close() {
	q.mu.Lock()
	q.closed = true
	idle := q.idle
	q.idle = nil
	wakeReader := q.toReader()
	q.mu.Unlock()
	for _, s := range idle {
		frame.Kick(s.efd)
	}
	if wakeReader {
		frame.Kick(q.rkick)
	}
}

// take returns the next request for s, sleeping until there is one; false once closed and
// drained. The thread must call finished after serving it.
func (q *runq) take(s *slot) (*task, bool) {
	pumped := false
	for {
		q.mu.Lock()
		if q.waiting() > 0 {
			t := q.tasks[q.head]
			q.tasks[q.head] = nil
			q.head++
			if q.head == len(q.tasks) {
				q.tasks, q.head = q.tasks[:0], 0
			}
			q.active++
			q.taken++
			if q.shared != nil {
				q.shared.Store(q.taken) // before the app runs: a crash in it is never retried
			}
			q.lastTake = time.Since(epoch)
			s.took = q.lastTake
			// What this thread pumped may leave requests waiting next to an idle thread,
			// unseen by a reader that waits for frames: it must time the rescue.
			blind := q.readerBlind && q.duty == dutyReader && q.waiting() > 0 && len(q.idle) > 0
			if blind {
				q.readerBlind = false
			}
			q.mu.Unlock()
			if blind {
				frame.Kick(q.rkick)
			}
			return t, true
		}
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		if !pumped && q.pump != nil {
			// The front may have sent requests while this thread ran, unread if it held the
			// duty or the reader has not run yet: take them without a round of wake-ups.
			q.mu.Unlock()
			up := q.pump()
			pumped = true
			if !up {
				q.mu.Lock()
				q.sockDone = true
				q.mu.Unlock()
			}
			continue
		}
		q.idle = append(q.idle, s)
		lead := q.wait != nil && !q.sockDone && s.avgCall < leadBelow && q.frameWaits == 0 &&
			(q.duty == dutyReader || q.holder == s)
		wakeReader := false
		if lead {
			if q.duty == dutyReader {
				setTimer(q.watchdog, cmp.Or(q.tick, watchdogTick))
				q.ticked = q.taken
			}
			q.duty, q.holder = dutyLeader, s
		} else if q.holder == s {
			wakeReader = q.toReader() // a runner whose calls grew long
		}
		q.mu.Unlock()
		if wakeReader {
			frame.Kick(q.rkick)
		}
		if lead {
			q.lead(s)
		} else {
			frame.SleepOn(s.efd)
		}
		pumped = false
	}
}

// lead is the leader's sleep: until the front sent something or the thread is kicked.
func (q *runq) lead(s *slot) {
	q.wait(s.efd)
	q.mu.Lock()
	popped := true // by dispatch, rescue or close, which kick (or are about to kick) efd
	for i := len(q.idle) - 1; i >= 0; i-- {
		if q.idle[i] == s {
			q.idle = append(q.idle[:i], q.idle[i+1:]...)
			popped = false
			break
		}
	}
	wakeReader := false
	if q.holder == s && q.duty == dutyLeader {
		if q.frameWaits > 0 { // started while this thread led: the reader must read the frame
			wakeReader = q.toReader()
		} else {
			q.duty = dutyRunner
		}
	}
	q.mu.Unlock()
	if wakeReader {
		frame.Kick(q.rkick)
	}
	if popped {
		frame.SleepOn(s.efd) // take the kick, so that it does not end a later sleep
	}
}

// finished says thread s is done with the request it took.
func (q *runq) finished(s *slot) {
	d := time.Since(epoch) - s.took
	q.mu.Lock()
	s.avgCall += (d - s.avgCall) / 8
	q.active--
	q.mu.Unlock()
}

// frameSource is what the reader waits on for the front's frames (a frame.Ring).
type frameSource interface {
	// WaitReadable waits until frames can be read or one of also is readable, for at most
	// d (d < 0: no limit), and reports whether frames can be read.
	WaitReadable(d time.Duration, also ...int) bool
}

// serveReader is the reader's loop (worker.readLoop): whenever it has the duty, it waits for
// the front's frames and reads them with pump, which reports false once the connection
// ended; while a thread has the duty, it naps on its kick and the watchdog. It returns when
// pump fails or done reports true.
//
// The duty can move to a thread while the reader waits for frames: a thread out of requests
// leads as soon as the reader has the duty. The reader then keeps waiting for frames, and
// would wake for them, but the leader may read them first, and a thread reading the ring to
// its end takes the wake-up back. So the wait watches the watchdog too, which ticks from the
// moment a thread takes the duty: else nobody would see a runner block, and the requests
// queued behind it would wait for it (a full test run caught them waiting a second for the
// timeout of a request stuck in time.sleep).
func (q *runq) serveReader(in frameSource, pump func() bool, done func() bool) {
	for !done() {
		if q.readerNap() {
			frame.PollReadable(-1, -1, q.rkick, q.watchdog)
			q.napping.Store(false)
			q.readerWoke()
			continue
		}
		stalled, taken := q.progress()
		d := time.Duration(-1)
		if stalled {
			d = rescueAfter
		}
		readable := in.WaitReadable(d, q.rkick, q.watchdog)
		q.readerWoke()
		if !readable {
			if stalled && q.sinceTake() >= rescueAfter {
				q.rescue(taken) // no request taken for a while: wake idle threads for the rest
			}
			continue
		}
		if !q.readerDuty() { // a thread took the duty, and reads this
			continue
		}
		if !pump() {
			return
		}
		q.dispatch()
	}
}

// readerWoke takes what woke the reader from its descriptors: a kick, a watchdog tick.
func (q *runq) readerWoke() {
	frame.Drain(q.rkick)
	if frame.Drain(q.watchdog) {
		q.watchdogFired()
	}
}

// readerNap says whether the reader may nap instead of watching for frames: while a thread
// has the duty.
func (q *runq) readerNap() bool {
	// Set before looking: whoever gives the duty back after this sees it and kicks the
	// reader.
	q.napping.Store(true)
	q.mu.Lock()
	nap := q.duty != dutyReader
	q.mu.Unlock()
	if !nap {
		q.napping.Store(false)
	}
	return nap
}

// readerDuty reports whether the reader has the duty.
func (q *runq) readerDuty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.duty == dutyReader
}

// watchdogFired is the reader's check at each tick of the watchdog: the duty comes back to
// the reader when the runner has not taken a request for rescueAfter (it may block), when a
// frame is awaited, and when no request was taken since the last tick (the worker is idle:
// the watchdog need not tick on).
func (q *runq) watchdogFired() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.duty == dutyReader {
		return
	}
	idle := q.taken == q.ticked
	q.ticked = q.taken
	if idle || q.frameWaits > 0 || q.duty == dutyRunner && time.Since(epoch)-q.lastTake >= rescueAfter {
		q.toReader()
	}
}

// sinceTake returns how long ago a thread last took a request.
func (q *runq) sinceTake() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	return time.Since(epoch) - q.lastTake
}

// waitFrames counts a thread (or companion) waiting for a frame from the front (on) or done
// waiting. A runner cannot read the frame it or another waits for: the reader takes the duty.
func (q *runq) waitFrames(on bool) {
	q.mu.Lock()
	if on {
		q.frameWaits++
	} else {
		q.frameWaits--
	}
	wake := false
	if on && q.duty == dutyRunner {
		wake = q.toReader()
	}
	q.mu.Unlock()
	if wake {
		frame.Kick(q.rkick)
	}
}
