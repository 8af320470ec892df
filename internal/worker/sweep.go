package worker

import (
	"runtime"
	"time"

	"gowsgi/internal/pybridge"
)

// The sweeper's pace: its first look comes sweepFirst after a chunk was lent, which is long
// enough for the front to have written a chunk to a client that reads; while chunks stay lent
// (slow clients) it looks again less and less often, up to every sweepMax.
const (
	sweepFirst = 50 * time.Millisecond
	sweepMax   = time.Second
)

// sweeper drops the worker's references to the lent chunks the front is done with
// (pybridge's arena, frame.SharedChunks' holds) while the Python threads are idle. Each
// phase call drops them too, but the front has often not written a response's last chunks
// when its thread calls close(), so without the sweeper an idle worker would keep them, as
// much as a whole big body, until its next request.
type sweeper struct {
	lent    chan struct{} // a chunk went to the front; a kick, buffered once
	done    chan struct{} // closed to stop the sweeper
	stopped chan struct{} // closed when it has stopped
}

func newSweeper() *sweeper {
	return &sweeper{lent: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
}

// kick tells the sweeper a chunk was lent. It never blocks: the hot path of a stream calls it.
// A nil sweeper (no arena) ignores it.
func (sw *sweeper) kick() {
	if sw == nil {
		return
	}
	select {
	case sw.lent <- struct{}{}:
	default:
	}
}

// stop stops the sweeper and waits for it: before Python is finalized.
func (sw *sweeper) stop() {
	close(sw.done)
	<-sw.stopped
}

// run is the sweeper's goroutine, on a Python thread state of its own; started reports
// whether it could make one.
func (sw *sweeper) run(started chan<- error) {
	defer close(sw.stopped)
	runtime.LockOSThread() // never unlocked: the thread state lives and dies with this thread
	th, err := pybridge.NewThread()
	started <- err
	if err != nil {
		return
	}
	var swept uint64 // pybridge.Sweeps at the last look
	t := time.NewTimer(sweepFirst)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-sw.done:
			return
		case <-sw.lent:
		}
		for d := sweepFirst; ; {
			t.Reset(d)
			select {
			case <-sw.done:
				return
			case <-t.C:
			}
			select {
			case <-sw.lent: // lent again meanwhile: the new chunks set the pace
				d = sweepFirst
			default:
				d = min(2*d, sweepMax)
			}
			if n := pybridge.Sweeps(); n != swept {
				// The serving threads sweep: taking the GIL from them as well cost a
				// stream 10 % more CPU in the workers. Look again soon after they stop.
				swept, d = n, sweepFirst
				continue
			}
			more := th.Sweep()
			swept = pybridge.Sweeps()
			if !more {
				break
			}
		}
	}
}
