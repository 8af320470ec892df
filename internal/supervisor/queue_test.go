package supervisor

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/frame"
)

// fakeWorker is a workerConn with no process behind it, ready with threads threads, whose
// tokens are in s (prefetch places in its queue).
func fakeWorker(t *testing.T, s *Supervisor, threads, prefetch int) *workerConn {
	taken, f, err := frame.NewSharedCounter()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { taken.Close() })
	w := &workerConn{sup: s, streams: map[uint32]*Stream{}, threads: threads, taken: taken}
	s.addTokens(s.tokens, w, threads)
	s.addTokens(s.spare, w, prefetch)
	return w
}

func openNow(t *testing.T, s *Supervisor, size int) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	st, err := s.Open(ctx, size)
	if err != nil {
		t.Fatalf("Open(%d): %v", size, err)
	}
	return st
}

func noOpen(t *testing.T, s *Supervisor, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if st, err := s.Open(ctx, size); err == nil {
		t.Fatalf("Open(%d) got a stream on worker %p (queued %d), want a wait", size, st.w, st.queued)
	}
}

// openLater opens a stream for a request of size bytes in the background; the stream comes
// on got once Open returns.
func openLater(t *testing.T, s *Supervisor, got chan<- *Stream, size int) {
	go func() {
		st, err := s.Open(context.Background(), size)
		if err != nil {
			t.Error(err)
		}
		got <- st
	}()
}

// stillWaiting fails the test if a stream comes on got within 30 ms.
func stillWaiting(t *testing.T, got <-chan *Stream, what string) {
	t.Helper()
	select {
	case st := <-got:
		t.Fatalf("%s: got a stream on %p (queued %d), want a wait", what, st.w, st.queued)
	case <-time.After(30 * time.Millisecond):
	}
}

// nextStream returns the next stream on got, failing the test after 5 s.
func nextStream(t *testing.T, got <-chan *Stream, what string) *Stream {
	t.Helper()
	select {
	case st := <-got:
		return st
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no stream", what)
		return nil
	}
}

// TestOpenPrefersIdleThreads: requests go to idle threads while there are any, and then to
// places in the workers' queues; a request waits until the bytes of the requests no thread of
// its worker took yet leave room for it (queueBudget), unless there are none.
func TestOpenPrefersIdleThreads(t *testing.T) {
	s := New(Config{})
	a := fakeWorker(t, s, 1, 2)
	b := fakeWorker(t, s, 1, 2)
	first, second := openNow(t, s, 100), openNow(t, s, 100)
	if first.w == second.w || len(s.spare) != 4 {
		t.Fatalf("the first two requests went to %p and %p, %d places left: want the idle threads of both workers",
			first.w, second.w, len(s.spare))
	}
	if first.queued != 100 || second.queued != 100 {
		t.Fatalf("requests sent to idle threads hold %d and %d bytes of room, want 100: their frames are in the ring until taken",
			first.queued, second.queued)
	}
	if first.w != a {
		first, second = second, first
	}
	big := openNow(t, s, queueBudget-100) // the places are taken in the order they were given
	if big.w != a || big.queued != queueBudget-100 {
		t.Fatalf("a request with the threads busy: worker %p queued %d, want %p queued %d", big.w, big.queued, a, queueBudget-100)
	}
	got := make(chan *Stream, 1)
	openLater(t, s, got, queueBudget/2) // a's second place: no room
	stillWaiting(t, got, "a request over the queue budget")
	a.finish(big.id)
	if st := nextStream(t, got, "after the room was freed"); st.w != a || st.queued != queueBudget/2 {
		t.Fatalf("after the room was freed: worker %p queued %d, want %p queued %d", st.w, st.queued, a, queueBudget/2)
	}
	b.finish(second.id) // b's thread is idle and its queue empty
	if huge := openNow(t, s, 2*queueBudget); huge.w != b || huge.queued != queueBudget {
		t.Fatal("a request bigger than the budget did not take the whole budget of an empty queue")
	}
}

