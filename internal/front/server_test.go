package front

import (
	"net"
	"syscall"
	"testing"
)

// TestTuneLocalSendBuffer: a TCP connection from this host gets LocalSendBuffer as its send
// buffer, unless it is negative, which leaves the kernel's autotuning alone.
func TestTuneLocalSendBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sndbuf := func(setting int, apply bool) int {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		s := &Server{cfg: Config{LocalSendBuffer: setting}}
		s.cfg.defaults()
		if apply {
			s.tune(nc)
		}
		rc, err := nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got int
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		return got
	}
	kernel := sndbuf(0, false)
	if kernel == 2*(256<<10) || kernel == 2*(64<<10) {
		t.Fatalf("the kernel's own send buffer is %d: the test cannot tell settings apart", kernel)
	}
	// The kernel doubles what it is asked for, for its own bookkeeping.
	if got := sndbuf(0, true); got != 2*(256<<10) {
		t.Errorf("default: send buffer %d, want %d (the kernel's is %d)", got, 2*(256<<10), kernel)
	}
	if got := sndbuf(64<<10, true); got != 2*(64<<10) {
		t.Errorf("64 KiB: send buffer %d, want %d", got, 2*(64<<10))
	}
	if got := sndbuf(-1, true); got != kernel {
		t.Errorf("negative: send buffer %d, want the kernel's %d", got, kernel)
	}
}
