package worker

import (
	"sync"
	"sync/atomic"
	"syscall"
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
		efd, err := frame.NewEventFD(false)
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
				q.finished(sl.s)
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
	waitIdle(t, q, n)
	return got
}

// waitIdle waits until n threads sleep in q.take.
func waitIdle(t *testing.T, q *runq, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for idleCount(q) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d threads asleep, want %d", idleCount(q), n)
		}
		time.Sleep(time.Millisecond)
	}
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

// TestRunqPumpBeforeSleep: a thread out of requests reads the socket (pump) once before it
// sleeps, and takes the requests that brings itself, without a wake-up.
func TestRunqPumpBeforeSleep(t *testing.T) {
	var q runq
	var mu sync.Mutex
	var socket []*task // what the front sent, unread
	pumps := 0
	q.pump = func() bool {
		mu.Lock()
		defer mu.Unlock()
		pumps++
		q.push(socket...)
		socket = nil
		return true
	}
	got := startSleepers(t, &q, 1) // pumped once, found nothing, asleep
	q.push(&task{id: 1})
	q.dispatch()
	a := next(t, got)
	mu.Lock()
	socket = append(socket, &task{id: 2})
	mu.Unlock()
	a.by.release <- struct{}{}
	if b := next(t, got); b.t.id != 2 || b.by != a.by {
		t.Fatalf("took task %d, want 2, read by the thread that ran out of requests", b.t.id)
	}
	if n := idleCount(&q); n != 0 {
		t.Fatalf("%d threads asleep: the thread slept before taking what the pump brought", n)
	}
	a.by.release <- struct{}{}
	waitIdle(t, &q, 1) // once the pump brought nothing
	mu.Lock()
	defer mu.Unlock()
	if pumps != 3 {
		t.Errorf("%d pumps, want 3: one each time the thread ran out of requests", pumps)
	}
}

// eventFDSet reports whether the non-blocking eventfd fd was kicked, resetting it.
// TestRunqPumpWakesBlindReader: a thread that reads requests from the socket itself while the
// reader has the duty, and leaves one waiting next to an idle thread, kicks the reader, which
// waits for a socket that thread drained. Without the kick the waiting request stays until the
// running one ends, however long it blocks.
func TestRunqPumpWakesBlindReader(t *testing.T) {
	var q runq
	var mu sync.Mutex
	var socket []*task // what the front sent, unread
	q.pump = func() bool {
		mu.Lock()
		defer mu.Unlock()
		q.push(socket...)
		socket = nil
		return true
	}
	rkick, err := frame.NewEventFD(true)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(rkick)
	q.rkick = rkick
	got := startSleepers(t, &q, 2)
	q.push(&task{id: 1})
	q.dispatch()
	a := next(t, got)
	if stalled, _ := q.progress(); stalled { // the reader goes to wait for the socket
		t.Fatal("stalled with nothing waiting")
	}
	mu.Lock()
	socket = append(socket, &task{id: 2}, &task{id: 3})
	mu.Unlock()
	a.by.release <- struct{}{} // a runs out, pumps 2 and 3, takes 2
	if b := next(t, got); b.t.id != 2 || b.by != a.by {
		t.Fatalf("took task %d, want 2 by the thread that pumped", b.t.id)
	}
	if !eventFDSet(rkick) {
		t.Fatal("task 3 waits next to an idle thread and the reader was not told")
	}
	// The reader, woken, finds it stalled and rescues it once nothing is taken for a while.
	stalled, taken := q.progress()
	if !stalled {
		t.Fatal("not stalled with a task waiting next to an idle thread")
	}
	time.Sleep(rescueAfter)
	q.rescue(taken)
	if c := next(t, got); c.t.id != 3 || c.by == a.by {
		t.Fatalf("task %d taken, want 3 by the idle thread", c.t.id)
	}
}

func eventFDSet(fd int) bool {
	var buf [8]byte
	n, _ := syscall.Read(fd, buf[:])
	return n == 8
}

