package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryUpgradeUSR2: USR2 starts a new front from the binary on disk that inherits the
// listeners; once it serves, the old one drains and exits 0. A keep-alive load running through
// it sees no failed request.
func TestBinaryUpgradeUSR2(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "gowsgi.pid")
	s := startRaw(t, "-w", "1", "--threads", "2", "--pid", pidfile)
	l := startLoad(t, s.URL+"/status?code=200", 8, 0)
	time.Sleep(300 * time.Millisecond)
	if err := s.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	code, err := s.Wait(60 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("old front after USR2: exit %d, %v; want 0\n%s", code, err, s.Stderr())
	}
	var newPid int
	if !eventually(5*time.Second, func() bool {
		b, _ := os.ReadFile(pidfile)
		newPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return newPid != 0 && newPid != s.Pid
	}) {
		t.Fatalf("the pid file does not name a new front:\n%s", s.Stderr())
	}
	t.Cleanup(func() {
		syscall.Kill(newPid, syscall.SIGTERM)
		eventually(10*time.Second, func() bool { return syscall.Kill(newPid, 0) != nil })
	})
	time.Sleep(500 * time.Millisecond) // the load goes on against the new front alone
	l.wantNoFailures(t, 100)
	stillServes(t, s)
	if !strings.Contains(s.Stderr(), "The new gowsgi serves") {
		t.Errorf("the old front did not log the handover:\n%s", s.Stderr())
	}
}
