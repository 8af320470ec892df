package front

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"gowsgi/internal/frame"
	"gowsgi/internal/http1"
	"gowsgi/internal/supervisor"
)

// seqpacketConn returns a connection whose every write is one message for the peer's reads,
// so a test sees how the front split what it wrote into system calls.
func seqpacketConn(t *testing.T) (net.Conn, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	f := os.NewFile(uintptr(fds[0]), "seqpacket")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		syscall.Close(fds[1])
	})
	return nc, fds[1]
}

// TestHeadWithFirstChunks: the head of a response with a big first batch of body goes out in
// the same writev as that batch, and so does a chunked body's last chunk when the response
// ends with the batch. Written on their own, each cost a system call and a wake-up of the
// client per response (a pinned 1 MiB stream spent 4 % less CPU in the front without the
// head's). A small body still goes through the connection's buffer with its head, in one
// write.
func TestHeadWithFirstChunks(t *testing.T) {
	s := New(Config{}, nil)
	for _, tc := range []struct {
		size    int
		chunked bool
	}{{writevMin, false}, {100, false}, {writevMin, true}, {100, true}} {
		name := fmt.Sprintf("%d-byte chunks, chunked %v", tc.size, tc.chunked)
		nc, peer := seqpacketConn(t)
		c := newConn(s, nc)
		r := &response{c: c, req: &http1.Request{Method: "GET", Minor: 1, KeepAlive: true}, body: &bodyReader{done: true}}
		length := int64(2 * tc.size)
		if tc.chunked {
			length = -1
		}
		r.writeHead(&frame.ResponseHead{Code: 200, Status: []byte("200 OK"), Length: length})
		body := bytes.Repeat([]byte("y"), tc.size)
		r.writeData([]supervisor.Event{{Kind: supervisor.EventData, Data: body}, {Kind: supervisor.EventData, Data: body}}, true)
		if r.clientErr {
			t.Fatalf("%s: the write failed", name)
		}
		if !r.finish(false) {
			t.Fatalf("%s: the connection would close", name)
		}
		if err := c.releaseWriter(); err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, 4*tc.size+4096)
		n, _, err := syscall.Recvfrom(peer, msg, syscall.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("%s: read: %v", name, err)
		}
		head, rest, ok := bytes.Cut(msg[:n], []byte("\r\n\r\n"))
		if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 OK\r\n")) || !ok {
			t.Fatalf("%s: the first write is %q...", name, msg[:min(n, 64)])
		}
		want := bytes.Repeat(body, 2)
		if tc.chunked {
			line := fmt.Sprintf("%x\r\n", tc.size)
			want = []byte(line + string(body) + "\r\n" + line + string(body) + "\r\n0\r\n\r\n")
		}
		if !bytes.Equal(rest, want) {
			t.Errorf("%s: the first write holds the head and %d bytes of body, want %d", name, len(rest), len(want))
		}
		if n, _, err := syscall.Recvfrom(peer, msg, syscall.MSG_DONTWAIT); err != syscall.EAGAIN {
			t.Errorf("%s: a second write of %d bytes (%v)", name, n, err)
		}
	}
}
