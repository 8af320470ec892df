package supervisor

import (
	"context"
	"errors"
	"slices"
)

// queueBudget bounds the bytes of the requests sent to a worker that no thread has taken yet,
// so that the ring to the worker holds them whole, with room to spare for body, credit and
// cancel frames: when it was full, the front wrote the rest of a request only as the worker
// read, each piece milliseconds late, and the requests read before it waited meanwhile (with
// 16 KiB bodies the recaller saw 100 to 170 such stalls in 6 s of load). Requests sent to idle
// threads count too: when only the queue's (Config.Prefetch) did, with half the ring as the
// budget, 64 KiB bodies still filled it (68-98 recalls in 5 s of pinned echo load, p99 32-37
// ms; counted: 0-1 recalls, 6.6-6.7 ms, 10 % more requests). A request bigger than the budget
// takes all of it.
//
// A request holds its bytes from its send until a thread of the worker takes it (the shared
// count of taken requests passes its number), or until it ends, is handed back or its worker
// is lost. Requests that find no room wait for it in turn, holding the thread's or place's
// token they took; a worker retired or lost turns them away.
const queueBudget = ringSize * 7 / 8

// errNoRoom says that the worker whose room a request waited for is retired or lost.
var errNoRoom = errors.New("worker no longer takes requests")

// roomWaiter is a request waiting for room in a worker's queue budget.
type roomWaiter struct {
	n      int
	ready  chan struct{} // closed when its bytes are granted, or the worker turns it away
	turned bool          // turned away (roomMu)
}

// acquireRoom takes n bytes of w's queueBudget (all of it, for a request bigger), waiting
// behind the requests that wait already, so that big requests are not passed over. It
// returns the bytes held, or errNoRoom when w is retired or lost, the error of ctx, or
// ErrStopped when stopping closes first. A request that waits wakes the recaller, which sees
// the takes that give room back.
func (w *workerConn) acquireRoom(ctx context.Context, stopping <-chan struct{}, n int) (int, error) {
	n = min(n, queueBudget)
	// Most requests find room at once: every END gives back the room of the requests taken.
	// The others look again once the takes are counted, and wait if they must.
	for again := false; ; again = true {
		if again {
			w.releaseTaken()
		}
		w.roomMu.Lock()
		if w.roomClosed {
			w.roomMu.Unlock()
			return 0, errNoRoom
		}
		if len(w.roomWaiters) == 0 && w.queuedBytes+n <= queueBudget {
			w.queuedBytes += n
			w.roomMu.Unlock()
			return n, nil
		}
		if again {
			break // waits, with roomMu held
		}
		w.roomMu.Unlock()
	}
	wt := &roomWaiter{n: n, ready: make(chan struct{})}
	w.roomWaiters = append(w.roomWaiters, wt)
	w.roomMu.Unlock()
	w.sup.watchQueues()
	var err error
	select {
	case <-wt.ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-stopping:
		err = ErrStopped
	}
	w.roomMu.Lock()
	defer w.roomMu.Unlock()
	select {
	case <-wt.ready:
		switch {
		case wt.turned:
			return 0, errNoRoom
		case err == nil:
			return n, nil
		}
		w.queuedBytes -= n // granted as we gave up
	default:
		if i := slices.Index(w.roomWaiters, wt); i >= 0 {
			w.roomWaiters = slices.Delete(w.roomWaiters, i, i+1)
		}
	}
	w.grantRoom() // it may have held up smaller requests behind it
	return 0, err
}

// holdRoom lists st, opened with room of the queue budget, among the streams holding some.
func (w *workerConn) holdRoom(st *Stream) {
	w.roomMu.Lock()
	w.roomHeld = append(w.roomHeld, st)
	w.roomMu.Unlock()
}

// releaseRoom gives back n bytes that no stream holds (a stream that could not be opened).
func (w *workerConn) releaseRoom(n int) {
	if n == 0 {
		return
	}
	w.roomMu.Lock()
	w.queuedBytes -= n
	w.grantRoom()
	w.roomMu.Unlock()
}

// releaseStream gives back the room st holds, if it still holds some: it ended, or was
// handed back, before the front saw a thread take it.
func (w *workerConn) releaseStream(st *Stream) {
	if st.queued == 0 {
		return
	}
	w.roomMu.Lock()
	if i := slices.Index(w.roomHeld, st); i >= 0 {
		w.roomHeld = slices.Delete(w.roomHeld, i, i+1)
		w.queuedBytes -= st.queued
		w.grantRoom()
	}
	w.roomMu.Unlock()
}

// releaseTaken gives back the room of the queued streams a thread has taken: their frames
// are out of the ring.
func (w *workerConn) releaseTaken() {
	if taken, ok := w.takenCount(); ok {
		w.releaseUpTo(taken)
	}
}

// releaseUpTo gives back the room of the queued streams numbered up to taken.
func (w *workerConn) releaseUpTo(taken uint64) {
	w.roomMu.Lock()
	defer w.roomMu.Unlock()
	kept := w.roomHeld[:0]
	for _, st := range w.roomHeld {
		if seq := st.seq.Load(); seq != 0 && seq <= taken {
			w.queuedBytes -= st.queued
		} else {
			kept = append(kept, st)
		}
	}
	clear(w.roomHeld[len(kept):])
	w.roomHeld = kept
	w.grantRoom()
}

// takenCount returns the worker's shared count of taken requests; false once it is lost.
func (w *workerConn) takenCount() (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead { // taken is unmapped after lost, which marks it dead first
		return 0, false
	}
	return w.taken.Load(), true
}

// closeRoom turns away the requests waiting for room in w, retired or lost, and those that
// would wait: they take a place elsewhere.
func (w *workerConn) closeRoom() {
	w.roomMu.Lock()
	defer w.roomMu.Unlock()
	w.roomClosed = true
	for _, wt := range w.roomWaiters {
		wt.turned = true
		close(wt.ready)
	}
	w.roomWaiters = nil
}

// forgetRoom lets go of the streams holding room in a lost worker: they are failed or sent
// elsewhere, and go back to the stream pool.
func (w *workerConn) forgetRoom() {
	w.roomMu.Lock()
	defer w.roomMu.Unlock()
	clear(w.roomHeld)
	w.roomHeld = nil
}

// grantRoom grants room to the waiting requests, in order, while it lasts; roomMu must be
// held.
func (w *workerConn) grantRoom() {
	for len(w.roomWaiters) > 0 {
		wt := w.roomWaiters[0]
		if w.queuedBytes+wt.n > queueBudget {
			return
		}
		w.queuedBytes += wt.n
		close(wt.ready)
		w.roomWaiters[0] = nil
		w.roomWaiters = w.roomWaiters[1:]
	}
}

// roomWaiting reports whether requests wait for room in w.
func (w *workerConn) roomWaiting() bool {
	w.roomMu.Lock()
	defer w.roomMu.Unlock()
	return len(w.roomWaiters) > 0
}
