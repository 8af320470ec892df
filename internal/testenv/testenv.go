// Package testenv holds helpers for tests that run the real gowsgi binary: it builds
// ./cmd/gowsgi once per test binary, finds free ports, starts servers in their own process
// group and always tears them down (SIGTERM, then SIGKILL to the whole group), and reads
// process memory from /proc.
//
// The helpers fail the calling test on any setup error; nothing is skipped. They are safe
// for concurrent use by parallel tests.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Time limits used by StartServer and Server's cleanup.
const (
	// ReadyTimeout bounds how long StartServer waits until the server accepts connections.
	ReadyTimeout = 20 * time.Second
	// StopTimeout is how long cleanup waits after SIGTERM before it sends SIGKILL.
	StopTimeout = 10 * time.Second
)

// build holds the result of the one build per test binary.
var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary
	path string
	err  error
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot returns the absolute path of the repository root: the nearest directory, from
// the working directory upwards, that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("no go.mod in the working directory or any parent")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatalf("testenv: find repository root: %v", rootErr)
	}
	return rootDir
}

// AppsDir returns the absolute path of testdata/apps, the WSGI apps the tests serve.
func AppsDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "testdata", "apps")
}

// BuildBinary builds ./cmd/gowsgi with `go build` into a temporary directory, once per test
// binary, and returns the binary's path. A failed build fails every test that asks for it.
//
// When CGO_CFLAGS or CGO_LDFLAGS are unset (go test run directly rather than through make),
// they are filled in from `pkg-config $PYTHON_PKG` (default python3-embed), as the Makefile
// does. Main removes the temporary directory when the tests end.
func BuildBinary(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	build.once.Do(func() {
		sweepStaleBuilds()
		dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
		if err != nil {
			build.err = err
			return
		}
		build.dir = dir
		out := filepath.Join(dir, "gowsgi")
		cmd := exec.Command(goTool(), "build", "-o", out, "./cmd/gowsgi")
		cmd.Dir = root
		cmd.Env = buildEnv()
		if output, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/gowsgi: %v\n%s", err, output)
			return
		}
		build.path = out
	})
	if build.err != nil {
		t.Fatalf("testenv: %v", build.err)
	}
	return build.path
}

// buildDirPrefix starts the name of the temporary build directories, followed by the pid
// of the test binary that made it.
const buildDirPrefix = "gowsgi-testbin-"

// sweepStaleBuilds removes build directories left by test binaries that have exited
// without Main's cleanup (killed, timed out, or not using Main).
func sweepStaleBuilds() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), buildDirPrefix)
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(m)
		}
	}
}

// Main runs the tests of a package that uses BuildBinary and removes the built binary
// afterwards. Use it from TestMain: func TestMain(m *testing.M) { testenv.Main(m) }.
// Without it the directory is removed by the next test binary that builds.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// goTool returns the go command: the one on PATH, else the one of this test's toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildEnv returns the environment for `go build`. The cgo preamble of pybridge finds Python
// through pkg-config itself; the Makefile's PKG_CONFIG (set for another PYTHON_PKG) is inherited.
func buildEnv() []string { return os.Environ() }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Buffer is a bytes.Buffer safe for concurrent use: the process writes, tests read.
type Buffer struct {
	mu  sync.Mutex // mu guards buf
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Server is a running gowsgi process started by StartServer. Its methods are safe for
// concurrent use.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:PORT" (empty for a unix-socket-only server).
	URL string
	// Addr is the address tests connect to: "127.0.0.1:PORT", or "unix:PATH".
	Addr string
	// Pid is the front process's pid; it is also the process group id.
	Pid int

	t      testing.TB
	cmd    *exec.Cmd
	stdout Buffer
	stderr Buffer
	done   chan struct{} // closed when the process has exited and been reaped
	state  *os.ProcessState
	werr   error
}

// Stderr returns what the server wrote to stderr so far (the error log by default).
func (s *Server) Stderr() string { return s.stderr.String() }

// Stdout returns what the server wrote to stdout so far.
func (s *Server) Stdout() string { return s.stdout.String() }

