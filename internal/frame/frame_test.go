package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"
)

func TestRoundTrip(t *testing.T) {
	var b []byte
	b = AppendRequest(b, 7, []byte("env"), []byte("body"), true)
	b = AppendU32(b, Credit, 7, 65536)
	b = Append(b, Data, 0, 9, []byte("chunk"))
	b = AppendHeader(b, End, FlagAbort, 9, 0)
	b = AppendReady(b, ReadyInfo{Version: Version, Threads: 4, Pid: 123, Python: "Python 3.11"})
	b = AppendFileFrame(b, 3, 10, 20)
	r := NewReader(bufio.NewReader(bytes.NewReader(b)))

	f, err := r.Next()
	if err != nil || f.Kind != Request || f.Stream != 7 || f.Flags != FlagEnd {
		t.Fatalf("request frame: got %+v, %v", f, err)
	}
	env, body, err := ParseRequest(f.Payload)
	if err != nil || string(env) != "env" || string(body) != "body" {
		t.Fatalf("ParseRequest: got %q %q %v", env, body, err)
	}
	f, _ = r.Next()
	if n, err := f.U32(); err != nil || f.Kind != Credit || n != 65536 {
		t.Fatalf("credit: got %+v %d %v", f, n, err)
	}
	f, _ = r.Next()
	if f.Kind != Data || string(f.Payload) != "chunk" || f.Stream != 9 {
		t.Fatalf("data: got %+v", f)
	}
	f, _ = r.Next()
	if f.Kind != End || f.Flags != FlagAbort || len(f.Payload) != 0 {
		t.Fatalf("end: got %+v", f)
	}
	f, _ = r.Next()
	info, err := ParseReady(f.Payload)
	if err != nil || info.Threads != 4 || info.Pid != 123 || info.Python != "Python 3.11" || info.Version != Version {
		t.Fatalf("ready: got %+v %v", info, err)
	}
	f, _ = r.Next()
	off, n, err := ParseFileFrame(f.Payload)
	if err != nil || off != 10 || n != 20 {
		t.Fatalf("file: got %d %d %v", off, n, err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestTruncated(t *testing.T) {
	full := Append(nil, Data, 0, 1, []byte("hello"))
	for cut := 1; cut < len(full); cut++ {
		r := NewReader(bufio.NewReader(bytes.NewReader(full[:cut])))
		_, err := r.Next()
		if err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
		if cut > HeaderSize && err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d inside the payload: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestTooLarge(t *testing.T) {
	b := AppendHeader(nil, Data, 0, 1, MaxPayload+1)
	_, err := NewReader(bufio.NewReader(bytes.NewReader(b))).Next()
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestPackedHead(t *testing.T) {
	fields := []HeadField{{[]byte("Content-Type"), []byte("text/plain")}, {[]byte("X-A"), []byte("")}}
	packed := AppendPackedHead(nil, []byte("200 OK"), fields)
	b := AppendHeadFrame(nil, 5, 200, 13, packed)
	f, err := NewReader(bufio.NewReader(bytes.NewReader(b))).Next()
	if err != nil {
		t.Fatal(err)
	}
	var h ResponseHead
	if err := ParseHeadFrame(f.Payload, &h); err != nil {
		t.Fatal(err)
	}
	if string(h.Status) != "200 OK" || h.Code != 200 || h.Length != 13 || len(h.Fields) != 2 ||
		string(h.Fields[0].Name) != "Content-Type" || string(h.Fields[1].Value) != "" {
		t.Fatalf("got %+v", h)
	}
	for cut := 0; cut < len(packed); cut++ {
		var h ResponseHead
		if err := ParsePackedHead(packed[:cut], &h); err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
	}
}

// TestRingFlusher: the front's Writer delivers what many goroutines send through its flusher,
// each sender's frames in order, flushes what is pending on Close, and refuses sends after it,
// and descriptors (it has no socket for them).
func TestRingFlusher(t *testing.T) {
	front, worker := newRingPairTo(t, 4096, true) // small: the flusher waits for room
	w := NewRingFlusher(front)
	const senders, each = 8, 500
	got := readInOrder(worker, senders, each, nil)
	sendConcurrently(t, senders, each, func(g, i int) error {
		return w.Send(Append(nil, Data, 0, uint32(g), binary.LittleEndian.AppendUint32(nil, uint32(i))))
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	waitInOrder(t, got)
	if err := w.Send(AppendHeader(nil, End, 0, 1, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("send after Close: %v", err)
	}
	if err := w.SendFD(AppendFileFrame(nil, 1, 0, 0), 0); err == nil {
		t.Error("a descriptor was sent through a Writer without a socket")
	}
}

// TestRingFlusherTail: frames sent with SendTail, whose big tails the sender copies into the
// ring itself, keep their place among those the flusher writes, in the order their fn ran (the
// front numbers its requests there, and the worker's count of taken requests relies on it),
// and the reader is woken for them.
func TestRingFlusherTail(t *testing.T) {
	front, worker := newRingPairTo(t, 64<<10, true) // small: senders wait for room
	w := NewRingFlusher(front)
	const senders, each = 8, 300
	var mu sync.Mutex // guards seq, as the front's sent counter is guarded by the Writer's order
	seq := 0
	numbered := func(dst []byte, g, tail int) []byte {
		mu.Lock()
		defer mu.Unlock()
		dst = AppendHeader(dst, Data, 0, uint32(g), 4+tail)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(seq))
		seq++
		return dst
	}
	got := make(chan error, 1)
	go func() {
		br := bufio.NewReader(worker)
		fr := NewReader(br)
		var failed error
		for n := 0; n < senders*each+1; n++ {
			f, err := fr.Next()
			if err != nil {
				got <- fmt.Errorf("frame %d: %w", n, err)
				_, _ = io.Copy(io.Discard, br) // let the senders finish
				return
			}
			i := int(binary.LittleEndian.Uint32(f.Payload))
			tail := f.Payload[4:]
			switch {
			case failed != nil: // read on, so that the senders finish
			case i != n:
				failed = fmt.Errorf("frame %d arrived as the %dth", i, n)
			case len(tail) > 0 && !bytes.Equal(tail, bytes.Repeat([]byte{byte(f.Stream)}, len(tail))):
				failed = fmt.Errorf("frame %d: its tail arrived garbled", i)
			}
		}
		got <- failed
	}()
	sendConcurrently(t, senders, each, func(g, i int) error {
		if i%3 == 0 {
			return w.SendFunc(func(dst []byte) []byte { return numbered(dst, g, 0) })
		}
		tail := bytes.Repeat([]byte{byte(g)}, bigData+i*(i%2)) // big ones, and one below
		if i%3 == 2 {
			tail = tail[:bigData-1]
		}
		return w.SendTail(func(dst []byte) []byte { return numbered(dst, g, len(tail)) }, tail)
	})
	// A last one alone, when the reader has gone to sleep: only the flusher wakes it.
	time.Sleep(50 * time.Millisecond)
	tail := bytes.Repeat([]byte{1}, bigData)
	if err := w.SendTail(func(dst []byte) []byte { return numbered(dst, 1, len(tail)) }, tail); err != nil {
		t.Fatal(err)
	}
	waitInOrder(t, got) // before Close, which would wake the reader anyway
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRingWriterConcurrent: a worker's Writer loses and reorders nothing when many threads
// send at once through a small ring, interleaved with descriptors, and each File frame finds
// its descriptor come through the socket, as the front's readLoop expects (it takes the
// descriptor sockReader read for each File frame, in order).
func TestRingWriterConcurrent(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := os.NewFile(uintptr(fds[0]), "a")
	bf := os.NewFile(uintptr(fds[1]), "b")
	bc, err := net.FileConn(bf)
	bf.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := bc.(*net.UnixConn)
	defer a.Close()
	defer b.Close()
	tmp, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	descs := make(chan int, 64)
	go func() { // the front's sockReader
		defer close(descs)
		fr := NewFDReader(b)
		var buf [64]byte
		for {
			_, err := fr.Read(buf[:])
			for fd := fr.TakeFD(); fd >= 0; fd = fr.TakeFD() {
				descs <- fd
			}
			if err != nil {
				return
			}
		}
	}()
	const senders, each = 8, 2000
	w := NewRingWriter(worker, a)
	got := readInOrder(front, senders, each, func() error {
		select {
		case fd := <-descs:
			syscall.Close(fd)
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("file frame without its descriptor")
		}
	})
	numbered := func(i, size int) []byte {
		return binary.LittleEndian.AppendUint32(bytes.Repeat([]byte{byte(i)}, size-4)[:0:0], uint32(i))
	}
	sendConcurrently(t, senders, each, func(g, i int) error {
		switch {
		case i%500 == 0:
			return w.SendFD(AppendFileFrame(nil, uint32(g), int64(i), 0), int(tmp.Fd()))
		case i%7 == 3: // frame i through the pending buffer, then i+1 big, straight into the ring
			return w.SendData(func(dst []byte) []byte {
				return Append(dst, Data, 0, uint32(g), numbered(i, 4))
			}, uint32(g), append(numbered(i+1, 4), bytes.Repeat([]byte{byte(i + 1)}, bigData+i)...), false)
		case i%7 == 4 && (i-1)%500 != 0:
			return nil // sent with i-1
		}
		return w.Send(Append(nil, Data, 0, uint32(g), numbered(i, 4)))
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	waitInOrder(t, got)
}

// TestRingWriterSync: a direct Writer's send returns while another sender holds the ring,
// leaving its frames to that one; Sync waits until they are in the ring, also when that
// sender has taken them and is still writing them, and so does SendNow.
func TestRingWriterSync(t *testing.T) {
	front, worker := newRingPair(t, 4096)
	w := NewRingWriter(worker, nil)
	frames := Append(nil, Data, 0, 7, []byte("done"))
	// blocked runs sync while another sender holds the ring, which it lets go of after
	// checking that sync still waits; sync's error is returned.
	blocked := func(what string, sync func() error) error {
		t.Helper()
		synced := make(chan error, 1)
		go func() { synced <- sync() }()
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-synced:
			t.Fatalf("returned (%v) %s", err, what)
		default:
		}
		w.wmu.Unlock() // that sender lets go without looking for more, as if it had just missed them
		return <-synced
	}

	w.wmu.Lock() // another sender is writing
	if err := w.Send(frames); err != nil {
		t.Fatal(err)
	}
	if n := front.Buffered(); n != 0 {
		t.Fatalf("%d bytes in the ring while another sender writes", n)
	}
	if err := blocked("Sync with the frames still pending", w.Sync); err != nil {
		t.Fatal(err)
	}
	if n := front.Buffered(); n != len(frames) {
		t.Fatalf("%d bytes in the ring after Sync, want %d", n, len(frames))
	}
	if err := w.Sync(); err != nil { // nothing pending
		t.Fatal(err)
	}

	// The other sender took the pending frames and is writing them into the ring.
	w.wmu.Lock()
	w.mu.Lock()
	w.writing = true
	w.mu.Unlock()
	if err := blocked("Sync while another sender writes what it took", w.Sync); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.writing = false
	w.mu.Unlock()

	w.wmu.Lock()
	before := front.Buffered()
	if err := blocked("SendNow while another sender writes", func() error { return w.SendNow(frames) }); err != nil {
		t.Fatal(err)
	}
	if n := front.Buffered() - before; n != len(frames) {
		t.Fatalf("SendNow returned with %d bytes more in the ring, want %d", n, len(frames))
	}
}

// sendConcurrently runs senders goroutines that each call send with their number and 0 to
// each-1, and waits for them.
func sendConcurrently(t *testing.T, senders, each int, send func(g, i int) error) {
	var wg sync.WaitGroup
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := send(g, i); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

// readInOrder reads senders*each frames from r in the background, each sender's (its stream)
// numbered 0 to each-1 in its payload, or a File frame's offset, for which onFile is called;
// the channel gets the first disorder or error, or nil.
func readInOrder(r io.Reader, senders, each int, onFile func() error) <-chan error {
	got := make(chan error, 1)
	go func() {
		br := bufio.NewReader(r)
		fr := NewReader(br)
		fail := func(err error) {
			got <- err
			// Let the senders finish; only after a failure, since the test's cleanup unmaps
			// the ring under a reader still at it, which may then read the next test's ring.
			_, _ = io.Copy(io.Discard, br)
		}
		next := make([]int, senders)
		for n := 0; n < senders*each; n++ {
			f, err := fr.Next()
			if err != nil {
				fail(fmt.Errorf("frame %d: %w", n, err))
				return
			}
			var i int
			if f.Kind == File {
				off, _, _ := ParseFileFrame(f.Payload)
				i = int(off)
				if err := onFile(); err != nil {
					fail(err)
					return
				}
			} else {
				i = int(binary.LittleEndian.Uint32(f.Payload))
				if len(f.Payload) > 4 && !bytes.Equal(f.Payload[4:], bytes.Repeat([]byte{byte(i)}, len(f.Payload)-4)) {
					fail(fmt.Errorf("sender %d: frame %d of %d bytes arrived garbled", f.Stream, i, len(f.Payload)))
					return
				}
			}
			if i != next[f.Stream] {
				fail(fmt.Errorf("sender %d: frame %d arrived, want %d", f.Stream, i, next[f.Stream]))
				return
			}
			next[f.Stream]++
		}
		got <- nil
	}()
	return got
}

func waitInOrder(t *testing.T, got <-chan error) {
	t.Helper()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the frames sent did not all arrive")
	}
}

func FuzzReader(f *testing.F) {
	f.Add(AppendRequest(nil, 1, []byte("k"), []byte("v"), false))
	f.Add(AppendHeadFrame(nil, 1, 200, -1, AppendPackedHead(nil, []byte("200 OK"), []HeadField{{[]byte("A"), []byte("b")}})))
	f.Add(AppendReady(nil, ReadyInfo{Version: 1, Threads: 2}))
	f.Add(AppendFileFrame(nil, 1, 2, 3))
	f.Add(AppendDataShared(nil, 1, 2, 3))
	f.Add(AppendDataHeld(nil, 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			fr, err := r.Next()
			if err != nil {
				return
			}
			if len(fr.Payload) > MaxPayload {
				t.Fatalf("payload of %d bytes passed the limit", len(fr.Payload))
			}
			// Every decoder must fail cleanly on anything.
			ParseRequest(fr.Payload)
			ParseReady(fr.Payload)
			ParseFileFrame(fr.Payload)
			if i, n, err := ParseDataShared(fr.Payload); err == nil && !bytes.Equal(AppendDataShared(nil, fr.Stream, i, n)[HeaderSize:], fr.Payload) {
				t.Fatalf("shared data frame does not round-trip")
			}
			if k, off, n, err := ParseDataHeld(fr.Payload); err == nil && !bytes.Equal(AppendDataHeld(nil, fr.Stream, k, off, n)[HeaderSize:], fr.Payload) {
				t.Fatalf("held data frame does not round-trip")
			}
			fr.U32()
			var h ResponseHead
			if ParseHeadFrame(fr.Payload, &h) == nil {
				re := AppendPackedHead(nil, h.Status, h.Fields)
				if !bytes.Equal(re, fr.Payload[10:]) {
					t.Fatalf("packed head does not round-trip")
				}
			}
		}
	})
}

func TestHasFrame(t *testing.T) {
	full := Append(nil, Data, 0, 1, []byte("hello"))
	// One byte at a time: HasFrame must never block, and must say yes only for whole frames.
	br := bufio.NewReader(iotest.OneByteReader(bytes.NewReader(append(full, full...))))
	r := NewReader(br)
	if r.HasFrame() {
		t.Fatal("HasFrame with nothing buffered")
	}
	br.Peek(HeaderSize + 2)
	if r.HasFrame() {
		t.Fatal("HasFrame with a partial frame buffered")
	}
	br.Peek(len(full))
	if !r.HasFrame() {
		t.Fatal("no HasFrame with a whole frame buffered")
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
}

func TestReaderAlloc(t *testing.T) {
	b := Append(nil, Data, 0, 1, []byte("big payload"))
	b = Append(b, Credit, 0, 1, []byte{1, 0, 0, 0})
	r := NewReader(bufio.NewReader(bytes.NewReader(b)))
	var mine []byte
	r.Alloc = func(k Kind, n int) []byte {
		if k != Data {
			return nil
		}
		mine = make([]byte, n)
		return mine
	}
	f, err := r.Next()
	if err != nil || string(f.Payload) != "big payload" || &f.Payload[0] != &mine[0] {
		t.Fatalf("data frame not read into the allocated buffer: %q %v", f.Payload, err)
	}
	f, err = r.Next()
	if n, _ := f.U32(); err != nil || f.Kind != Credit || n != 1 {
		t.Fatalf("credit frame: %+v %v", f, err)
	}
}

// handOver returns f's file as a worker receives it: a descriptor of its own, f closed.
func handOver(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return fd
}

// TestSharedCounter: what one mapping stores, another mapping of the same file (as in the
// worker process) sees, and a file that is not a counter is refused.
func TestSharedCounter(t *testing.T) {
	c, f, err := NewSharedCounter()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := MapSharedCounter(handOver(t, f))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Store(41)
	other.Store(other.Load() + 1)
	if got := c.Load(); got != 42 {
		t.Fatalf("front sees %d, want 42", got)
	}
	empty, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MapSharedCounter(handOver(t, empty)); err == nil {
		t.Fatal("an empty file was mapped as a counter")
	}
}

// TestBufPool: buffers have the length asked for and at least MinCap of capacity.
func TestBufPool(t *testing.T) {
	p := BufPool{MinCap: 4096}
	b := p.Get(100)
	if len(b) != 100 || cap(b) < 4096 {
		t.Fatalf("Get(100): len %d cap %d, want 100 and at least 4096", len(b), cap(b))
	}
	p.Put(b)
	if b := p.Get(10000); len(b) != 10000 {
		t.Fatalf("Get(10000): len %d", len(b))
	}
	var exact BufPool
	if b := exact.Get(300); len(b) != 300 || cap(b) != 300 {
		t.Fatalf("zero BufPool Get(300): len %d cap %d, want exactly 300", len(b), cap(b))
	}
}

func TestSharedChunks(t *testing.T) {
	maps := func() int {
		b, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "gowsgi-chunks")
	}
	// Workers never unmap theirs, so other tests (and earlier runs of this one, with
	// -count) leave mappings behind: count from here.
	before := maps()
	front, f, err := NewSharedChunks(ChunksLayout{Buffers: 4, Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	worker, err := MapSharedChunks(handOver(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if worker.Count() != 4 || worker.Size() != 1000 {
		t.Fatalf("worker sees %d buffers of %d bytes, want 4 of 1000", worker.Count(), worker.Size())
	}
	// The lowest free buffer first, until all are taken.
	if z, y := worker.Claim(), worker.Claim(); z != 0 || y != 1 {
		t.Fatalf("first claims: %d, %d; want 0, 1", z, y)
	}
	a, b := worker.Claim(), worker.Claim()
	if a != 2 || b != 3 || worker.Claim() != -1 {
		t.Fatalf("claims: %d, %d, then a fifth", a, b)
	}
	worker.Release(b) // claimed, never named in a frame
	if got := worker.Claim(); got != b {
		t.Fatalf("after Release(%d) the worker claims %d", b, got)
	}
	copy(worker.Buffer(a), "hello")
	p, err := front.Lend(a, 5)
	if err != nil || string(p) != "hello" {
		t.Fatalf("front reads %q, %v", p, err)
	}
	if _, err := front.Lend(a, 5); err == nil {
		t.Error("a buffer lent twice")
	}
	for _, bad := range [][2]int{{4, 1}, {-1, 1}, {0, 1001}} {
		if _, err := front.Lend(bad[0], bad[1]); err == nil {
			t.Errorf("Lend(%d, %d) accepted", bad[0], bad[1])
		}
	}
	front.Free(a)
	if got := worker.Claim(); got != a {
		t.Fatalf("after Free(%d) the worker claims %d", a, got)
	}
	// The front's mapping outlives Close while a buffer is lent.
	if _, err := front.Lend(b, 3); err != nil {
		t.Fatal(err)
	}
	front.Close()
	front.Close()                               // idempotent
	if _, err := front.Lend(a, 1); err != nil { // still mapped
		t.Fatal(err)
	}
	front.Free(a)
	front.Free(a)                     // a second Free of one Lend must not unmap under b's holder
	if n := maps() - before; n != 2 { // the front's and the worker's, in this one process
		t.Fatalf("%d new mappings while a buffer is lent, want 2", n)
	}
	front.Free(b)
	if n := maps() - before; n != 1 {
		t.Fatalf("%d new mappings after the last Free, want 1 (the worker's)", n)
	}

	short, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := MapSharedChunks(handOver(t, short)); err == nil {
		t.Error("a file of 100 zero bytes mapped as shared chunks")
	}
}

// sharedPair makes shared chunks as the front does and maps them as the worker does; the
// front's side is closed when the test ends.
func sharedPair(t *testing.T, l ChunksLayout) (front, worker *SharedChunks) {
	t.Helper()
	front, f, err := NewSharedChunks(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(front.Close)
	worker, err = MapSharedChunks(handOver(t, f))
	if err != nil {
		t.Fatal(err)
	}
	return front, worker
}

// Holds: the front lends the arena's bytes a DataHeld frame names, within bounds and once per
// hold, and freeing clears the hold's state and moves the count the worker watches; freeing
// a buffer moves neither. Free takes the index LendHeld returned, past the buffers'.
func TestSharedChunksHeld(t *testing.T) {
	front, worker := sharedPair(t, ChunksLayout{Buffers: 2, Size: 1000, Holds: 3, ArenaPages: 2})
	arena, held := worker.Arena(), worker.HeldStates()
	if len(arena) != 2*4096 || len(held) != 3 || worker.Count() != 2 {
		t.Fatalf("worker sees an arena of %d bytes, %d holds, %d buffers", len(arena), len(held), worker.Count())
	}
	if addr := uintptr(unsafe.Pointer(&arena[0])); addr%4096 != 0 {
		t.Fatalf("the arena starts at %#x, not on a page", addr)
	}
	copy(arena[5000:], "held bytes")
	held[1].Store(1)
	p, i, err := front.LendHeld(1, 5000, 10)
	if err != nil || string(p) != "held bytes" || i != 2+1 {
		t.Fatalf("LendHeld: %q, index %d, %v", p, i, err)
	}
	if _, _, err := front.LendHeld(1, 0, 1); err == nil {
		t.Error("a hold lent twice")
	}
	for _, bad := range [][3]int{{3, 0, 1}, {-1, 0, 1}, {0, 8192, 1}, {0, 8000, 193}, {0, -1, 1}, {0, 1, -1}} {
		if _, _, err := front.LendHeld(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("LendHeld(%d, %d, %d) accepted", bad[0], bad[1], bad[2])
		}
	}
	b := worker.Claim()
	if _, err := front.Lend(b, 1); err != nil {
		t.Fatal(err)
	}
	front.Free(b)
	if n := worker.Freed().Load(); n != 0 || held[1].Load() != 1 {
		t.Fatalf("freeing a buffer: count %d, hold state %d", n, held[1].Load())
	}
	front.Free(i)
	front.Free(i) // only the first Free of a Lend counts
	if n := worker.Freed().Load(); n != 1 || held[1].Load() != 0 {
		t.Fatalf("after Free of the hold: count %d, state %d; want 1, 0", n, held[1].Load())
	}
	held[0].Store(1)
	worker.ReleaseHeld(0) // the worker's own, for a chunk it did not send
	if n := worker.Freed().Load(); n != 2 || held[0].Load() != 0 {
		t.Fatalf("after ReleaseHeld: count %d, state %d; want 2, 0", n, held[0].Load())
	}
	if _, i, err := front.LendHeld(1, 0, 8192); err != nil {
		t.Errorf("a hold freed cannot be lent again: %v", err)
	} else {
		front.Free(i)
	}
}

// A thread waiting for a buffer wakes when the front frees one or another thread releases
// one, and not before; with none freed it gives up after its time. Many rounds with two
// waiters check that no free goes unnoticed: a lost wake-up would show as a wait of seconds.
func TestSharedChunksWait(t *testing.T) {
	front, worker := sharedPair(t, ChunksLayout{Buffers: 2, Size: 100})
	a, b := worker.Claim(), worker.Claim()
	if _, err := front.Lend(a, 1); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if got := worker.ClaimWait(30 * time.Millisecond); got != -1 {
		t.Fatalf("ClaimWait with every buffer in use: %d", got)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("ClaimWait gave up after %v, before its 30ms", d)
	}

	wait := func() (chan int, time.Time) {
		got := make(chan int, 1)
		go func() { got <- worker.ClaimWait(10 * time.Second) }()
		time.Sleep(20 * time.Millisecond) // let it sleep
		select {
		case i := <-got:
			t.Fatalf("ClaimWait returned %d with every buffer in use", i)
		default:
		}
		return got, time.Now()
	}
	got, freed := wait()
	front.Free(a)
	if i := <-got; i != a || time.Since(freed) > 2*time.Second {
		t.Fatalf("after Free(%d): claimed %d, %v later", a, i, time.Since(freed))
	}
	got, freed = wait()
	worker.Release(b)
	if i := <-got; i != b || time.Since(freed) > 2*time.Second {
		t.Fatalf("after Release(%d): claimed %d, %v later", b, i, time.Since(freed))
	}

	// Both buffers are claimed again; two waiters and a front freeing what they fill.
	if _, err := front.Lend(a, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := front.Lend(b, 1); err != nil {
		t.Fatal(err)
	}
	filled := make(chan int, 2)
	go func() { front.Free(a); front.Free(b) }()
	const rounds = 2000
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for range rounds {
				start := time.Now()
				i := worker.ClaimWait(10 * time.Second)
				if d := time.Since(start); i < 0 || d > time.Second {
					errs <- fmt.Errorf("ClaimWait: %d after %v", i, d)
					return
				}
				filled <- i
			}
			errs <- nil
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2 * rounds {
			i := <-filled
			if _, err := front.Lend(i, 1); err != nil {
				t.Error(err)
				return
			}
			front.Free(i)
		}
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

func TestSharedFile(t *testing.T) {
	for name, open := range map[string]func(string) (*os.File, error){"memfd": SharedFile, "tmpfs": tmpfsFile} {
		f, err := open("gowsgi-test")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := os.Stat(f.Name()); err == nil {
			t.Errorf("%s: %s has a name in the file system", name, f.Name())
		}
		if err := f.Truncate(4096); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mem[0] = 42
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, 0); err != nil || b[0] != 42 {
			t.Errorf("%s: the file reads %v, %v after a store through the mapping", name, b, err)
		}
		syscall.Munmap(mem)
		f.Close()
	}
}
