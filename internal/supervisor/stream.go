package supervisor

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gowsgi/internal/frame"
)

// EventKind says what a worker sent for a stream.
type EventKind int

// Kinds of Event.
const (
	EventHead     EventKind = iota + 1 // Head holds the response status and headers
	EventData                          // Data holds body bytes
	EventFile                          // File holds a file to send from Offset, Length bytes
	EventWantBody                      // the app wants up to N more request body bytes
	EventEnd                           // the response is complete (Abort: it broke after its head)
	EventFailed                        // the worker died or was lost before the stream ended
	EventRetry                         // the worker died before a thread took the stream: send it again
	EventRequeue                       // the worker handed the stream back untaken: send it again
	EventTimeout                       // NextTimeout's wait ran out
)

// Event is one thing a worker said about a stream.
type Event struct {
	Kind   EventKind
	Head   frame.ResponseHead
	Data   []byte
	File   *os.File
	Offset int64
	Length int64
	N      int
	Abort  bool

	shared int // 1 + the index that frees Data in the worker's SharedChunks (buffer or hold); 0: none
}

// Stream is one request in flight on one worker thread. Its methods are safe for concurrent
// use, but the front uses each stream from one connection goroutine.
type Stream struct {
	id uint32
	w  *workerConn

	seq    atomic.Uint64 // 1 + how many requests went to the worker before this one; 0: not sent
	queued int           // the bytes it holds of its worker's queue budget (queueBudget) until taken

	// refs counts the stream's holders: the worker's table of streams, which lets go in
	// finish, requeue or lost, and the caller, in Release. The last one puts the stream back
	// in streamPool: streams were most of what the front allocated per request, and under
	// pinned echo load it collected garbage four times a second, each time keeping its one CPU
	// for about 2 ms while the workers' responses waited.
	refs atomic.Int32

	// The worker's reader alone uses the fields that follow, for the response head, until the
	// last holder's unref resets them (after the reader's own unref, by the order of refs):
	// they keep the head's bytes and fields from one request to the next.
	head     []byte
	fields   []frame.HeadField
	headSeen bool // a head came for this request: a second one gets buffers of its own

	// mu guards the fields that follow.
	mu        sync.Mutex
	events    []Event
	first     [3]Event // the events array of a typical response (head, data, end), in place
	ended     bool     // EventEnd, EventFailed, EventRetry or EventRequeue was queued
	abandoned bool     // the caller left: events are dropped
	timedOut  bool     // the current NextTimeout wait ran out (WaitTimer)
	wake      chan struct{}
}

// streamPool holds streams nobody holds any more, for the next requests.
var streamPool sync.Pool

func newStream(id uint32, w *workerConn) *Stream {
	st, _ := streamPool.Get().(*Stream)
	if st == nil {
		st = &Stream{wake: make(chan struct{}, 1)}
	}
	st.id, st.w = id, w
	st.events = st.first[:0]
	st.refs.Store(2)
	return st
}

// maxPooledHead bounds the head buffer a pooled stream keeps: a rare huge head is not kept.
const maxPooledHead = 4 << 10

// unref lets go of one holder's hold on st; the last one resets it and pools it.
func (st *Stream) unref() {
	if st.refs.Add(-1) != 0 {
		return
	}
	for i := range st.events {
		st.discard(&st.events[i])
	}
	clear(st.first[:])
	st.events = nil
	select {
	case <-st.wake: // a signal nobody took
	default:
	}
	st.id, st.w, st.queued = 0, nil, 0
	st.seq.Store(0)
	st.ended, st.abandoned, st.timedOut, st.headSeen = false, false, false, false
	if cap(st.head) > maxPooledHead {
		st.head, st.fields = nil, nil
	}
	clear(st.fields[:cap(st.fields)]) // they point into head
	st.head, st.fields = st.head[:0], st.fields[:0]
	streamPool.Put(st)
}

// Release says the caller is done with st: it took its last event (EventEnd, EventFailed,
// EventRetry or EventRequeue) and will not use st again, which may then serve another request.
// An abandoned stream stays out of the pool: its stuck-thread check still looks at it.
func (st *Stream) Release() {
	st.mu.Lock()
	abandoned := st.abandoned
	st.mu.Unlock()
	if !abandoned {
		st.unref()
	}
}

// parseHead parses the payload of a Head frame for st (nil: a stream that is gone) into h,
// copied out of the ring into the stream's own buffers for its first head of the request, into
// new ones for any other: the caller may still hold the first.
func (st *Stream) parseHead(payload []byte, h *frame.ResponseHead) error {
	var buf []byte
	var fields []frame.HeadField
	own := st != nil && !st.headSeen
	if own {
		st.headSeen = true
		buf, fields = st.head[:0], st.fields[:0]
	}
	p := append(buf, payload...)
	h.Fields = fields
	err := frame.ParseHeadFrame(p, h)
	if own {
		st.head, st.fields = p, h.Fields
	}
	return err
}

