package worker

import (
	"runtime"
	"sync/atomic"
	"time"

	"gowsgi/internal/pybridge"
)

// The sweeper's pace: its first look comes sweepFirst after a chunk was lent, which is long
// enough for the front to have written a chunk to a client that reads; while chunks stay lent
// (slow clients, or threads that keep streaming) it looks again less and less often, up to
// every sweepMax, so that a busy worker wakes it about once a second.
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
	freed   *atomic.Uint32 // the holds cleared so far (frame.SharedChunks.Freed)
	lent    chan struct{}  // a chunk went to the front; a kick, buffered once
	done    chan struct{}  // closed to stop the sweeper
	stopped chan struct{}  // closed when it has stopped
}

func newSweeper(freed *atomic.Uint32) *sweeper {
	return &sweeper{freed: freed, lent: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
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
	var (
		swept     uint64 // pybridge.Sweeps at the last look
		freed     uint32 // sw.freed at the sweeper's last sweep
		sweptOnce bool   // freed holds a value
	)
	t := time.NewTimer(sweepFirst)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-sw.done:
			return
		case <-sw.lent:
		}
		for d := sweepFirst; ; d = min(2*d, sweepMax) {
			t.Reset(d)
			select {
			case <-sw.done:
				return
			case <-t.C:
			}
			select {
			case <-sw.lent: // this round covers the chunks lent meanwhile
			default:
			}
			if n := pybridge.Sweeps(); n != swept {
				// The serving threads sweep: taking the GIL from them as well cost the
				// stream's workers 3-5 µs more per response (a tenth or more).
				swept = n
				continue
			}
			f := sw.freed.Load()
			if sweptOnce && f == freed {
				continue // nothing cleared since: a slow client still reads what is lent
			}
			more := th.Sweep()
			swept, freed, sweptOnce = pybridge.Sweeps(), f, true
			if !more {
				break
			}
		}
	}
}
