package listen

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestWritePidfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gowsgi.pid")
	remove, err := WritePidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("pid file holds %q (%v), want our pid", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("pid file mode %v, want 0644", fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the pid file (no temporary left)", len(entries))
	}
	// Writing it again (our own pid in it) is fine.
	remove2, err := WritePidfile(path)
	if err != nil {
		t.Fatalf("rewrite our own pid file: %v", err)
	}
	remove2()
	remove()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pid file still there after remove: %v", err)
	}
}

func TestWritePidfileStale(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"999999999\n", "garbage", ""} { // beyond pid_max: never alive
		path := filepath.Join(dir, "stale.pid")
		os.WriteFile(path, []byte(content), 0o644)
		remove, err := WritePidfile(path)
		if err != nil {
			t.Fatalf("stale pid file %q: %v", content, err)
		}
		if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
			t.Errorf("stale pid file %q not replaced: %q", content, b)
		}
		remove()
	}
}

func TestWritePidfileRefusesLiveProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "GOWSGI_TEST_HELPER=sleep")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	path := filepath.Join(t.TempDir(), "live.pid")
	other := strconv.Itoa(cmd.Process.Pid) + "\n"
	os.WriteFile(path, []byte(other), 0o644)
	if _, err := WritePidfile(path); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("WritePidfile over a live process's pid file: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != other {
		t.Errorf("the live process's pid file changed to %q", b)
	}
}

func TestPidfileRemoveLeavesAnotherPid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pid")
	remove, err := WritePidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A newer process took the file over.
	os.WriteFile(path, []byte("12345\n"), 0o644)
	remove()
	if b, err := os.ReadFile(path); err != nil || string(b) != "12345\n" {
		t.Errorf("remove deleted or changed another process's pid file: %q %v", b, err)
	}
}

func TestWritePidfileErrors(t *testing.T) {
	if _, err := WritePidfile(filepath.Join(t.TempDir(), "no", "such", "dir.pid")); err == nil {
		t.Error("WritePidfile in a missing directory succeeded")
	}
	if os.Geteuid() != 0 {
		dir := t.TempDir()
		os.Chmod(dir, 0o555)
		defer os.Chmod(dir, 0o755)
		if _, err := WritePidfile(filepath.Join(dir, "p.pid")); err == nil {
			t.Error("WritePidfile in a read-only directory succeeded")
		}
	}
}
