package supervisor

import (
	"encoding/binary"
	"testing"
	"time"

	"gowsgi/internal/frame"
)

// waitFor runs st.NextTimeout(d, wt) in the background, pushing ev after delay (never when
// delay < 0), and returns what the wait gave and how long it took.
func waitFor(st *Stream, wt *WaitTimer, d time.Duration, ev EventKind, delay time.Duration) (Event, time.Duration) {
	if delay >= 0 {
		go func() {
			time.Sleep(delay)
			st.push(Event{Kind: ev})
		}()
	}
	start := time.Now()
	e := st.NextTimeout(d, wt)
	return e, time.Since(start)
}

func TestWaitTimer(t *testing.T) {
	const d = 640 * time.Millisecond // waitSlack: 10 ms
	st := newStream(1, nil)
	wt := NewWaitTimer()
	defer wt.Stop()

	// An event within the timeout ends the wait; the timer stays armed.
	if e, took := waitFor(st, wt, d, EventHead, 2*time.Millisecond); e.Kind != EventHead {
		t.Fatalf("wait with an event after 2 ms gave %v after %v, want the event", e.Kind, took)
	}
	// Begun within the slack of the first, this wait does not move the timer, which fires
	// early for it and must be set again for the rest.
	if e, took := waitFor(st, wt, d, 0, -1); e.Kind != EventTimeout || took < d || took > d+time.Second {
		t.Errorf("wait without events gave %v after %v, want EventTimeout after %v", e.Kind, took, d)
	}
	// The timer fires between waits, while nobody waits: no timeout for the next wait.
	time.Sleep(d + 100*time.Millisecond)
	if e, took := waitFor(st, wt, d, EventData, 20*time.Millisecond); e.Kind != EventData {
		t.Errorf("wait after an idle spell gave %v after %v, want the event", e.Kind, took)
	}
	if e, took := waitFor(st, wt, d, 0, -1); e.Kind != EventTimeout || took < d || took > d+time.Second {
		t.Errorf("second wait without events gave %v after %v, want EventTimeout after %v", e.Kind, took, d)
	}
}

// TestWaitTimerLateTimeout: a timeout that fires as the wait's event arrives is dropped with
// the wait; it must not end the next wait.
func TestWaitTimerLateTimeout(t *testing.T) {
	st := newStream(1, nil)
	wt := NewWaitTimer()
	defer wt.Stop()
	got := make(chan Event, 1)
	go func() { got <- st.NextTimeout(time.Hour, wt) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		wt.mu.Lock()
		waiting := wt.st == st
		if waiting {
			wt.until = time.Now().Add(-time.Second) // as if the hour had passed
		}
		wt.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("NextTimeout never armed the timer")
		}
		time.Sleep(time.Millisecond)
	}
	st.push(Event{Kind: EventHead})
	wt.fire()
	if e := <-got; e.Kind != EventHead {
		t.Fatalf("wait gave %v, want the event queued before the timeout", e.Kind)
	}
	if e, took := waitFor(st, wt, time.Hour, EventEnd, 20*time.Millisecond); e.Kind != EventEnd {
		t.Errorf("the next wait gave %v after %v, want its event: the stale timeout leaked", e.Kind, took)
	}
}

// TestStreamPooled: a stream goes back to the pool, reset, only once both its holders let go
// (the worker's table in finish, the caller in Release), in either order, and never after
// Abandon, whose stuck-thread check still looks at it.
func TestStreamPooled(t *testing.T) {
	s := New(Config{StuckGrace: time.Hour})
	w := fakeWorker(t, s, 1, 0)
	pooled := func(st *Stream) bool { return st.w == nil && st.id == 0 }

	st := openNow(t, s, 10)
	st.push(Event{Kind: EventEnd})
	w.finish(st.id)
	if pooled(st) {
		t.Fatal("pooled when the worker finished it, before the caller released it")
	}
	if e := st.Next(); e.Kind != EventEnd {
		t.Fatalf("event %v, want EventEnd", e.Kind)
	}
	st.Release()
	if !pooled(st) {
		t.Fatal("not pooled after finish and Release")
	}

	st = openNow(t, s, 10)
	st.push(Event{Kind: EventEnd})
	st.Next()
	st.Release()
	if pooled(st) {
		t.Fatal("pooled when the caller released it, while the worker's table still holds it")
	}
	w.finish(st.id)
	if !pooled(st) || len(st.events) != 0 || st.ended {
		t.Fatalf("after Release and finish: pooled %v, %d events, ended %v; want pooled and reset", pooled(st), len(st.events), st.ended)
	}

	st = openNow(t, s, 10)
	st.Abandon()
	w.finish(st.id)
	st.Release()
	if pooled(st) {
		t.Fatal("an abandoned stream was pooled")
	}
}

// TestStreamHeadBuffers: a stream's first head of a request is parsed into the stream's own
// buffers, which the next request reuses; a second head gets new ones, so the first, which
// the caller may still hold, is left as it was.
func TestStreamHeadBuffers(t *testing.T) {
	payload := func(status string) []byte {
		p := binary.LittleEndian.AppendUint64(nil, ^uint64(0))
		p = binary.LittleEndian.AppendUint16(p, 200)
		return frame.AppendPackedHead(p, []byte(status), []frame.HeadField{{Name: []byte("A"), Value: []byte(status)}})
	}
	st := newStream(1, nil)
	var first, second frame.ResponseHead
	if err := st.parseHead(payload("200 OK"), &first); err != nil {
		t.Fatal(err)
	}
	if err := st.parseHead(payload("500 Internal Server Error"), &second); err != nil {
		t.Fatal(err)
	}
	if string(first.Status) != "200 OK" || string(first.Fields[0].Value) != "200 OK" {
		t.Fatalf("a second head changed the first: %q, %q", first.Status, first.Fields[0].Value)
	}
	if string(second.Status) != "500 Internal Server Error" {
		t.Fatalf("second head: %q", second.Status)
	}
	buf := &st.head[:1][0]
	st.unref()
	st.unref() // pooled: the test goes on with it as the pool would give it out
	var next frame.ResponseHead
	if err := st.parseHead(payload("201 OK"), &next); err != nil {
		t.Fatal(err)
	}
	if string(next.Status) != "201 OK" || &st.head[:1][0] != buf {
		t.Fatalf("the next request's head: %q, own buffer reused %v", next.Status, &st.head[:1][0] == buf)
	}
}