// push queues an event without ever blocking the worker's reader; response bytes in the queue
// are bounded by the stream's credit.
func (st *Stream) push(e Event) {
	st.mu.Lock()
	drop := st.ended || st.abandoned
	if e.Kind == EventEnd || e.Kind == EventFailed || e.Kind == EventRetry || e.Kind == EventRequeue {
		st.ended = true
	}
	if drop {
		st.mu.Unlock()
		st.discard(&e)
		return
	}
	st.events = append(st.events, e)
	st.mu.Unlock()
	st.signal()
}

// Next waits for the next event.
func (st *Stream) Next() Event { return st.NextTimeout(0, nil) }

// NextTimeout waits at most d (0: forever) for the next event; EventTimeout says it ran out.
// wt, if not nil, is the caller's WaitTimer, which bounds all the waits of one connection.
func (st *Stream) NextTimeout(d time.Duration, wt *WaitTimer) Event {
	if d > 0 && wt == nil {
		wt = NewWaitTimer()
		defer wt.Stop()
	}
	armed := false
	for {
		st.mu.Lock()
		if len(st.events) > 0 {
			e := st.events[0]
			st.dropFront(1)
			st.mu.Unlock()
			if armed {
				wt.end(st)
			}
			return e
		}
		if st.timedOut {
			st.timedOut = false
			st.mu.Unlock()
			if armed {
				wt.end(st)
			}
			return Event{Kind: EventTimeout}
		}
		st.mu.Unlock()
		if d > 0 && !armed {
			wt.begin(st, d)
			armed = true
		}
		<-st.wake
	}
}

// timeout ends the current wait on st with EventTimeout; wt.mu is held, so the wait is
// still on.
func (st *Stream) timeout() {
	st.mu.Lock()
	st.timedOut = true
	st.mu.Unlock()
	st.signal()
}

func (st *Stream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// WaitTimer bounds the waits of one connection for its streams' events. It is one runtime
// timer, moved later as the waits follow each other and left running between them: a channel
// timer started and stopped for every wait, and selected on, went in and out of the runtime's
// timer heap, under its locks, several times per request.
type WaitTimer struct {
	t *time.Timer // calls fire

	// mu guards the fields that follow.
	mu    sync.Mutex
	st    *Stream   // the stream being waited for; nil between waits
	until time.Time // when the current wait runs out
	fires time.Time // when t fires; zero when it is stopped or has fired
}

// NewWaitTimer returns a WaitTimer; Stop releases it.
func NewWaitTimer() *WaitTimer {
	wt := &WaitTimer{}
	wt.t = time.AfterFunc(time.Hour, wt.fire)
	wt.t.Stop()
	return wt
}

// waitSlack is the fraction of a wait's timeout by which the timer may be due before the wait
// runs out without being moved: it then fires early once and is set again for the rest.
const waitSlack = 64

func (wt *WaitTimer) begin(st *Stream, d time.Duration) {
	now := time.Now()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.st, wt.until = st, now.Add(d)
	if wt.fires.IsZero() || wt.fires.Before(wt.until.Add(-d/waitSlack)) {
		wt.t.Reset(d)
		wt.fires = wt.until
	}
}

// end ends the wait on st and drops a timeout that came after its last event.
func (wt *WaitTimer) end(st *Stream) {
	wt.mu.Lock()
	wt.st = nil
	wt.mu.Unlock()
	st.mu.Lock()
	st.timedOut = false
	st.mu.Unlock()
}

func (wt *WaitTimer) fire() {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.fires = time.Time{}
	if wt.st == nil {
		return // between waits: the next one sets the timer again
	}
	if left := time.Until(wt.until); left > 0 {
		wt.t.Reset(left)
		wt.fires = wt.until
		return
	}
	wt.st.timeout()
}

// Stop stops the timer for good; the connection is done.
func (wt *WaitTimer) Stop() { wt.t.Stop() }

// Abandon drops every event still to come; the worker's thread is given back when it ends
// the stream. Use it after answering the client without the worker (a timeout). If the
// stream has not ended within the supervisor's StuckGrace, its worker is replaced.
func (st *Stream) Abandon() {
	time.AfterFunc(st.w.sup.cfg.StuckGrace, func() {
		if !st.isEnded() {
			st.w.sup.replace(st.w, "a timed-out request's thread did not come back")
		}
	})
	st.mu.Lock()
	st.abandoned = true
	for i := range st.events {
		st.discard(&st.events[i])
	}
	st.events = nil
	st.mu.Unlock()
}

// Interrupt asks the worker to raise an exception in the thread running the stream.
func (st *Stream) Interrupt() {
	_ = st.w.out.SendFunc(func(dst []byte) []byte { // a dead worker fails the stream anyway
		return frame.AppendHeader(dst, frame.Interrupt, 0, st.id, 0)
	})
}

// MoreData appends to dst the data events queued next, without waiting, and returns it: a
// caller holding one data event can write several chunks with one system call. last reports
// that the event after them, queued already, ends the response whole (EventEnd, no abort), so
// the caller can write what ends the body with them.
func (st *Stream) MoreData(dst []Event) (batch []Event, last bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for n < len(st.events) && st.events[n].Kind == EventData {
		dst = append(dst, st.events[n])
		n++
	}
	last = n < len(st.events) && st.events[n].Kind == EventEnd && !st.events[n].Abort
	st.dropFront(n)
	return dst, last
}

// dropFront removes the first n queued events; st.mu must be held. It shifts rather than
// reslices, so the queue keeps its array: it is short, and streams would otherwise allocate a
// new one every few events.
func (st *Stream) dropFront(n int) {
	left := copy(st.events, st.events[n:])
	clear(st.events[left:])
	st.events = st.events[:left]
}

// Pending reports whether an event is waiting, so the caller can delay a flush.
func (st *Stream) Pending() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.events) > 0
}

