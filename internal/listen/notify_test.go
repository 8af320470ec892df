package listen

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notifySocket listens on a unixgram socket at name and returns a function that reads one
// datagram.
func notifySocket(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read the notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := notifySocket(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	for _, state := range []string{"READY=1", "STOPPING=1", ReloadingState()} {
		if err := Notify(state); err != nil {
			t.Fatalf("Notify(%q): %v", state, err)
		}
		if got := read(); got != state {
			t.Errorf("received %q, want %q", got, state)
		}
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@gowsgi-notify-test-%d-%d", os.Getpid(), rand.Int64())
	read := notifySocket(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	if err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "READY=1" {
		t.Errorf("received %q", got)
	}
}

func TestNotifyUnsetAndErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
	for _, v := range []string{"vsock:2:1234", filepath.Join(t.TempDir(), "nobody-listens")} {
		t.Setenv("NOTIFY_SOCKET", v)
		if err := Notify("READY=1"); err == nil {
			t.Errorf("NOTIFY_SOCKET=%s: no error", v)
		}
	}
}

func TestReloadingState(t *testing.T) {
	usec := func() uint64 {
		s := ReloadingState()
		v, ok := strings.CutPrefix(s, "RELOADING=1\nMONOTONIC_USEC=")
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil || n == 0 {
			t.Fatalf("ReloadingState() = %q", s)
		}
		return n
	}
	a := usec()
	time.Sleep(10 * time.Millisecond)
	if b := usec(); b < a+10000 {
		t.Errorf("MONOTONIC_USEC went from %d to %d over 10ms", a, b)
	}
}
