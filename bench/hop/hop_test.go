package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary play the front and the worker, so the end-to-end test runs
// the same code the driver does.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// newTestRings maps a pair of rings of size bytes and gives the first a blocking eventfd, as
// the worker's.
func newTestRings(t *testing.T, size int) (*ring, *ring) {
	t.Helper()
	f, err := newRingFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b, mem, err := sharedRings(f, size, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	efd, err := eventFD(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(efd) })
	a.efd = efd
	var eight [8]byte
	a.wait = func() error {
		_, err := syscall.Read(efd, eight[:])
		return err
	}
	return a, b
}

// TestRingStream sends numbered records of varying sizes through a small ring, so that they
// wrap around its end many times, while the reader sleeps whenever it catches up: every byte
// must arrive in order, and the reader must end at the close, after the last record.
func TestRingStream(t *testing.T) {
	r, _ := newTestRings(t, 4096)
	const records = 20000
	go func() {
		buf := make([]byte, 0, 1024)
		for i := 0; i < records; i++ {
			buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(i))
			buf = append(buf, bytes.Repeat([]byte{byte(i)}, i%700)...)
			for {
				_, err := r.Write(buf)
				if err == nil {
					break
				}
				if err != errRingFull {
					t.Error(err)
					return
				}
				time.Sleep(10 * time.Microsecond) // the reader is behind
			}
		}
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()

	var got []byte
	p := make([]byte, 333) // reads that end anywhere in a record
	for {
		n, err := r.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < records; i++ {
		if len(got) < 4 {
			t.Fatalf("stream ends before record %d", i)
		}
		if n := binary.LittleEndian.Uint32(got); n != uint32(i) {
			t.Fatalf("record %d arrived as %d", i, n)
		}
		body := got[4 : 4+i%700]
		if !bytes.Equal(body, bytes.Repeat([]byte{byte(i)}, i%700)) {
			t.Fatalf("record %d: body damaged", i)
		}
		got = got[4+i%700:]
	}
	if len(got) != 0 {
		t.Fatalf("%d bytes after the last record", len(got))
	}
}

// TestRingFull: a write that does not fit is refused whole, and fits once the reader took
// enough.
func TestRingFull(t *testing.T) {
	r, _ := newTestRings(t, 4096)
	if _, err := r.Write(make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write(make([]byte, 100)); err != errRingFull {
		t.Fatalf("write past the end: %v, want errRingFull", err)
	}
	if n, err := r.Read(make([]byte, 200)); n != 200 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	if _, err := r.Write(make([]byte, 100)); err != nil {
		t.Fatalf("write after the reader made room: %v", err)
	}
}

func TestRingSizeMustBePowerOfTwo(t *testing.T) {
	f, err := newRingFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, _, err := sharedRings(f, 3000, true); err == nil {
		t.Fatal("a ring of 3000 bytes was accepted")
	}
}

// TestRun runs a short front, with its worker process, over each transport: every request in
// flight must come back (the front fails on a lost, unknown or doubled response) and the
// result must count them.
func TestRun(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"socket", "ring", "ring-batch"} {
		t.Run(transport, func(t *testing.T) {
			r, err := runOne([]string{self, "-role", "front", "-transport", transport, "-work", "2us",
				"-d", "300ms", "-warm", "100ms", "-c", "16"}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if r.Transport != transport || r.Requests < 100 || r.RPS <= 0 || r.FrontUS < 0 || r.WorkerUS < 0 {
				t.Fatalf("implausible result: %+v", r)
			}
		})
	}
}

func TestDriverRejectsBadMatrix(t *testing.T) {
	for _, c := range []driveConfig{
		{works: "0", transports: "pipe", modes: "pinned", reps: 1},
		{works: "fast", transports: "ring", modes: "pinned", reps: 1},
		{works: "0", transports: "ring", modes: "sideways", reps: 1},
		{works: "0", transports: "ring", modes: "pinned", reps: 0},
	} {
		if err := drive(c); err == nil || !strings.Contains(err.Error(), "-") {
			t.Errorf("%+v: %v, want an error naming the flag", c, err)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