// SendRequest sends the request: the packed environ and the first body bytes.
func (st *Stream) SendRequest(environ, body []byte, bodyEnd bool) error {
	err := st.w.out.SendTail(func(dst []byte) []byte {
		// The worker's threads take requests in the order they are written, which is the
		// order of these calls (SendTail serialises them): seq is compared with its count.
		st.seq.Store(st.w.sent.Add(1))
		return frame.AppendRequestHead(dst, st.id, environ, len(body), bodyEnd)
	}, body)
	// After sent counts it, for the look to see it. Not only for a place in the queue: a
	// request sent to a thread the front saw free may still queue behind one that is not.
	st.w.sup.watchQueues()
	return err
}

// SendBody sends request body bytes the app asked for; end marks the last of them.
func (st *Stream) SendBody(p []byte, end bool) error {
	var flags uint8
	if end {
		flags = frame.FlagEnd
	}
	return st.w.out.SendFunc(func(dst []byte) []byte {
		return frame.Append(dst, frame.Body, flags, st.id, p)
	})
}

// Credit lets the worker send n more response body bytes.
func (st *Stream) Credit(n int) {
	_ = st.w.out.SendFunc(func(dst []byte) []byte { // a dead worker fails the stream anyway
		return frame.AppendU32(dst, frame.Credit, st.id, uint32(n))
	})
}

// Cancel tells the worker the client is gone; the stream still ends with EventEnd or
// EventFailed, which the caller must wait for.
func (st *Stream) Cancel() {
	_ = st.w.out.SendFunc(func(dst []byte) []byte { // a dead worker fails the stream anyway
		return frame.AppendHeader(dst, frame.Cancel, 0, st.id, 0)
	})
}

// Worker returns the pid of the worker process serving the stream.
func (st *Stream) Worker() int { return st.w.pid }

func (st *Stream) isAbandoned() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.abandoned
}

func (st *Stream) isEnded() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ended
}

// pooledData is the size from which body chunks are read into pooled buffers: streaming big
// responses then allocates (and faults in) no new memory per chunk, and copies once less.
const pooledData = 16 << 10

// dataBuffer is the frame reader's Alloc: big Data payloads are read straight into pooled
// buffers, which the event then carries without another copy. Pooled buffers are the chunk's
// size: apps stream chunks of one size, and a bigger buffer would hold memory no chunk uses.
func (s *Supervisor) dataBuffer(k frame.Kind, n int) []byte {
	if k != frame.Data || n < pooledData {
		return nil
	}
	return s.dataPool.Get(n)
}

// ownData returns a Data payload the event may keep: a pooled buffer from dataBuffer as it
// is, a small payload (still in the reader's buffer) copied.
func (s *Supervisor) ownData(p []byte) []byte {
	if len(p) >= pooledData {
		return p
	}
	return append([]byte(nil), p...)
}

// Recycle gives the buffer of a data event back once its bytes are written; e must not be
// used afterwards.
func (st *Stream) Recycle(e *Event) {
	switch {
	case e.shared != 0:
		st.w.chunks.Free(e.shared - 1)
		e.shared = 0
	case cap(e.Data) >= pooledData:
		st.w.sup.dataPool.Put(e.Data)
	}
	e.Data = nil
}

// discard lets go of what an event nobody will use holds: its file, its shared buffer.
func (st *Stream) discard(e *Event) {
	if e.File != nil {
		e.File.Close()
	}
	st.Recycle(e)
}
