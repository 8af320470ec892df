package listen

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// WritePidfile writes our pid to path (gunicorn -p/--pid), atomically: a temporary file in the
// same directory, renamed over path, mode 0644. It refuses when path already names a live
// process other than us or our parent (the old process of a binary upgrade hands over to its
// child); a file naming a dead process, or holding no number, is stale and replaced.
//
// remove deletes the file only if it still holds our pid, so a process that replaced it keeps
// its own. It is safe to call more than once.
func WritePidfile(path string) (remove func(), err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	me := os.Getpid()
	if pid, ok := readPid(abs); ok && pid != me && pid != os.Getppid() && alive(pid) {
		return nil, fmt.Errorf("pid file %s names process %d, which is running: is gowsgi already running? (remove the file if not)", path, pid)
	}
	dir, base := filepath.Split(abs)
	tmp, err := os.CreateTemp(dir, "."+base+".*")
	if err != nil {
		return nil, fmt.Errorf("pid file: %w", err)
	}
	_, err = fmt.Fprintf(tmp, "%d\n", me)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), abs)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("pid file: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if pid, ok := readPid(abs); ok && pid == me {
				os.Remove(abs)
			}
		})
	}, nil
}

// readPid reads a pid file; ok is false when it is missing or holds no positive number.
func readPid(path string) (pid int, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// alive reports whether process pid exists (signal 0; EPERM means it exists but is not ours).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