// dutyQueue is a runq wired as in a worker: a socket on which each byte is a request, the
// reader's eventfd and the watchdog timer.
type dutyQueue struct {
	q     runq
	front int // the front's end of the socket
	rkick int
	ids   uint32
}

func newDutyQueue(t *testing.T) *dutyQueue {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	rkick, err := frame.NewEventFD(true)
	if err != nil {
		t.Fatal(err)
	}
	watchdog, err := newTimerFD()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after startSleepers' cleanup, which ends the threads
		for _, fd := range []int{fds[0], fds[1], rkick, watchdog} {
			syscall.Close(fd)
		}
	})
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	d := &dutyQueue{front: fds[1], rkick: rkick}
	d.q.rkick, d.q.watchdog = rkick, watchdog
	d.q.wait = func(kick int) { frame.PollReadable(-1, fds[0], kick) }
	d.q.pump = func() bool {
		var buf [64]byte
		n, _ := syscall.Read(fds[0], buf[:])
		for i := 0; i < n; i++ {
			d.ids++
			d.q.push(&task{id: d.ids})
		}
		return true
	}
	return d
}

// send writes n requests from the front.
func (d *dutyQueue) send(t *testing.T, n int) {
	t.Helper()
	if _, err := syscall.Write(d.front, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

func (d *dutyQueue) state() (duty, *slot) {
	d.q.mu.Lock()
	defer d.q.mu.Unlock()
	return d.q.duty, d.q.holder
}

// waitDuty waits until the duty is want.
func (d *dutyQueue) waitDuty(t *testing.T, want duty, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := d.state(); got == want {
			return
		}
		if time.Now().After(deadline) {
			got, _ := d.state()
			t.Fatalf("%s: duty %d, want %d", what, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRunqDuty: a thread out of requests whose calls are short takes the duty of reading the
// socket (leader); data on the socket wakes it to read and run the requests (runner); the
// watchdog gives the duty back to the reader when the runner stalls or the worker idles, a
// wait for a frame takes it from a runner, and a thread with long calls never leads.
func TestRunqDuty(t *testing.T) {
	dq := newDutyQueue(t)
	q := &dq.q
	rkick, watchdog := dq.rkick, q.watchdog
	send := func(n int) { t.Helper(); dq.send(t, n) }
	state := dq.state
	waitDuty := func(want duty, what string) { t.Helper(); dq.waitDuty(t, want, what) }

	got := startSleepers(t, q, 2)
	waitDuty(dutyLeader, "an idle thread with short calls")
	_, leader := state()
	if !eventFDSet(watchdog) {
		time.Sleep(2 * watchdogTick)
		if !eventFDSet(watchdog) {
			t.Fatal("the watchdog does not tick while a thread has the duty")
		}
	}

	send(2) // wakes the leader, which reads and runs both requests
	a := next(t, got)
	if a.t.id != 1 || a.by.s != leader {
		t.Fatalf("request %d taken by another thread than the leader", a.t.id)
	}
	if d, h := state(); d != dutyRunner || h != leader {
		t.Fatalf("duty %d after the leader took its requests, want the runner", d)
	}
	a.by.release <- struct{}{}
	b := next(t, got)
	if b.t.id != 2 || b.by != a.by {
		t.Fatal("the runner did not take the second request of its batch itself")
	}
	q.watchdogFired() // a request was taken since the last tick: the runner keeps the duty
	if d, _ := state(); d != dutyRunner {
		t.Fatal("the watchdog took the duty from a runner that makes progress")
	}
	q.mu.Lock()
	q.lastTake -= 2 * rescueAfter // as if request 2 blocked
	q.mu.Unlock()
	q.watchdogFired()
	if d, _ := state(); d != dutyReader {
		t.Fatal("the watchdog left the duty with a runner that took nothing for rescueAfter")
	}
	b.by.release <- struct{}{}
	waitDuty(dutyLeader, "the runner out of requests")

	q.watchdogFired() // nothing taken since the last tick: the worker idles
	q.watchdogFired()
	if d, _ := state(); d != dutyReader {
		t.Fatal("the watchdog keeps ticking for an idle worker")
	}

	// The thread still watches the socket: it reads and runs what comes, without the duty,
	// and takes the duty again when it runs out.
	send(1)
	c := next(t, got)
	if st, _ := state(); st != dutyReader {
		t.Fatalf("duty %d, want the reader's: the thread woke without the duty", st)
	}
	c.by.release <- struct{}{}
	waitDuty(dutyLeader, "a thread out of requests again")
	q.waitFrames(true)
	q.napping.Store(true)
	send(1)
	d := next(t, got)
	if st, _ := state(); st != dutyReader {
		t.Fatalf("duty %d while a frame is awaited, want the reader", st)
	}
	if !eventFDSet(rkick) {
		t.Error("the napping reader was not woken when the duty came back to it")
	}
	q.napping.Store(false)
	q.waitFrames(false)

	// A thread whose calls are long never leads.
	q.mu.Lock()
	for _, sl := range append(q.idle, d.by.s) {
		sl.avgCall = 2 * leadBelow
	}
	q.mu.Unlock()
	d.by.release <- struct{}{}
	waitIdle(t, q, 2)
	if st, _ := state(); st != dutyReader {
		t.Errorf("duty %d with only slow threads, want the reader", st)
	}
}

// TestRunqFrameWaitEndsRunner: a wait for a frame (the runner's own body read, or another
// thread's credit) takes the duty from the runner, which cannot read while it runs, and wakes
// the napping reader.
func TestRunqFrameWaitEndsRunner(t *testing.T) {
	dq := newDutyQueue(t)
	got := startSleepers(t, &dq.q, 1)
	dq.waitDuty(t, dutyLeader, "an idle thread with short calls")
	dq.send(t, 1)
	a := next(t, got)
	if d, _ := dq.state(); d != dutyRunner {
		t.Fatalf("duty %d while the leader runs what it read, want the runner", d)
	}
	dq.q.napping.Store(true)
	dq.q.waitFrames(true)
	if d, _ := dq.state(); d != dutyReader {
		t.Errorf("duty %d while a frame is awaited, want the reader", d)
	}
	if !eventFDSet(dq.rkick) {
		t.Error("the napping reader was not woken")
	}
	dq.q.napping.Store(false)
	dq.q.waitFrames(false)
	a.by.release <- struct{}{}
	dq.waitDuty(t, dutyLeader, "the thread out of requests")
}

// blindSource stands for the front's ring as the reader sees it when a leader reads the
// frames first: never readable. It counts the reader's waits without a time limit.
type blindSource struct {
	ring  int // an eventfd never written
	blind atomic.Int32
}

func (b *blindSource) WaitReadable(d time.Duration, also ...int) bool {
	if d < 0 {
		b.blind.Add(1)
	}
	return frame.Poll(d, append([]int{b.ring}, also...)...)&1 != 0
}

// TestRunqReaderSeesDutyTaken: a thread takes the duty while the reader waits for frames,
// reads them before the reader wakes, and blocks on one of them; the reader must still see
// the runner stall and have the others served by the idle thread. (A full test run caught
// the reader asleep through it, and requests waiting a second behind a time.sleep.)
func TestRunqReaderSeesDutyTaken(t *testing.T) {
	dq := newDutyQueue(t)
	q := &dq.q
	ring, err := frame.NewEventFD(true)
	if err != nil {
		t.Fatal(err)
	}
	src := &blindSource{ring: ring}
	q.tick = 50 * time.Millisecond // the leader keeps the duty while the test looks
	got := startSleepers(t, q, 2)
	var done atomic.Bool
	served := make(chan struct{})
	go func() {
		defer close(served)
		q.serveReader(src, q.pump, done.Load)
	}()
	t.Cleanup(func() { // before startSleepers' cleanup
		done.Store(true)
		frame.Kick(dq.rkick)
		<-served
		syscall.Close(ring)
	})

	dq.waitDuty(t, dutyReader, "the worker idles: the watchdog gives the duty back")
	deadline := time.Now().Add(5 * time.Second)
	for src.blind.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reader does not wait for frames")
		}
		time.Sleep(time.Millisecond)
	}
	dq.send(t, 1) // the former leader reads and runs it, then leads
	a := next(t, got)
	a.by.release <- struct{}{}
	dq.waitDuty(t, dutyLeader, "the thread out of requests")
	dq.send(t, 2) // the leader reads both, runs the first, and blocks in it
	b := next(t, got)
	if b.t.id != 2 || b.by != a.by {
		t.Fatalf("task %d taken, want 2 by the leader", b.t.id)
	}
	c := next(t, got)
	if c.t.id != 3 || c.by == b.by {
		t.Fatalf("task %d taken, want 3 by the idle thread", c.t.id)
	}
	b.by.release <- struct{}{}
	c.by.release <- struct{}{}
}

// TestRunqHandBack: a Recall hands back the requests no thread took, but only when every
// thread is busy and none took a request for rescueAfter; the front hears of them (send)
// before the shared count includes them, and a later take counts after them.
func TestRunqHandBack(t *testing.T) {
	shared, f, err := frame.NewSharedCounter()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { shared.Close() }) // after the threads' cleanup, which runs first
	q := &runq{shared: shared, threads: 1}
	got := startSleepers(t, q, 1)
	ts := []*task{{id: 1}, {id: 2}, {id: 3}}
	q.push(ts...)
	q.dispatch()
	running := next(t, got)
	if running.t.id != 1 {
		t.Fatalf("the thread took %d, want 1", running.t.id)
	}
	var sent []uint32
	send := func(back []*task) {
		if c := shared.Load(); c != 1 {
			t.Errorf("the shared count is %d while the hand-back is sent, want 1", c)
		}
		for _, b := range back {
			sent = append(sent, b.id)
		}
	}
	if back := q.handBack(send); back != nil { // the thread took one just now
		t.Fatalf("handed back %d requests within rescueAfter of a take", len(back))
	}
	time.Sleep(2 * rescueAfter)
	back := q.handBack(send)
	if len(back) != 2 || back[0].id != 2 || back[1].id != 3 || len(sent) != 2 || sent[0] != 2 || sent[1] != 3 {
		t.Fatalf("handed back %v (sent %v), want tasks 2 and 3", back, sent)
	}
	if c := shared.Load(); c != 3 {
		t.Fatalf("shared count %d after the hand-back, want 3", c)
	}
	if q.waiting() != 0 {
		t.Fatalf("%d requests still queued", q.waiting())
	}
	q.push(&task{id: 4})
	running.by.release <- struct{}{}
	if tk := next(t, got); tk.t.id != 4 {
		t.Fatalf("the thread took %d, want 4", tk.t.id)
	}
	if c := shared.Load(); c != 4 {
		t.Fatalf("shared count %d after the next take, want 4", c)
	}
	// With a thread idle, or between requests, nothing is handed back: it takes them soon.
	running.by.release <- struct{}{}
	waitIdle(t, q, 1)
	q.push(&task{id: 5}) // no dispatch: queued next to the idle thread
	time.Sleep(2 * rescueAfter)
	if back := q.handBack(func([]*task) { t.Error("sent a hand-back next to an idle thread") }); back != nil {
		t.Fatalf("handed back %d requests next to an idle thread", len(back))
	}
	q2 := &runq{threads: 2}
	q2.active = 1 // one thread runs a request, the other is between two, neither idle nor active
	q2.push(&task{id: 6})
	time.Sleep(2 * rescueAfter)
	if back := q2.handBack(func([]*task) { t.Error("sent a hand-back with a thread between requests") }); back != nil {
		t.Fatalf("handed back %d requests with a thread between requests", len(back))
	}
}
