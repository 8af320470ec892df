package tests

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// launched is a gowsgi started by the test itself (not testenv), for what testenv cannot
// set up: inherited listening sockets and a chosen environment.
type launched struct {
	pid    int
	stderr *testenv.Buffer
	done   chan struct{}
}

// launchGowsgi starts the gowsgi binary from the repository root with files on fds 3...,
// the test's environment (without variables that change gowsgi's defaults or its systemd
// integration) plus env, in its own process group. viaShell runs it through
// /bin/sh -c 'export LISTEN_PID=$$; exec "$0" "$@"', which sets LISTEN_PID to the pid that
// gowsgi will have, as systemd does between fork and exec. Cleanup stops the whole group.
func launchGowsgi(t *testing.T, files []*os.File, env []string, viaShell bool, args ...string) *launched {
	t.Helper()
	bin := testenv.BuildBinary(t)
	var cmd *exec.Cmd
	if viaShell {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `export LISTEN_PID=$$; exec "$0" "$@"`, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Dir = testenv.RepoRoot(t)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "NOTIFY_SOCKET",
			"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "GOWSGI_LISTEN_FDS":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	l := &launched{stderr: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stdout = l.stderr
	cmd.Stderr = l.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gowsgi: %v", err)
	}
	l.pid = cmd.Process.Pid
	go func() { cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		syscall.Kill(-l.pid, syscall.SIGTERM)
		select {
		case <-l.done:
		case <-time.After(testenv.StopTimeout):
			t.Errorf("gowsgi (pid %d) still running %v after SIGTERM", l.pid, testenv.StopTimeout)
		}
		syscall.Kill(-l.pid, syscall.SIGKILL) // workers that outlived the front, if any
		<-l.done
		if t.Failed() {
			t.Logf("gowsgi output:\n%s", l.stderr.String())
		}
	})
	return l
}

// stopped sends SIGTERM to the front and waits for it to exit.
func (l *launched) stopped(t *testing.T) {
	t.Helper()
	syscall.Kill(l.pid, syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(testenv.StopTimeout):
		t.Fatalf("gowsgi still running %v after SIGTERM", testenv.StopTimeout)
	}
}

// listenerFile opens a TCP listener on a free loopback port and returns its file for
// ExtraFiles and its address. The test's own listener is closed, so only gowsgi accepts.
func listenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return f, ln.Addr().String()
}

// servesAt polls url until it answers 200 (the server is up with a ready worker) or fails.
func servesAt(t *testing.T, l *launched, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	ok := eventually(testenv.ReadyTimeout, func() bool {
		select {
		case <-l.done:
			return true
		default:
		}
		resp, err := c.Get(url)
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	select {
	case <-l.done:
		t.Fatalf("gowsgi exited before serving %s", url)
	default:
	}
	if !ok {
		t.Fatalf("%s not served within %v: %v", url, testenv.ReadyTimeout, last)
	}
}

func TestListenSystemdActivation(t *testing.T) {
	t.Parallel()
	f, addr := listenerFile(t)
	l := launchGowsgi(t, []*os.File{f}, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web"}, true,
		"--chdir", "testdata/apps", "-w", "1", "rawapp:application")
	f.Close() // gowsgi has it now
	servesAt(t, l, "http://"+addr+"/status?code=200")
	log := l.stderr.String()
	if want := "Listening at: http://" + addr + ` (systemd fd 3 "web")`; !strings.Contains(log, want) {
		t.Errorf("log lacks %q:\n%s", want, log)
	}
	if strings.Contains(log, "127.0.0.1:8000") {
		t.Errorf("gowsgi opened the default bind besides the systemd socket:\n%s", log)
	}
	// The workers do not inherit the activation variables.
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		resp, body := get(t, "http://"+addr+"/osenv?name="+name)
		if resp.StatusCode != 404 {
			t.Errorf("the app sees %s=%q", name, body)
		}
	}
}

func TestListenSystemdActivationOtherPid(t *testing.T) {
	t.Parallel()
	// LISTEN_PID names another process: the socket is not for gowsgi, which listens on its
	// -b instead and leaves fd 3 alone.
	f, addr := listenerFile(t)
	port := testenv.FreePort(t)
	l := launchGowsgi(t, []*os.File{f}, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, false,
		"-b", "127.0.0.1:"+strconv.Itoa(port), "--chdir", "testdata/apps", "-w", "1", "rawapp:application")
	servesAt(t, l, "http://127.0.0.1:"+strconv.Itoa(port)+"/status?code=200")
	if strings.Contains(l.stderr.String(), addr) {
		t.Errorf("gowsgi took over a socket meant for another process:\n%s", l.stderr.String())
	}
}

func TestListenFdBind(t *testing.T) {
	t.Parallel()
	f, addr := listenerFile(t)
	port := testenv.FreePort(t)
	l := launchGowsgi(t, []*os.File{f}, nil, false,
		"-b", "fd://3", "-b", "127.0.0.1:"+strconv.Itoa(port), "--chdir", "testdata/apps", "-w", "1", "rawapp:application")
	f.Close()
	servesAt(t, l, "http://"+addr+"/status?code=200")
	servesAt(t, l, "http://127.0.0.1:"+strconv.Itoa(port)+"/status?code=200")
	if want := "Listening at: http://" + addr + " (fd://3)"; !strings.Contains(l.stderr.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, l.stderr.String())
	}
}

