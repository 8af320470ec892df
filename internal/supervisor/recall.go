package supervisor

import (
	"fmt"
	"time"

	"gowsgi/internal/frame"
)

// recallEvery is how often the recaller looks at the workers' queues (Config.Prefetch) while
// requests wait in them. A worker that took none of its queued requests between two looks
// may have every thread held up (blocked on I/O, in a long call) and is asked to hand them
// back (frame.Recall), so that they go to the first thread free in any worker instead of
// waiting for one of its own. It refuses while a thread is idle or took a request a moment
// ago, and is asked again every askAgain looks while the stall lasts. The looks also give
// back the queue budget of the requests taken since (see queueBudget).
const recallEvery = 5 * time.Millisecond

// askAgain is how many looks in a row that see a stall pass before the worker is asked again:
// a worker that saw a thread idle, or a take the front had not seen yet, keeps its queue, and
// progress follows at once; if it does not, the next asks find every thread held up.
const askAgain = 20

// watchQueues says that a request went to a worker's queue: the recaller looks until no
// request waits in one. The kick channel holds one entry, so a kick while it looks is kept.
func (s *Supervisor) watchQueues() {
	select {
	case s.recallKick <- struct{}{}:
	default:
	}
}

// recallLoop is the recaller, a goroutine of the control goroutine's (which waits for it). It
// sleeps until a request is queued in a worker, then looks every recallEvery until no
// request waits in any, and ends when the supervisor stops.
func (s *Supervisor) recallLoop() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-s.recallKick:
		case <-s.stopping:
			return
		}
		for waiting := true; waiting; {
			t.Reset(recallEvery)
			select {
			case <-t.C:
			case <-s.stopping:
				return
			}
			waiting = false
			for _, w := range s.allWorkers() {
				if w.look() {
					waiting = true
				}
			}
		}
	}
}

// look reports whether requests wait in w's queue or for room in it, and asks w to hand its
// queue back when it took none since the previous look; only the recaller calls it.
func (w *workerConn) look() (waiting bool) {
	taken, ok := w.takenCount()
	if !ok {
		return false
	}
	w.releaseUpTo(taken)
	queued := w.sent.Load() > taken
	waiting = queued || w.roomWaiting() // they wait for the takes the looks see
	if !queued || taken != w.lookTaken {
		w.lookTaken, w.stalledLooks = taken, 0
		return waiting
	}
	if w.stalledLooks++; w.stalledLooks%askAgain == 1 {
		w.sup.log.Debug(fmt.Sprintf("Worker %d took none of its %d queued requests for %v; recalling them", w.pid, w.sent.Load()-taken, time.Duration(w.stalledLooks)*recallEvery))
		_ = w.out.Send(frame.AppendHeader(nil, frame.Recall, 0, 0, 0)) // a dead worker needs no asking
	}
	return waiting
}
