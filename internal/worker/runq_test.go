package worker

import (
	"testing"
	"time"

	"gowsgi/internal/frame"
)

// sleeper is a thread of the test: it takes tasks from q and reports them; it holds each task
// until released, like a request that blocks.
type sleeper struct {
	s       *slot
	release chan struct{}
}

type took struct {
	by *sleeper
	t  *task
}

// startSleepers starts n threads on q, all asleep when it returns. They report what they take
// on the channel returned, which is closed when all have seen q closed.
func startSleepers(t *testing.T, q *runq, n int) <-chan took {
	t.Helper()
	got := make(chan took, 16)
	done := make(chan struct{}, n)
	var all []*sleeper
	for i := 0; i < n; i++ {
		efd, err := newEventFD()
		if err != nil {
			t.Fatal(err)
		}
		sl := &sleeper{s: &slot{efd: efd}, release: make(chan struct{}, 16)}
		all = append(all, sl)
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				tk, ok := q.take(sl.s)
				if !ok {
					return
				}
				got <- took{sl, tk}
				<-sl.release
				q.finished()
			}
		}()
	}
	go func() {
		for i := 0; i < n; i++ {
			<-done
		}
		close(got)
	}()
	t.Cleanup(func() {
		q.close()
		for _, sl := range all {
			close(sl.release) // whatever each holds
		}
		for range got {
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for idleCount(q) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d threads asleep", idleCount(q), n)
		}
		time.Sleep(time.Millisecond)
	}
	return got
}

func idleCount(q *runq) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.idle)
}

func next(t *testing.T, got <-chan took) took {
	t.Helper()
	select {
	case tk := <-got:
		return tk
	case <-time.After(5 * time.Second):
		t.Fatal("no thread took a waiting task")
		return took{}
	}
}

// TestRunqBatchGoesToOneThread: a batch wakes one thread, which takes the whole batch in turn
// when its requests are quick.
func TestRunqBatchGoesToOneThread(t *testing.T) {
	var q runq
	got := startSleepers(t, &q, 4)
	q.push(&task{id: 1}, &task{id: 2}, &task{id: 3})
	q.dispatch()
	if n := idleCount(&q); n != 3 {
		t.Fatalf("%d threads still asleep after dispatching a batch, want 3", n)
	}
	first := next(t, got)
	if first.t.id != 1 {
		t.Fatalf("first task taken is %d, want 1", first.t.id)
	}
	for want := uint32(2); want <= 3; want++ {
		first.by.release <- struct{}{}
		tk := next(t, got)
		if tk.t.id != want || tk.by != first.by {
			t.Fatalf("task %d taken by another thread, or out of order (want %d)", tk.t.id, want)
		}
	}
	if n := idleCount(&q); n != 3 {
		t.Fatalf("%d threads asleep, want 3: the batch woke more than one", n)
	}
}

// TestRunqRescue: requests queued behind a thread that blocks get idle threads once they make
// no progress, and a batch that arrives while the running thread has been busy for long wakes
// another thread at once.
func TestRunqRescue(t *testing.T) {
	var q runq
	got := startSleepers(t, &q, 4)
	q.push(&task{id: 1}, &task{id: 2}, &task{id: 3})
	q.dispatch()
	next(t, got) // task 1, held: blocked
	stalled, taken := q.progress()
	if !stalled {
		t.Fatal("tasks 2 and 3 wait while threads are idle: progress should say so")
	}
	if q.rescue(taken - 1); idleCount(&q) != 3 {
		t.Fatal("rescue woke threads although a task was taken since")
	}
	if q.rescue(taken); idleCount(&q) != 1 {
		t.Fatalf("rescue without progress left %d threads asleep, want 1", idleCount(&q))
	}
	seen := map[uint32]bool{}
	for i := 0; i < 2; i++ {
		seen[next(t, got).t.id] = true
	}
	if !seen[2] || !seen[3] {
		t.Fatalf("rescued threads took %v, want 2 and 3", seen)
	}

	// Every thread but one is busy, and has been for longer than rescueAfter: a new request
	// wakes the last one at once.
	time.Sleep(2 * rescueAfter)
	q.push(&task{id: 4})
	q.dispatch()
	if tk := next(t, got); tk.t.id != 4 {
		t.Fatalf("took task %d, want 4", tk.t.id)
	}

	// Every thread is busy now: a waiting request needs no rescue (the reader need not poll),
	// since the first thread done takes it.
	q.push(&task{id: 5})
	q.dispatch()
	if stalled, _ := q.progress(); stalled {
		t.Fatal("progress reports a stall with no idle thread to wake")
	}
}

// TestRunqClose: closing wakes the idle threads, and busy ones finish the queue first.
func TestRunqClose(t *testing.T) {
	var q runq
	got := startSleepers(t, &q, 2)
	q.push(&task{id: 1}, &task{id: 2})
	q.dispatch()
	a := next(t, got)
	q.close()
	a.by.release <- struct{}{}
	if tk := next(t, got); tk.t.id != 2 {
		t.Fatalf("took task %d after close, want the queued 2", tk.t.id)
	} else {
		tk.by.release <- struct{}{}
	}
	select {
	case tk, ok := <-got:
		if ok {
			t.Fatalf("took task %d from an empty closed queue", tk.t.id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("threads did not end after close")
	}
}

// TestRequestBuffer: Request payloads get buffers of their own that tasks give back after the
// app call; other frames use the reader's buffer.
func TestRequestBuffer(t *testing.T) {
	if b := requestBuffer(frame.Body, 100); b != nil {
		t.Fatal("a Body frame got a request buffer")
	}
	b := requestBuffer(frame.Request, 10000)
	if len(b) != 10000 {
		t.Fatalf("request buffer of %d bytes, want 10000", len(b))
	}
	tk := newTask(1, b[:10], b[10:], true, b)
	tk.release()
	if tk.payload != nil || tk.env != nil || tk.body != nil {
		t.Fatal("release left the task holding the buffer")
	}
	tk.release() // twice is harmless
}
