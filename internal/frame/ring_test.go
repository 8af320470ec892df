package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// newRingPair returns the front's side of a new ring and a worker's side mapped from the same
// descriptors, as two processes would hold them.
func newRingPair(t *testing.T, size int) (front, worker *Ring) {
	t.Helper()
	front, mem, rw, ww, err := NewRing(size)
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
// Both ways: the worker writing to the front (gowsgi's use, the reader on Go's poller) and
// the other way (the reader on the side that mapped the ring, in poll(2)).
func TestRingStream(t *testing.T) {
	t.Run("to the front", func(t *testing.T) {
		front, worker := newRingPair(t, 4096)
		ringStream(t, worker, front)
	})
	t.Run("to the worker", func(t *testing.T) {
		front, worker := newRingPair(t, 4096)
		ringStream(t, front, worker)
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

func TestRingBadSetup(t *testing.T) {
	if _, _, _, _, err := NewRing(5000); err == nil {
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
