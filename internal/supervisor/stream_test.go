package supervisor

import (
	"testing"
	"time"
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