// TestRoomInTurn: requests waiting for room in a worker's queue get it in the order they
// came; a small one does not pass a big one that waits.
func TestRoomInTurn(t *testing.T) {
	s := New(Config{})
	w := fakeWorker(t, s, 1, 3)
	openNow(t, s, 10) // the thread
	big := openNow(t, s, queueBudget-100)
	got := make(chan *Stream, 2)
	openLater(t, s, got, queueBudget/2)
	time.Sleep(20 * time.Millisecond) // it waits first
	openLater(t, s, got, 100)         // would fit, but comes second
	stillWaiting(t, got, "a small request behind a big one")
	w.finish(big.id) // room for both, granted together in their order
	sum := 0
	for i := 0; i < 2; i++ {
		sum += nextStream(t, got, "room for both").queued
	}
	if sum != queueBudget/2+100 {
		t.Fatalf("the two got room for %d bytes, want %d", sum, queueBudget/2+100)
	}
	// A request that gives up waiting leaves nothing behind.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := w.acquireRoom(ctx, s.stopping, queueBudget); err == nil {
		t.Fatal("room for the whole budget while requests hold some")
	}
	if len(w.roomWaiters) != 0 || w.queuedBytes != 10+queueBudget/2+100 {
		t.Fatalf("after a give-up: %d waiters, %d bytes held", len(w.roomWaiters), w.queuedBytes)
	}
}

// TestRequeueWithholdsTokens: a stream handed back does not give its token back until its
// worker finishes a stream; a worker left with none gets it back at once.
func TestRequeueWithholdsTokens(t *testing.T) {
	s := New(Config{})
	w := fakeWorker(t, s, 1, 2)
	running, q1, q2 := openNow(t, s, 10), openNow(t, s, 10), openNow(t, s, 10)
	if q1.queued == 0 || q2.queued == 0 {
		t.Fatal("the second and third requests were not queued")
	}
	w.requeue(q1.id)
	w.requeue(q2.id)
	if e := q1.Next(); e.Kind != EventRequeue {
		t.Fatalf("event %v for a stream handed back, want EventRequeue", e.Kind)
	}
	noOpen(t, s, 10) // withheld while the running stream holds every thread
	if n := w.queuedBytes; n != 10 {
		t.Fatalf("%d bytes reserved after the hand-back, want the running request's 10", n)
	}
	w.finish(running.id)
	for i := 0; i < 3; i++ {
		openNow(t, s, 10) // the thread and both places
	}
	noOpen(t, s, 10)

	s2 := New(Config{})
	w2 := fakeWorker(t, s2, 1, 1)
	r := openNow(t, s2, 10)
	w2.finish(r.id)
	openNow(t, s2, 10) // the idle thread again
	q := openNow(t, s2, 10)
	if q.queued == 0 {
		t.Fatal("the second request was not queued")
	}
	for id := range w2.streams {
		if id != q.id {
			w2.finish(id)
		}
	}
	w2.requeue(q.id) // nothing left to finish: its token comes back now, its thread's first
	if got := openNow(t, s2, 10); got.w != w2 || len(s2.tokens) != 0 || len(s2.spare) != 1 {
		t.Fatalf("after a hand-back that left the worker without a stream: worker %p, %d thread and %d place tokens left; want its idle thread taken",
			got.w, len(s2.tokens), len(s2.spare))
	}
}

