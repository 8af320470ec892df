package supervisor

import (
	"os"
	"sync"

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
}

// Stream is one request in flight on one worker thread. Its methods are safe for concurrent
// use, but the front uses each stream from one connection goroutine.
type Stream struct {
	id uint32
	w  *workerConn

	// mu guards the fields that follow.
	mu     sync.Mutex
	events []Event
	ended  bool // EventEnd or EventFailed was queued
	wake   chan struct{}
}

func newStream(id uint32, w *workerConn) *Stream {
	return &Stream{id: id, w: w, wake: make(chan struct{}, 1)}
}

// push queues an event without ever blocking the worker's reader; response bytes in the queue
// are bounded by the stream's credit.
func (st *Stream) push(e Event) {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		if e.File != nil {
			e.File.Close()
		}
		return
	}
	if e.Kind == EventEnd || e.Kind == EventFailed {
		st.ended = true
	}
	st.events = append(st.events, e)
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// Next waits for the next event.
func (st *Stream) Next() Event {
	for {
		st.mu.Lock()
		if len(st.events) > 0 {
			e := st.events[0]
			st.events[0] = Event{}
			st.events = st.events[1:]
			st.mu.Unlock()
			return e
		}
		st.mu.Unlock()
		<-st.wake
	}
}

// Pending reports whether an event is waiting, so the caller can delay a flush.
func (st *Stream) Pending() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.events) > 0
}

// SendRequest sends the request: the packed environ and the first body bytes.
func (st *Stream) SendRequest(environ, body []byte, bodyEnd bool) error {
	return st.w.out.SendFunc(func(dst []byte) []byte {
		return frame.AppendRequest(dst, st.id, environ, body, bodyEnd)
	})
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
