package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newRingPair returns the front's side of a new ring from a worker and a worker's side mapped
// from the same descriptors, as two processes would hold them.
func newRingPair(t *testing.T, size int) (front, worker *Ring) {
	t.Helper()
	return newRingPairTo(t, size, false)
}

// newRingPairTo is newRingPair for a ring to a worker (toWorker) or from one.
func newRingPairTo(t *testing.T, size int, toWorker bool) (front, worker *Ring) {
	t.Helper()
	front, mem, rw, ww, err := NewRing(size, toWorker)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(front.Release)
	dup := func(f *os.File) int {
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	worker, err = MapRing(dup(mem), dup(rw), dup(ww))
	mem.Close()
	rw.Close()
	ww.Close()
	if err == nil {
		err = front.Started()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(worker.Release)
	return front, worker
}

// TestRingStream sends numbered records of varying sizes through a ring much smaller than
// their total, so the writer waits for room and the reader sleeps, many times over: every
// byte must arrive in order, and the reader must end at the close, after the last record.
// Both ways, as gowsgi uses them: a worker writing to the front (the front's reader on Go's
// poller, the worker's writer waiting for room in poll(2)), and the front writing to a worker
// (the other way round); and each ring used backwards, where both sides wait in poll(2).
func TestRingStream(t *testing.T) {
	t.Run("to the front", func(t *testing.T) {
		front, worker := newRingPairTo(t, 4096, false)
		ringStream(t, worker, front)
	})
	t.Run("to the worker", func(t *testing.T) {
		front, worker := newRingPairTo(t, 4096, true)
		ringStream(t, front, worker)
	})
	t.Run("backwards", func(t *testing.T) {
		front, worker := newRingPairTo(t, 4096, false)
		ringStream(t, front, worker)
		front, worker = newRingPairTo(t, 4096, true)
		ringStream(t, worker, front)
	})
}

func ringStream(t *testing.T, writer, reader *Ring) {
	const records = 20000
	record := func(i int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(i))
		return append(b, bytes.Repeat([]byte{byte(i)}, i%5000)...) // some longer than the ring
	}
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < records; i++ {
			if err := writer.Append(record(i)); err != nil {
				errc <- err
				return
			}
			if i%3 == 0 {
				writer.Wake() // and sometimes publish without a wake-up
			}
		}
		writer.Wake()
		writer.Close()
		errc <- nil
	}()
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return reader.Read(p[:min(len(p), 777)]) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < records; i++ {
		want := record(i)
		if !bytes.HasPrefix(got, want) {
			t.Fatalf("record %d: damaged or missing", i)
		}
		got = got[len(want):]
	}
	if len(got) != 0 {
		t.Fatalf("%d bytes after the last record", len(got))
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestRingPublishedSurvivesWriter: what a worker published before it died, without waking the
// front, reaches the front once the front closes the ring on the worker's exit.
func TestRingPublishedSurvivesWriter(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	if err := worker.Append([]byte("finished response")); err != nil {
		t.Fatal(err)
	}
	// The worker dies here: no Wake, no Close from its side.
	front.Close()
	got, err := io.ReadAll(front)
	if err != nil || string(got) != "finished response" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestRingCloseReleasesWriter: a writer waiting for room fails once the ring is closed, and so
// does every later append.
func TestRingCloseReleasesWriter(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	errc := make(chan error, 1)
	go func() { errc <- worker.Append(make([]byte, 10000)) }()
	select {
	case err := <-errc:
		t.Fatalf("append of more than the ring holds returned %v with nobody reading", err)
	case <-time.After(50 * time.Millisecond):
	}
	front.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrRingClosed) {
			t.Fatalf("append after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer still waits after the close")
	}
	if err := worker.Append([]byte("x")); !errors.Is(err, ErrRingClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

// TestRingReaderWakes: a reader asleep on an empty ring wakes for a Wake, not for an Append
// alone.
func TestRingReaderWakes(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	got := make(chan string, 1)
	go func() {
		p := make([]byte, 64)
		n, _ := front.Read(p)
		got <- string(p[:n])
	}()
	time.Sleep(20 * time.Millisecond) // let the reader sleep
	if err := worker.Append([]byte("batch")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		t.Fatalf("the reader woke without a Wake: %q", s)
	case <-time.After(50 * time.Millisecond):
	}
	worker.Wake()
	select {
	case s := <-got:
		if s != "batch" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wake did not wake the reader")
	}
}

// TestRingSleepersAllWake: several threads of a worker may sleep waiting for the front's frames
// (a leader and the reader); like pollers of a socket, every one of them wakes once frames
// are published and woken for and nobody read them, and one that starts sleeping after
// another read the frames is woken by the next. A lost wake-up leaves a sleeper asleep,
// which the test reports.
func TestRingSleepersAllWake(t *testing.T) {
	front, worker := newRingPairTo(t, 4096, true)
	// A signal (Go preempts with SIGURG) ends a wait early, unreadable: the worker's callers
	// loop, and so does this sleeper, until the ring is readable or also[0] is.
	sleep := func(also ...int) chan bool {
		woke := make(chan bool, 1)
		go func() {
			for {
				if worker.WaitReadable(-1, also...) {
					woke <- true
					return
				}
				if len(also) > 0 && Poll(0, also[0])&1 != 0 {
					woke <- false
					return
				}
			}
		}()
		return woke
	}
	expect := func(what string, woke chan bool, want bool) {
		t.Helper()
		select {
		case r := <-woke:
			if !want || !r {
				t.Fatalf("%s: woke (readable %v), want asleep: %v", what, r, want)
			}
		case <-time.After(50 * time.Millisecond):
			if want {
				t.Fatalf("%s: still asleep", what)
			}
		}
	}
	send := func(s string) {
		t.Helper()
		if err := front.Append([]byte(s)); err != nil {
			t.Fatal(err)
		}
		front.Wake()
	}
	take := func(want string) {
		t.Helper()
		p := make([]byte, 64)
		n, err := worker.Read(p)
		if err != nil || string(p[:n]) != want {
			t.Fatalf("read %q, %v; want %q", p[:n], err, want)
		}
	}

	a, b := sleep(), sleep()
	expect("empty ring", a, false)
	send("one")
	expect("first sleeper", a, true)
	expect("second sleeper", b, true) // the first did not read: the second must see the frames too
	if Poll(0, worker.readerWake)&1 == 0 {
		t.Fatal("the wake-up was taken before the frames were read: a later sleeper would miss them")
	}
	if !worker.WaitReadable(-1) {
		t.Fatal("a wait on unread frames did not return at once")
	}
	take("one")
	if Poll(0, worker.readerWake)&1 != 0 {
		t.Fatal("the wake-up is still set after its frames were read: the next sleep would wake for nothing")
	}
	c := sleep() // after the others took the wake-up and the frames
	expect("drained ring", c, false)
	send("two")
	expect("later sleeper", c, true)
	take("two")
	// A wait with a limit ends without frames; a wait on another descriptor ends with it.
	if worker.WaitReadable(time.Millisecond) {
		t.Fatal("an empty ring is readable")
	}
	efd, err := NewEventFD(true)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(efd)
	d := sleep(efd)
	expect("other descriptor not set", d, false)
	Kick(efd)
	select {
	case r := <-d:
		if r {
			t.Fatal("the ring is readable after a kick of another descriptor")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a kick of another descriptor did not end the wait")
	}
}

// TestRingSleepersStress: threads wait and read in turns, the way the worker's leader and
// reader do, while the front publishes records one by one: every record must arrive, and no
// sleeper may be left asleep with records unread.
func TestRingSleepersStress(t *testing.T) {
	front, worker := newRingPairTo(t, 4096, true)
	const records, sleepers = 20000, 3
	var mu sync.Mutex // the worker's rmu: one reader at a time
	got := make([]byte, 0, records*4)
	var done atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < sleepers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 1024)
			for !done.Load() {
				if !worker.WaitReadable(-1) {
					continue
				}
				if !mu.TryLock() {
					continue
				}
				for worker.Readable() && !done.Load() {
					n, err := worker.Read(p)
					if err != nil {
						done.Store(true)
						break
					}
					got = append(got, p[:n]...)
					if len(got) == records*4 {
						done.Store(true)
					}
				}
				mu.Unlock()
			}
		}()
	}
	complete := make(chan struct{})
	go func() { wg.Wait(); close(complete) }()
	for i := 0; i < records; i++ {
		if err := front.Append(binary.LittleEndian.AppendUint32(nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
		front.Wake()
		if i%1000 == 0 {
			time.Sleep(time.Millisecond) // let every sleeper fall asleep
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for !done.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	n := len(got)
	mu.Unlock()
	front.Close() // lets the sleepers go
	<-complete
	if n != records*4 {
		t.Fatalf("sleepers left asleep with %d of %d bytes read", n, records*4)
	}
	for i := 0; i < records; i++ {
		if v := binary.LittleEndian.Uint32(got[i*4:]); v != uint32(i) {
			t.Fatalf("record %d reads %d", i, v)
		}
	}
}

// TestRingPeerGone: on the side that mapped a ring to it, the end of the socket to the writer
// ends the stream once what was published is read, even though nobody closed the ring (the
// front died).
func TestRingPeerGone(t *testing.T) {
	front, worker := newRingPairTo(t, 4096, true)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	worker.WatchPeer(fds[0])
	if err := front.Append([]byte("last")); err != nil {
		t.Fatal(err)
	}
	woke := make(chan bool, 1)
	go func() {
		p := make([]byte, 4)
		if _, err := io.ReadFull(worker, p); err != nil || string(p) != "last" {
			woke <- false
			return
		}
		_, err := worker.Read(p) // sleeps: nothing more, no close
		woke <- err == io.EOF
	}()
	select {
	case <-woke:
		t.Fatal("the reader did not wait for more")
	case <-time.After(50 * time.Millisecond):
	}
	syscall.Close(fds[1]) // the front is gone
	select {
	case ok := <-woke:
		if !ok {
			t.Fatal("the published bytes were lost, or the read did not end with io.EOF")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader still waits after the peer's end")
	}
	if !worker.Readable() {
		t.Fatal("a ring whose peer is gone is not Readable: nobody would read its end")
	}
}

func TestRingBadSetup(t *testing.T) {
	if _, _, _, _, err := NewRing(5000, false); err == nil {
		t.Error("a ring of 5000 bytes was made")
	}
	f, err := SharedFile("not-a-ring")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8192); err != nil {
		t.Fatal(err)
	}
	fd, _ := syscall.Dup(int(f.Fd()))
	if _, err := MapRing(fd, -1, -1); err == nil {
		t.Error("a file without a ring header was mapped")
	}
}

// TestRingWriter: a ring Writer's sends wake a reader asleep on the ring, and a descriptor
// goes through the socket ahead of its File frame in the ring.
func TestRingWriter(t *testing.T) {
	front, worker := newRingPair(t, 1<<16)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	workerSock := os.NewFile(uintptr(fds[0]), "worker")
	defer workerSock.Close()
	fc, err := net.FileConn(os.NewFile(uintptr(fds[1]), "front"))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	w := NewRingWriter(worker, workerSock)

	frames := make(chan Frame, 16)
	go func() {
		r := NewReader(bufio.NewReader(front))
		for {
			f, err := r.Next()
			if err != nil {
				close(frames)
				return
			}
			f.Payload = append([]byte(nil), f.Payload...)
			frames <- f
		}
	}()
	expect := func(what string, stream uint32) {
		t.Helper()
		select {
		case f := <-frames:
			if f.Stream != stream {
				t.Fatalf("%s: frame of stream %d, want %d", what, f.Stream, stream)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no frame", what)
		}
	}
	end := func(stream uint32) func([]byte) []byte {
		return func(dst []byte) []byte { return AppendHeader(dst, End, 0, stream, 0) }
	}

	for i := uint32(1); i <= 3; i++ {
		time.Sleep(20 * time.Millisecond) // the reader sleeps
		if err := w.SendFunc(end(i)); err != nil {
			t.Fatal(err)
		}
		expect("send to a sleeping reader", i)
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if err := w.SendFD(AppendFileFrame(nil, 4, 0, 10), int(pr.Fd())); err != nil {
		t.Fatal(err)
	}
	expect("file frame", 4)
	fr := NewFDReader(fc.(*net.UnixConn))
	if _, err := fr.Read(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	fd := fr.TakeFD()
	if fd < 0 {
		t.Fatal("no descriptor came through the socket with the file frame")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("descriptor %d is not the pipe: %v", fd, err)
	}
	syscall.Close(fd)
}

// FuzzRingReader: a Reader over a ring decodes exactly what a Reader over a buffered stream
// of the same bytes decodes, frame by frame and down to the error, wherever in the ring the
// bytes start (frames wrap around its end), and HasFrame says yes exactly when the next
// frame is whole.
func FuzzRingReader(f *testing.F) {
	f.Add(uint16(0), AppendRequest(nil, 1, []byte("k"), []byte("v"), false))
	f.Add(uint16(4090), Append(Append(nil, Data, 1, 7, bytes.Repeat([]byte("x"), 300)), End, 0, 7, nil))
	f.Add(uint16(4093), AppendU32(nil, Credit, 3, 65536)[:12])
	f.Add(uint16(4095), Append(nil, Data, 0, 5, bytes.Repeat([]byte("y"), 700)))
	f.Add(uint16(100), []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, at uint16, b []byte) {
		const size = 4096
		front, worker := newRingPair(t, size)
		if len(b) > size {
			b = b[:size]
		}
		// Move both positions to at, so that the bytes wrap where the input says.
		skip := make([]byte, int(at)%size)
		if err := worker.Append(skip); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(front, skip); err != nil {
			t.Fatal(err)
		}
		if err := worker.Append(b); err != nil {
			t.Fatal(err)
		}
		worker.Close()

		want := NewReader(bufio.NewReader(bytes.NewReader(b)))
		got := NewRingReader(front)
		rest := b
		for {
			whole := len(rest) >= HeaderSize && len(rest) >= HeaderSize+int(binary.LittleEndian.Uint32(rest))
			if got.HasFrame() != whole {
				t.Fatalf("HasFrame %v with %d bytes left (%x...)", !whole, len(rest), rest[:min(len(rest), HeaderSize)])
			}
			wf, werr := want.Next()
			gf, gerr := got.Next()
			if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
				t.Fatalf("ring reader: %v, buffered reader: %v", gerr, werr)
			}
			if werr != nil {
				return
			}
			if gf.Kind != wf.Kind || gf.Flags != wf.Flags || gf.Stream != wf.Stream || !bytes.Equal(gf.Payload, wf.Payload) {
				t.Fatalf("ring reader: %v %d %d %q, buffered reader: %v %d %d %q",
					gf.Kind, gf.Flags, gf.Stream, gf.Payload, wf.Kind, wf.Flags, wf.Stream, wf.Payload)
			}
			rest = rest[HeaderSize+len(wf.Payload):]
		}
	})
}

// TestRingReaderPartial: a frame published in pieces, across the ring's end, is not whole
// until its last byte is published, and then reads as sent.
func TestRingReaderPartial(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	skip := make([]byte, 4096-1) // the next frame's length straddles the end
	worker.Append(skip)
	io.ReadFull(front, skip)
	r := NewRingReader(front)
	payload := bytes.Repeat([]byte("payload "), 40) // 320 bytes: two bytes of length
	fr := Append(nil, Data, 0, 9, payload)
	for i := range fr {
		if r.HasFrame() {
			t.Fatalf("HasFrame with %d of %d bytes published", i, len(fr))
		}
		if err := worker.Append(fr[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if !r.HasFrame() {
		t.Fatal("no HasFrame with the whole frame published")
	}
	f, err := r.Next()
	if err != nil || f.Kind != Data || f.Stream != 9 || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("read %v %d %q %v", f.Kind, f.Stream, f.Payload, err)
	}
}
