package supervisor

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestNextBackoff(t *testing.T) {
	var got []time.Duration
	d := time.Duration(0)
	for i := 0; i < 10; i++ {
		d = nextBackoff(d, time.Second)
		got = append(got, d)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond,
		10 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff schedule %v, want %v", got, want)
		}
	}
	if d := nextBackoff(10*time.Second, time.Minute); d != minBackoff {
		t.Errorf("after a worker that served a minute: %v, want %v", d, minBackoff)
	}
}

func TestProcessRSS(t *testing.T) {
	before, err := processRSS(os.Getpid())
	if err != nil || before <= 0 {
		t.Fatalf("RSS of this process: %d, %v", before, err)
	}
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = 1 // touched, so resident
	}
	after, err := processRSS(os.Getpid())
	if err != nil || after-before < 32<<20 {
		t.Errorf("RSS went from %d to %d after touching 64 MiB", before, after)
	}
	_ = ballast[len(ballast)-1]
}

func TestSharedChunksPerWorker(t *testing.T) {
	for _, c := range []struct{ threads, want int }{{1, 8}, {4, 32}, {8, 64}, {16, 64}, {32, 64}, {100, 100}} {
		if got := sharedChunks(c.threads); got != c.want {
			t.Errorf("%d threads: %d buffers, want %d", c.threads, got, c.want)
		}
	}
}

// TestWorkerClosed: a worker that exits with frames of the front's unread resets the socket;
// the front's read loop takes that, like EOF, as the worker closing its end.
func TestWorkerClosed(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	front := os.NewFile(uintptr(fds[0]), "front")
	defer front.Close()
	if _, err := front.Write([]byte("a CREDIT the worker never reads")); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fds[1]) // the worker exits
	_, err = front.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer closed with data unread: %v, want ECONNRESET", err)
	}
	for _, e := range []error{err, io.EOF, net.ErrClosed} {
		if !workerClosed(e) {
			t.Errorf("workerClosed(%v) = false, want true", e)
		}
	}
	if workerClosed(errors.New("bad frame")) {
		t.Error("workerClosed takes any error for a close")
	}
}