func TestListenFdBindNotASocket(t *testing.T) {
	t.Parallel()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := launchGowsgi(t, []*os.File{f}, nil, false, "-b", "fd://3", "--chdir", "testdata/apps", "rawapp:application")
	select {
	case <-l.done:
	case <-time.After(testenv.ReadyTimeout):
		t.Fatal("gowsgi with fd://3 on /dev/null did not exit")
	}
	if out := l.stderr.String(); !strings.Contains(out, "fd://3") || !strings.Contains(out, "not a socket") {
		t.Errorf("want an error naming fd://3 as not a socket, got:\n%s", out)
	}
}

func TestListenNotifySocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	port := testenv.FreePort(t)
	l := launchGowsgi(t, nil, []string{"NOTIFY_SOCKET=" + sock}, false,
		"-b", "127.0.0.1:"+strconv.Itoa(port), "--chdir", "testdata/apps", "-w", "1", "rawapp:application")
	read := func() string {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(testenv.ReadyTimeout))
		buf := make([]byte, 4096)
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// READY means served: a worker is up.
	resp, body := get(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/status?code=200")
	wantStatus(t, resp, body, 200)
	syscall.Kill(l.pid, syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", got)
	}
	l.stopped(t)
}

func TestListenPidfile(t *testing.T) {
	t.Parallel()
	pidfile := filepath.Join(t.TempDir(), "gowsgi.pid")
	s := startRaw(t, "--pid", pidfile)
	b, err := os.ReadFile(pidfile)
	if err != nil || string(b) != strconv.Itoa(s.Pid)+"\n" {
		t.Fatalf("pid file holds %q (%v), want %d", b, err, s.Pid)
	}
	// A second server with the same pid file refuses to start.
	code, out := testenv.StartCmd(t, testenv.ReadyTimeout, "-b", "127.0.0.1:0", "-p", pidfile,
		"--chdir", "testdata/apps", "rawapp:application")
	if code == 0 || !strings.Contains(out, "--pid") || !strings.Contains(out, strconv.Itoa(s.Pid)) {
		t.Errorf("second server on the same pid file: exit %d, output:\n%s", code, out)
	}
	if b, _ := os.ReadFile(pidfile); string(b) != strconv.Itoa(s.Pid)+"\n" {
		t.Errorf("the refused server changed the pid file to %q", b)
	}
	s.Signal(syscall.SIGTERM)
	if code, err := s.Wait(testenv.StopTimeout); code != 0 || err != nil {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pid file still there after the server stopped: %v", err)
	}
}

func TestListenUnixSocketModeAndCleanup(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "gowsgi.sock")
	s := testenv.StartServer(t, "-b", "unix:"+sock, "--unix-socket-mode", "660",
		"--chdir", "testdata/apps", "rawapp:application")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket file mode %v, want a socket with 0660", fi.Mode())
	}
	c := unixClient(sock)
	resp, err := c.Get("http://unix/status?code=200")
	if err != nil {
		t.Fatalf("GET over the unix socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %q over the unix socket", resp.Status)
	}
	s.Signal(syscall.SIGTERM)
	if code, err := s.Wait(testenv.StopTimeout); code != 0 || err != nil {
		t.Fatalf("after SIGTERM: exit %d, %v", code, err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file still there after the server stopped: %v", err)
	}
}

func TestListenBacklog(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "--backlog", "37")
	stillServes(t, s)
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Logf("no ss(8): the backlog itself is checked by internal/listen's tests")
		return
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	out, err := exec.Command(ss, "-Hltn", "sport = :"+port).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	// State Recv-Q Send-Q Local Peer: for a listening socket Send-Q is the backlog.
	fields := strings.Fields(string(out))
	if len(fields) < 3 || fields[2] != "37" {
		t.Errorf("ss reports %q, want a Send-Q (backlog) of 37", out)
	}
}