// Signal sends sig to the front process only, as `kill PID` would.
func (s *Server) Signal(sig syscall.Signal) error {
	return syscall.Kill(s.Pid, sig)
}

// SignalGroup sends sig to every process of the server's process group (the front and its
// workers), as a service manager stopping a whole control group would.
func (s *Server) SignalGroup(sig syscall.Signal) error {
	return syscall.Kill(-s.Pid, sig)
}

// Exited reports whether the front process has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the front process to exit and returns its exit code. A
// process killed by a signal gives -1 and an error naming the signal; a timeout gives -1 and
// an error (the process is left running; cleanup still stops it).
func (s *Server) Wait(timeout time.Duration) (exitCode int, err error) {
	select {
	case <-s.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("gowsgi (pid %d) still running after %v", s.Pid, timeout)
	}
	return exitStatus(s.state, s.werr)
}

func exitStatus(state *os.ProcessState, werr error) (int, error) {
	if state == nil {
		return -1, werr
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, fmt.Errorf("gowsgi killed by signal %v", ws.Signal())
	}
	return state.ExitCode(), nil
}

// processEnv returns the environment for gowsgi processes: the test's own, without the
// variables that would change gowsgi's defaults, and with bytecode writing off so that
// serving testdata/apps leaves no __pycache__ in the tree.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
}

// hasBind reports whether args already choose a bind address, and returns the first one.
func hasBind(args []string) (string, bool) {
	for i, a := range args {
		switch {
		case a == "--":
			return "", false
		case a == "-b" || a == "--bind" || a == "-bind":
			if i+1 < len(args) {
				return args[i+1], true
			}
			return "", true
		case strings.HasPrefix(a, "-b="), strings.HasPrefix(a, "--bind="), strings.HasPrefix(a, "-bind="):
			_, v, _ := strings.Cut(a, "=")
			return v, true
		}
	}
	return "", false
}