// TestLookAsksHeldUpWorker: the recaller asks a worker to hand its queue back when a look
// finds requests waiting and none taken since the previous look, once per stall and again
// every askAgain looks while it lasts, and not while it makes progress.
func TestLookAsksHeldUpWorker(t *testing.T) {
	ring, mem, rw, ww, err := frame.NewRing(64<<10, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Release()
	dup := func(f *os.File) int {
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		return fd
	}
	far, err := frame.MapRing(dup(mem), dup(rw), dup(ww))
	if err != nil {
		t.Fatal(err)
	}
	defer far.Release()
	if err := ring.Started(); err != nil {
		t.Fatal(err)
	}
	taken, f, err := frame.NewSharedCounter()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer taken.Close()
	s := New(Config{Logger: slog.New(slog.DiscardHandler)})
	w := fakeWorker(t, s, 1, 2)
	w.taken.Close()
	w.taken, w.out = taken, frame.NewRingFlusher(ring)

	w.sent.Store(3)
	taken.Store(1)
	// A request waits for room too: the stall behind the queue still gets recalled.
	w.roomWaiters = []*roomWaiter{{n: queueBudget, ready: make(chan struct{})}}
	w.queuedBytes = 1
	looks := func(n int) {
		for i := 0; i < n; i++ {
			if !w.look() {
				t.Fatal("a look saw no request waiting")
			}
		}
	}
	looks(1)  // the first sight of this count
	looks(21) // stalled: asks at the first of these and the last (askAgain later)
	taken.Store(2)
	looks(1) // progress
	looks(1) // stalled again: asks
	taken.Store(3)
	if !w.look() {
		t.Fatal("a look saw nothing waiting while a request waits for room")
	}
	w.roomWaiters = nil
	if w.look() {
		t.Fatal("a look saw requests waiting when all were taken")
	}
	if err := w.out.Close(); err != nil {
		t.Fatal(err)
	}
	r := frame.NewRingReader(far)
	asks := 0
	for r.HasFrame() {
		fr, err := r.Next()
		if err != nil || fr.Kind != frame.Recall {
			t.Fatalf("frame %v, %v: want RECALL", fr.Kind, err)
		}
		asks++
	}
	if asks != 3 {
		t.Fatalf("%d recalls, want 3", asks)
	}
}

// TestRoomGivenBackAtTake: a queued request holds its room only until a thread takes it (its
// frame is then out of the ring), not until it ends; a request waiting for room gets it then.
func TestRoomGivenBackAtTake(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler)})
	w := fakeWorker(t, s, 1, 2)
	openNow(t, s, 10).seq.Store(1) // the thread's, sent first
	big := openNow(t, s, queueBudget-100)
	big.seq.Store(2) // sent second
	got := make(chan *Stream, 1)
	openLater(t, s, got, queueBudget/2)
	stillWaiting(t, got, "a request over the queue budget")
	w.taken.Store(2) // the threads took both: they run on, but their frames are read
	w.releaseTaken() // what the recaller's look and every END do
	if st := nextStream(t, got, "room after the take"); st.w != w || st.queued != queueBudget/2 {
		t.Fatalf("room after the take: worker %p queued %d", st.w, st.queued)
	}
	if w.queuedBytes != queueBudget/2 {
		t.Fatalf("%d bytes held, want %d", w.queuedBytes, queueBudget/2)
	}
}

// TestRoomTurnedAway: a request waiting for room in a worker that is retired takes a place
// in another worker instead of waiting for the retired one's queue.
func TestRoomTurnedAway(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler)})
	a := fakeWorker(t, s, 1, 1)
	openNow(t, s, 0)            // a's thread
	openNow(t, s, queueBudget)  // a's place, all of its budget
	s.spare <- a                // a second place of a's, ahead of b's
	b := fakeWorker(t, s, 0, 1) // b: one place
	got := make(chan *Stream, 1)
	openLater(t, s, got, 100)
	stillWaiting(t, got, "a's budget is all held")
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.closeRoom() // what retire does
	if st := nextStream(t, got, "turned away"); st.w != b {
		t.Fatalf("turned away, the request went to %p, want the other worker", st.w)
	}
}

// TestThreadRequestsHoldRoom: a request sent to an idle thread holds room in its worker's
// queue budget until a thread takes it, like a queued one: the ring holds both. A request
// for the next idle thread waits for that room.
func TestThreadRequestsHoldRoom(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler)})
	w := fakeWorker(t, s, 2, 0)
	first := openNow(t, s, queueBudget-100)
	first.seq.Store(1)
	got := make(chan *Stream, 1)
	openLater(t, s, got, 200)
	stillWaiting(t, got, "an idle thread's request while the ring holds the first untaken")
	w.taken.Store(1)
	w.releaseTaken()
	if st := nextStream(t, got, "room after the take"); st.w != w || st.queued != 200 || w.queuedBytes != 200 {
		t.Fatalf("room after the take: worker %p queued %d, %d bytes held", st.w, st.queued, w.queuedBytes)
	}
}
