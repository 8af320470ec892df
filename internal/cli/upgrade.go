package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"gowsgi/internal/listen"
)

// upgradeReadyEnv names the descriptor on which a front started by a binary upgrade reports
// that its first worker is ready, so the old front can begin to drain.
const upgradeReadyEnv = "GOWSGI_UPGRADE_READY_FD"

// upgradeWait bounds how long the old front waits for the new one to become ready.
const upgradeWait = 2 * time.Minute

// upgrade starts a new front from the binary on disk (SIGUSR2), handing it the listeners. It
// returns nil once the new front has a worker ready; the caller then drains and exits.
func upgrade(exe, dir string, set *listen.Set, stdout, stderr io.Writer) error {
	files, err := set.Files()
	if err != nil {
		return fmt.Errorf("binary upgrade: %w", err)
	}
	defer func() {
		for _, f := range files {
			f.Close() // the child has its own copies
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("binary upgrade: %w", err)
	}
	defer r.Close()
	// The binary may have been replaced since we started: run what is on disk at that path.
	cmd := exec.Command(strings.TrimSuffix(exe, " (deleted)"), os.Args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, stdout, stderr
	cmd.ExtraFiles = append(files, w)
	cmd.Env = append(withoutEnv(os.Environ(), listen.UpgradeEnv, upgradeReadyEnv),
		append(listen.InheritEnv(len(files)), upgradeReadyEnv+"="+strconv.Itoa(3+len(files)))...)
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("binary upgrade: start %s: %w", exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps the new front if it fails; else it outlives us

	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := r.Read(b[:])
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			// The pipe closed without a word: the new front failed before it was ready.
			select {
			case werr := <-exited:
				return fmt.Errorf("binary upgrade: the new gowsgi (pid %d) exited: %v", cmd.Process.Pid, werr)
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill() // it gave up readiness; do not leave it half alive
				return fmt.Errorf("binary upgrade: the new gowsgi (pid %d) closed its readiness pipe without being ready", cmd.Process.Pid)
			}
		}
		return nil
	case err := <-exited:
		return fmt.Errorf("binary upgrade: the new gowsgi (pid %d) exited before it was ready: %v", cmd.Process.Pid, err)
	case <-time.After(upgradeWait):
		_ = cmd.Process.Kill() // too slow: keep serving with the old binary
		return errors.New("binary upgrade: the new gowsgi was not ready in time; it was stopped")
	}
}

// reportUpgradeReady tells the front that started us (binary upgrade) that we serve now.
func reportUpgradeReady() {
	v := os.Getenv(upgradeReadyEnv)
	if v == "" {
		return
	}
	os.Unsetenv(upgradeReadyEnv) // workers must not see it
	fd, err := strconv.Atoi(v)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "upgrade-ready")
	if f == nil {
		return
	}
	_, _ = f.Write([]byte{1}) // the old front may have died meanwhile: nothing to do then
	f.Close()
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			if k == n {
				drop = true
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}