// StartServer starts the gowsgi binary with args in the repository root, adding
// "-b 127.0.0.1:PORT" on a free port unless args choose a bind (-b/--bind) themselves; then
// it waits until the first bind address accepts connections and the front logged that a
// worker is ready (at most ReadyTimeout), so that timings measure requests, not the boot.
//
// The server runs in its own process group. Cleanup, registered before waiting and run
// whatever the test's outcome, sends SIGTERM to the group, waits up to StopTimeout, then
// sends SIGKILL to the group. When the test has failed, the server's output is logged.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := BuildBinary(t)
	bind, ok := hasBind(args)
	ephemeral := !ok
	if ephemeral {
		// Port 0: the kernel picks a free port, which the server logs. Picking one here and
		// passing it on would race with every other test doing the same.
		bind = "127.0.0.1:0"
		args = append([]string{"-b", bind}, args...)
	}
	s := &Server{t: t, Addr: bind, done: make(chan struct{})}
	network, address := "tcp", bind
	if path, ok := strings.CutPrefix(bind, "unix:"); ok {
		network, address = "unix", path
	} else {
		if _, _, err := net.SplitHostPort(bind); err != nil {
			// A bare host (gunicorn allows it) listens on port 8000.
			address = net.JoinHostPort(strings.Trim(bind, "[]"), "8000")
			s.Addr = address
		}
		s.URL = "http://" + s.Addr
	}

	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = RepoRoot(t)
	s.cmd.Env = processEnv()
	s.cmd.Stdout = &s.stdout
	s.cmd.Stderr = &s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A process the server started (a binary upgrade's new front) may hold the output pipes
	// after the server exited: do not let that hide the exit.
	s.cmd.WaitDelay = time.Second
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	s.Pid = s.cmd.Process.Pid
	go func() {
		s.werr = s.cmd.Wait()
		s.state = s.cmd.ProcessState
		close(s.done)
	}()
	t.Cleanup(s.stop)

	deadline := time.Now().Add(ReadyTimeout)
	for {
		if ephemeral && strings.HasSuffix(address, ":0") {
			if a := listeningAt(s.stderr.String() + errorLogOf(args)); a != "" {
				address, s.Addr, s.URL = a, a, "http://"+a
			}
		}
		c, err := net.DialTimeout(network, address, 250*time.Millisecond)
		if err == nil {
			c.Close()
			// Accepting is not enough for timing-sensitive tests: wait for a worker too.
			if strings.Contains(s.stderr.String()+errorLogOf(args), "ready with") {
				return s
			}
			err = errors.New("no worker is ready yet")
		}
		if s.Exited() {
			code, werr := exitStatus(s.state, s.werr)
			// stop (a cleanup) logs the server's output.
			t.Fatalf("testenv: gowsgi %s exited before accepting connections on %s (exit %d, %v)",
				strings.Join(args, " "), bind, code, werr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: gowsgi %s did not accept connections on %s within %v: %v",
				strings.Join(args, " "), bind, ReadyTimeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// output formats the captured stdout and stderr for a failure message.
func (s *Server) output() string {
	return fmt.Sprintf("--- gowsgi stderr ---\n%s--- gowsgi stdout ---\n%s", s.Stderr(), s.Stdout())
}

// stop ends the server: SIGTERM to the group, SIGKILL after StopTimeout, and a final SIGKILL
// to the group in case a worker outlived the front.
func (s *Server) stop() {
	if !s.Exited() {
		_ = s.SignalGroup(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(StopTimeout):
			s.t.Logf("testenv: gowsgi (pid %d) still running %v after SIGTERM; sending SIGKILL", s.Pid, StopTimeout)
			_ = s.SignalGroup(syscall.SIGKILL)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				s.t.Errorf("testenv: gowsgi (pid %d) survived SIGKILL", s.Pid)
			}
		}
	}
	if syscall.Kill(-s.Pid, 0) == nil {
		// The front is gone, but part of its group is not: kill the stragglers.
		_ = s.SignalGroup(syscall.SIGKILL)
	}
	if s.t.Failed() {
		s.t.Logf("testenv: gowsgi (pid %d) output:\n%s", s.Pid, s.output())
	}
}

// StartCmd runs the gowsgi binary with args in the repository root until it exits, and
// returns its exit code and combined stdout and stderr. If it is still running after timeout,
// its process group is killed and the test fails. It is for runs that are expected to end by
// themselves: bad flags, import errors, --check-config, --version.
func StartCmd(t testing.TB, timeout time.Duration, args ...string) (exitCode int, output string) {
	t.Helper()
	bin := BuildBinary(t)
	if _, ok := hasBind(args); !ok && !hasFlag(args, "--check-config", "--version", "-v", "--help", "-h") {
		// Never the default 127.0.0.1:8000: parallel tests (and a developer's server) use it.
		args = append([]string{"-b", "127.0.0.1:0"}, args...)
	}
	var out Buffer
	cmd := exec.Command(bin, args...)
	cmd.Dir = RepoRoot(t)
	cmd.Env = processEnv()
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if syscall.Kill(-pid, 0) == nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	select {
	case err := <-done:
		code, serr := exitStatus(cmd.ProcessState, err)
		if serr != nil {
			t.Fatalf("testenv: gowsgi %s: %v\n%s", strings.Join(args, " "), serr, out.String())
		}
		return code, out.String()
	case <-time.After(timeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		t.Fatalf("testenv: gowsgi %s still running after %v; killed\n%s", strings.Join(args, " "), timeout, out.String())
		return -1, out.String()
	}
}

// errorLogOf returns the contents of the --error-logfile among args, if any.
func errorLogOf(args []string) string {
	for i, a := range args {
		name, ok := strings.CutPrefix(a, "--error-logfile=")
		if !ok && (a == "--error-logfile" || a == "--log-file") && i+1 < len(args) {
			name, ok = args[i+1], true
		}
		if ok && name != "-" {
			b, _ := os.ReadFile(name) // not there yet means not ready yet
			return string(b)
		}
	}
	return ""
}

// listeningAt returns the first HOST:PORT of a "Listening at: http://HOST:PORT" log line.
func listeningAt(log string) string {
	_, rest, ok := strings.Cut(log, "Listening at: http://")
	if !ok {
		return ""
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr
}

// hasFlag reports whether args contain any of names.
func hasFlag(args []string, names ...string) bool {
	for _, a := range args {
		for _, n := range names {
			if a == n {
				return true
			}
		}
	}
	return false
}
