package worker

import (
	"fmt"

	"gowsgi/internal/frame"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// rescueAfter is how long queued requests may wait while the threads running requests make no
// progress before idle threads are woken for them (see runq).
const rescueAfter = 200 * time.Microsecond

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
type runq struct {
	// mu guards the fields that follow.
	mu       sync.Mutex
	tasks    []*task // tasks[head:] wait for a thread
	head     int
	idle     []*slot // threads asleep in take
	active   int     // threads running a request
	taken    uint64  // requests taken so far, the progress the rescue looks for
	lastTake time.Duration
	closed   bool

	// shared publishes taken to the front, which dispatches the requests beyond it again if
	// the worker dies (nil in tests). Requests are taken in the order they arrived, so the
	// count says which ones reached the app.
	shared *frame.SharedCounter
}

// epoch is the origin of runq's monotonic times.
var epoch = time.Now()

func newEventFD() (int, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return -1, fmt.Errorf("eventfd: %w", errno)
	}
	return int(fd), nil
}

// kick wakes the thread asleep on the eventfd fd.
func kick(fd int) {
	one := [8]byte{1}
	for {
		// Only an overflow of the counter could fail, and a thread is woken once per sleep.
		if _, err := syscall.Write(fd, one[:]); err != syscall.EINTR {
			return
		}
	}
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
		kick(s.efd)
	}
}

// progress returns whether requests wait while a thread is idle, and how many were taken so
// far. Requests waiting while every thread is busy need no rescue: the first thread done
// takes them before it sleeps.
func (q *runq) progress() (stalled bool, taken uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting() > 0 && len(q.idle) > 0, q.taken
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
		kick(s.efd)
	}
}

func (q *runq) waiting() int { return len(q.tasks) - q.head }

func (q *runq) popIdle() *slot {
	n := len(q.idle)
	if n == 0 {
		return nil
	}
	s := q.idle[n-1]
	q.idle = q.idle[:n-1]
	return s
}

// close wakes every idle thread; take returns false once the queue is empty.
func (q *runq) close() {
	q.mu.Lock()
	q.closed = true
	idle := q.idle
	q.idle = nil
	q.mu.Unlock()
	for _, s := range idle {
		kick(s.efd)
	}
}

// take returns the next request for s, sleeping until there is one; false once closed and
// drained. The thread must call finished after serving it.
func (q *runq) take(s *slot) (*task, bool) {
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
			q.mu.Unlock()
			return t, true
		}
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		q.idle = append(q.idle, s)
		q.mu.Unlock()
		sleepOn(s.efd)
	}
}

// finished says the thread that took a request is done with it.
func (q *runq) finished() {
	q.mu.Lock()
	q.active--
	q.mu.Unlock()
}

// sleepOn blocks the thread until the eventfd fd is kicked. The read is a plain blocking system
// call made from the locked thread itself, so the kernel wakes this very thread.
func sleepOn(fd int) {
	var buf [8]byte
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8)
		if errno != syscall.EINTR {
			return
		}
	}
}

// waitReadable blocks until fd is readable or d has passed, and reports whether it is readable
// (or in error, which the next read reports).
func waitReadable(fd int, d time.Duration) bool {
	pfd := struct {
		fd      int32
		events  int16
		revents int16
	}{fd: int32(fd), events: 0x1} // POLLIN
	ts := syscall.NsecToTimespec(int64(d))
	n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return errno == 0 && n > 0 || errno != 0 && errno != syscall.EINTR
}
