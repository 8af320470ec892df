package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestRepoRootAndAppsDir(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("RepoRoot() = %q: %v", root, err)
	}
	if _, err := os.Stat(filepath.Join(AppsDir(t), "rawapp.py")); err != nil {
		t.Fatalf("AppsDir(): %v", err)
	}
}

func TestHasBind(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		ok   bool
	}{
		{[]string{"app:application"}, "", false},
		{[]string{"-b", "127.0.0.1:1", "app"}, "127.0.0.1:1", true},
		{[]string{"--bind", "unix:/tmp/s", "app"}, "unix:/tmp/s", true},
		{[]string{"--bind=[::1]:9", "app"}, "[::1]:9", true},
		{[]string{"-w", "2", "app", "-b", "h:1"}, "h:1", true},
		{[]string{"--", "-b"}, "", false},
	} {
		got, ok := hasBind(tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("hasBind(%q) = %q, %v; want %q, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

func TestTreeRSS(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	kids, err := Descendants(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range kids {
		found = found || k == cmd.Process.Pid
	}
	if !found {
		t.Errorf("Descendants(self) = %v, missing child %d", kids, cmd.Process.Pid)
	}
	self, err := RSS(os.Getpid())
	if err != nil || self <= 0 {
		t.Fatalf("RSS(self) = %d, %v", self, err)
	}
	tree, err := TreeRSS(os.Getpid())
	if err != nil || tree <= self {
		t.Errorf("TreeRSS(self) = %d, %v; want more than RSS(self) = %d", tree, err, self)
	}
}

func TestFreePort(t *testing.T) {
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Errorf("FreePort() = %d", p)
	}
}
