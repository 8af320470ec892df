package listen

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// roundTrip checks that l accepts: it dials addr on network, and the accepted connection
// carries bytes both ways.
func roundTrip(t *testing.T, l net.Listener, network, addr string) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	var s net.Conn
	select {
	case s = <-accepted:
		if s == nil {
			t.Fatalf("accept on %s failed", addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection accepted on %s", addr)
	}
	defer s.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
}

func open(t *testing.T, binds []string, opts Options) *Set {
	t.Helper()
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	s, err := Open(binds, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", binds, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenTCPBinds(t *testing.T) {
	s := open(t, []string{"127.0.0.1:0", ":0", "0.0.0.0:0"}, Options{})
	if len(s.Listeners) != 3 {
		t.Fatalf("got %d listeners", len(s.Listeners))
	}
	desc := s.Describe()
	for i, l := range s.Listeners {
		port := l.Addr().(*net.TCPAddr).Port
		if port == 0 {
			t.Fatalf("listener %d: port 0", i)
		}
		if !strings.HasPrefix(desc[i], "http://") || !strings.HasSuffix(desc[i], ":"+strconv.Itoa(port)) {
			t.Errorf("Describe()[%d] = %q", i, desc[i])
		}
		roundTrip(t, l, "tcp4", "127.0.0.1:"+strconv.Itoa(port))
	}
	if want := "http://127.0.0.1:" + strconv.Itoa(s.Listeners[0].Addr().(*net.TCPAddr).Port); desc[0] != want {
		t.Errorf("Describe()[0] = %q, want %q", desc[0], want)
	}
	// ":PORT" is every address, IPv6 included; "0.0.0.0:PORT" is IPv4 only, as in gunicorn.
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		roundTrip(t, s.Listeners[1], "tcp6", "[::1]:"+strconv.Itoa(s.Listeners[1].Addr().(*net.TCPAddr).Port))
		if c, err := net.DialTimeout("tcp6", "[::1]:"+strconv.Itoa(s.Listeners[2].Addr().(*net.TCPAddr).Port), time.Second); err == nil {
			c.Close()
			t.Errorf("0.0.0.0 listener accepted an IPv6 connection")
		}
	}
}

func TestOpenIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	s := open(t, []string{"[::1]:0"}, Options{})
	port := s.Listeners[0].Addr().(*net.TCPAddr).Port
	if want := fmt.Sprintf("http://[::1]:%d", port); s.Describe()[0] != want {
		t.Errorf("Describe() = %q, want %q", s.Describe(), want)
	}
	roundTrip(t, s.Listeners[0], "tcp6", fmt.Sprintf("[::1]:%d", port))
}

func TestOpenHostOnlyMeansPort8000(t *testing.T) {
	// A random loopback address, so that nothing else holds its port 8000.
	host := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(250))
	s := open(t, []string{host}, Options{})
	if want := "http://" + host + ":8000"; s.Describe()[0] != want {
		t.Fatalf("Describe() = %q, want %q", s.Describe(), want)
	}
	roundTrip(t, s.Listeners[0], "tcp", host+":8000")
}

func TestOpenDefaultBinds(t *testing.T) {
	s := open(t, nil, Options{Default: []string{"127.0.0.1:0"}})
	if len(s.Listeners) != 1 || !strings.HasPrefix(s.Describe()[0], "http://127.0.0.1:") {
		t.Fatalf("got %q", s.Describe())
	}
}

func TestOpenErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		bind, want string
	}{
		{taken.Addr().String(), "address already in use"},
		{"127.0.0.1:http", "--bind"},
		{"unix:" + strings.Repeat("x", 200), "at most 107"},
		{"fd://999999", "not open"},
	} {
		s, err := Open([]string{"127.0.0.1:0", tc.bind}, Options{Getenv: func(string) string { return "" }})
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.bind)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): %v, want it to mention %q", tc.bind, err, tc.want)
		}
	}
}

func TestBacklog(t *testing.T) {
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		somaxconn, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	binds, families := []string{"127.0.0.1:0"}, []int{syscall.AF_INET}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		binds, families = append(binds, "[::1]:0"), append(families, syscall.AF_INET6)
	}
	for _, tc := range []struct{ backlog, want int }{{17, 17}, {0, min(DefaultBacklog, somaxconn)}} {
		s := open(t, binds, Options{Backlog: tc.backlog})
		for i, family := range families {
			got, err := listenBacklog(family, s.Listeners[i].Addr().(*net.TCPAddr).Port)
			if err != nil {
				t.Fatalf("read the backlog through sock_diag: %v", err)
			}
			if got != tc.want {
				t.Errorf("Backlog %d: the kernel reports %d for %s, want %d", tc.backlog, got, s.Describe()[i], tc.want)
			}
		}
	}
	// And in behaviour: with backlog 1 and no accept, the kernel queues two connections and
	// drops the SYNs of the next ones; with the default all connect.
	for _, tc := range []struct {
		backlog  int
		min, max int
	}{{1, 1, 3}, {0, 8, 8}} {
		s := open(t, []string{"127.0.0.1:0"}, Options{Backlog: tc.backlog})
		addr := s.Listeners[0].Addr().String()
		connected := 0
		for range 8 {
			c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
			if err == nil {
				connected++
				defer c.Close()
			}
		}
		if connected < tc.min || connected > tc.max {
			t.Errorf("backlog %d: %d of 8 connections got through without accept, want %d..%d", tc.backlog, connected, tc.min, tc.max)
		}
	}
}

func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	for _, tc := range []struct {
		mode, want os.FileMode
	}{{0, 0o666}, {0o660, 0o660}, {0o600, 0o600}} {
		path := filepath.Join(dir, fmt.Sprintf("s%o.sock", tc.mode))
		s := open(t, []string{"unix:" + path}, Options{UnixMode: tc.mode})
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tc.want {
			t.Errorf("mode %o: socket file mode %v, want socket %o", tc.mode, fi.Mode(), tc.want)
		}
		if got := s.Describe(); len(got) != 1 || got[0] != "unix:"+path {
			t.Errorf("Describe() = %q", got)
		}
		roundTrip(t, s.Listeners[0], "unix", path)
		s.Listeners[0].Close() // as the front does when it drains
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("socket file gone before Set.Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file still there after Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}

func TestUnixSocketRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	s := open(t, []string{"unix:rel.sock"}, Options{})
	roundTrip(t, s.Listeners[0], "unix", "rel.sock")
	s.Close()
	if _, err := os.Lstat("rel.sock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Close: %v", err)
	}
}

func TestUnixSocketReplacesOnlyStale(t *testing.T) {
	dir := t.TempDir()

	// A stale socket (its server is gone) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	s := open(t, []string{"unix:" + stale}, Options{})
	roundTrip(t, s.Listeners[0], "unix", stale)

	// A live one is not.
	live := filepath.Join(dir, "live.sock")
	ll, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	if s, err := Open([]string{"unix:" + live}, Options{Getenv: func(string) string { return "" }}); err == nil {
		s.Close()
		t.Fatal("Open took over a socket another listener accepts on")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("live socket: %v, want 'in use'", err)
	}
	if c, err := ll.Accept(); err == nil { // Open's probe
		c.Close()
	}
	roundTrip(t, ll, "unix", live)

	// Nor is a file that is not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("data"), 0o644)
	if s, err := Open([]string{"unix:" + file}, Options{Getenv: func(string) string { return "" }}); err == nil {
		s.Close()
		t.Fatal("Open replaced a regular file")
	} else if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("regular file changed: %q", b)
	}
}

func TestUnixSocketCloseLeavesAReplacement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	s := open(t, []string{"unix:" + path}, Options{})
	s.Listeners[0].Close()
	// Another server removed our (now dead) socket and bound its own at the same path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	s.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed the socket another server put in place: %v", err)
	}
	roundTrip(t, other, "unix", path)
}

func TestUnixSocketKeptForUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	s := open(t, []string{"unix:" + path}, Options{})
	s.SetUnlinkOnClose(false)
	s.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket file removed despite SetUnlinkOnClose(false): %v", err)
	}
}

func TestUnixAbstract(t *testing.T) {
	name := fmt.Sprintf("@gowsgi-listen-test-%d-%d", os.Getpid(), rand.Int64())
	s := open(t, []string{"unix:" + name}, Options{})
	if got := s.Describe()[0]; got != "unix:"+name {
		t.Errorf("Describe() = %q", got)
	}
	roundTrip(t, s.Listeners[0], "unix", name)
}

// dupFD returns a duplicate of l's descriptor as a bare number (the caller or Open closes it).
func dupFD(t *testing.T, l net.Listener) int {
	t.Helper()
	f, err := l.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// fdOpen reports whether fd is an open descriptor.
func fdOpen(fd int) bool {
	_, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	return errno == 0
}

// fdLeaks reports whether fd is open without close-on-exec: it would be inherited by every
// process started afterwards (the workers). Open closes what it takes over, and the number
// may be reused at once by a close-on-exec duplicate, so this is the property to check.
func fdLeaks(fd int) bool {
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	return errno == 0 && flags&syscall.FD_CLOEXEC == 0
}

func TestFDBind(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	tfd, ufd := dupFD(t, tl), dupFD(t, ul)
	s := open(t, []string{"fd://" + strconv.Itoa(tfd), "fd://" + strconv.Itoa(ufd)}, Options{})
	if fdLeaks(tfd) || fdLeaks(ufd) {
		t.Errorf("the inherited descriptors are still open without close-on-exec after Open (they would leak into workers)")
	}
	want := []string{
		fmt.Sprintf("http://%s (fd://%d)", tl.Addr(), tfd),
		fmt.Sprintf("unix:%s (fd://%d)", path, ufd),
	}
	if got := s.Describe(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	// Close the originals: only the set's listeners accept now.
	tl.Close()
	ul.(*net.UnixListener).SetUnlinkOnClose(false)
	ul.Close()
	roundTrip(t, s.Listeners[0], "tcp", tl.Addr().String())
	roundTrip(t, s.Listeners[1], "unix", path)
	s.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the socket file of an inherited listener: %v", err)
	}
}

func TestFDBindRejects(t *testing.T) {
	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	notListening, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(notListening)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	uf, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer uf.Close()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	good := dupFD(t, tl) // Open takes it over (and closes it) before it sees the duplicate

	for _, tc := range []struct {
		binds []string
		want  string
	}{
		{[]string{fmt.Sprintf("fd://%d", file.Fd())}, "not a socket"},
		{[]string{fmt.Sprintf("fd://%d", notListening)}, "not listening"},
		{[]string{fmt.Sprintf("fd://%d", uf.Fd())}, "not a stream socket"},
		{[]string{"fd://999999"}, "not open"},
		{[]string{fmt.Sprintf("fd://%d", good), fmt.Sprintf("fd://%d", good)}, "twice"},
		{[]string{"fd://x"}, "--bind"},
	} {
		s, err := Open(tc.binds, Options{Getenv: func(string) string { return "" }})
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", tc.binds)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): %v, want it to mention %q", tc.binds, err, tc.want)
		}
	}
	if !fdOpen(int(file.Fd())) || !fdOpen(notListening) {
		t.Errorf("Open closed a descriptor it refused")
	}
}

func TestEnvironmentConsumed(t *testing.T) {
	// LISTEN_PID names another process: the variables are not for us, but are still removed.
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "web")
	s, err := Open(nil, Options{Default: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Listeners) != 1 || !strings.HasPrefix(s.Describe()[0], "http://127.0.0.1:") {
		t.Fatalf("got %q, want the default bind", s.Describe())
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still set after Open", k)
		}
	}

	for _, kv := range [][2]string{{"LISTEN_FDS", "x"}, {UpgradeEnv, "-1"}} {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		t.Setenv(kv[0], kv[1])
		if s, err := Open(nil, Options{Default: []string{"127.0.0.1:0"}}); err == nil {
			s.Close()
			t.Errorf("%s=%s: Open succeeded", kv[0], kv[1])
		} else if !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: %v, want it named", kv[0], kv[1], err)
		}
	}
}

func TestFilesAndInheritEnv(t *testing.T) {
	s := open(t, []string{"127.0.0.1:0", "unix:" + filepath.Join(t.TempDir(), "s.sock")}, Options{})
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("got %d files", len(files))
	}
	for _, f := range files {
		defer f.Close()
		acc, err := syscall.GetsockoptInt(int(f.Fd()), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		if err != nil || acc != 1 {
			t.Errorf("%s: SO_ACCEPTCONN %d %v", f.Name(), acc, err)
		}
	}
	if got := InheritEnv(2); len(got) != 1 || got[0] != "GOWSGI_LISTEN_FDS=2" {
		t.Errorf("InheritEnv(2) = %q", got)
	}
}

// helperReport is what TestHelperProcess prints: after Open, then after Close.
type helperReport struct {
	Err         string
	Describe    []string
	Warnings    []string
	Env         []string // LISTEN_* and GOWSGI_LISTEN_FDS left in the environment
	LeakFDs     []int    // inherited fds left open without close-on-exec
	SocketFiles []string // unix socket paths that exist after Close
}

// TestHelperProcess is not a test: it is the child the socket activation tests start, with
// listeners on fds 3.... GOWSGI_TEST_FAKE_LISTEN_PID=1 makes it set LISTEN_PID to its own pid
// first, which systemd does between fork and exec and os/exec cannot.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("GOWSGI_TEST_HELPER")
	if mode == "" {
		return
	}
	if mode == "sleep" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if os.Getenv("GOWSGI_TEST_FAKE_LISTEN_PID") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	var binds []string
	if b := os.Getenv("GOWSGI_TEST_BINDS"); b != "" {
		binds = strings.Split(b, ",")
	}
	out := json.NewEncoder(os.Stdout)
	s, err := Open(binds, Options{Default: []string{"127.0.0.1:0"}})
	var rep helperReport
	if err != nil {
		rep.Err = err.Error()
		out.Encode(rep)
		os.Exit(0)
	}
	rep.Describe, rep.Warnings = s.Describe(), s.Warnings
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, UpgradeEnv+"=") {
			rep.Env = append(rep.Env, kv)
		}
	}
	n, _ := strconv.Atoi(os.Getenv("GOWSGI_TEST_NFDS"))
	for fd := 3; fd < 3+n; fd++ {
		if fdLeaks(fd) {
			rep.LeakFDs = append(rep.LeakFDs, fd)
		}
	}
	out.Encode(rep)
	// Greet one client per listener, in order, with the listener's description.
	for i, l := range s.Listeners {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintln(c, rep.Describe[i])
		c.Close()
	}
	s.Close()
	rep = helperReport{}
	for _, b := range binds {
		if p, ok := strings.CutPrefix(b, "unix:"); ok {
			if _, err := os.Lstat(p); err == nil {
				rep.SocketFiles = append(rep.SocketFiles, p)
			}
		}
	}
	out.Encode(rep)
	os.Exit(0)
}

// helper is a running TestHelperProcess.
type helper struct {
	t   *testing.T
	dec *json.Decoder
}

// startHelper runs TestHelperProcess with files on fds 3... and env added.
func startHelper(t *testing.T, files []*os.File, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "GOWSGI_TEST_HELPER=1", "GOWSGI_TEST_NFDS="+strconv.Itoa(len(files)))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The child has its copies: ours would keep the sockets accepting.
	for _, f := range files {
		f.Close()
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	timer := time.AfterFunc(30*time.Second, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	t.Cleanup(func() { timer.Stop() })
	return &helper{t: t, dec: json.NewDecoder(bufio.NewReader(stdout))}
}

func (h *helper) report() helperReport {
	h.t.Helper()
	var r helperReport
	if err := h.dec.Decode(&r); err != nil {
		h.t.Fatalf("helper report: %v", err)
	}
	return r
}

// greeting dials the helper and returns the first line it sends.
func greeting(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// passListeners returns a TCP and a unix listener's files for ExtraFiles; the test's own
// listeners are closed, so that only the child accepts.
func passListeners(t *testing.T) (files []*os.File, tcpAddr, sockPath string) {
	t.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sockPath = filepath.Join(t.TempDir(), "a.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	for _, l := range []interface {
		File() (*os.File, error)
		Close() error
	}{tl.(*net.TCPListener), ul} {
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		l.Close()
	}
	return files, tl.Addr().String(), sockPath
}

func TestSystemdActivation(t *testing.T) {
	files, tcpAddr, sock := passListeners(t)
	h := startHelper(t, files, "GOWSGI_TEST_FAKE_LISTEN_PID=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin")
	r := h.report()
	if r.Err != "" {
		t.Fatalf("Open in the child: %s", r.Err)
	}
	want := []string{"http://" + tcpAddr + ` (systemd fd 3 "web")`, "unix:" + sock + ` (systemd fd 4 "admin")`}
	if strings.Join(r.Describe, "|") != strings.Join(want, "|") {
		t.Errorf("Describe() = %q, want %q", r.Describe, want)
	}
	if len(r.Env) != 0 || len(r.LeakFDs) != 0 || len(r.Warnings) != 0 {
		t.Errorf("env left %q, fds leaking %v, warnings %q", r.Env, r.LeakFDs, r.Warnings)
	}
	if got := greeting(t, "tcp", tcpAddr); got != want[0] {
		t.Errorf("TCP listener greets %q", got)
	}
	if got := greeting(t, "unix", sock); got != want[1] {
		t.Errorf("unix listener greets %q", got)
	}
	if r := h.report(); len(r.SocketFiles) != 0 {
		t.Errorf("unexpected %v", r.SocketFiles)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the child removed systemd's socket file: %v", err)
	}
}

func TestSystemdActivationWithBinds(t *testing.T) {
	files, _, sock := passListeners(t)
	h := startHelper(t, files, "GOWSGI_TEST_FAKE_LISTEN_PID=1", "LISTEN_FDS=2",
		"GOWSGI_TEST_BINDS=fd://4,127.0.0.1:0")
	r := h.report()
	if r.Err != "" {
		t.Fatalf("Open in the child: %s", r.Err)
	}
	if len(r.Describe) != 2 || r.Describe[0] != "unix:"+sock+" (systemd fd 4)" || !strings.HasPrefix(r.Describe[1], "http://127.0.0.1:") {
		t.Fatalf("Describe() = %q", r.Describe)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "systemd fd 3") {
		t.Errorf("Warnings = %q, want one about the unused fd 3", r.Warnings)
	}
	if len(r.Env) != 0 || len(r.LeakFDs) != 0 {
		t.Errorf("env left %q, fds leaking %v", r.Env, r.LeakFDs)
	}
	if got := greeting(t, "unix", sock); got != r.Describe[0] {
		t.Errorf("unix listener greets %q", got)
	}
	addr := strings.TrimPrefix(r.Describe[1], "http://")
	if got := greeting(t, "tcp", addr); got != r.Describe[1] {
		t.Errorf("TCP listener greets %q", got)
	}
}

func TestSystemdActivationOtherPid(t *testing.T) {
	files, _, _ := passListeners(t)
	// No GOWSGI_TEST_FAKE_LISTEN_PID: LISTEN_PID is the test's pid, not the child's.
	h := startHelper(t, files, "LISTEN_PID="+strconv.Itoa(os.Getpid()), "LISTEN_FDS=2")
	r := h.report()
	if r.Err != "" {
		t.Fatalf("Open in the child: %s", r.Err)
	}
	if len(r.Describe) != 1 || !strings.HasPrefix(r.Describe[0], "http://127.0.0.1:") || strings.Contains(r.Describe[0], "fd") {
		t.Errorf("Describe() = %q, want only the default bind", r.Describe)
	}
	if len(r.Env) != 0 {
		t.Errorf("env left %q", r.Env)
	}
	greeting(t, "tcp", strings.TrimPrefix(r.Describe[0], "http://"))
}

func TestUpgradeHandOver(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "up.sock")
	binds := []string{"unix:" + sock, "127.0.0.1:0"}
	s := open(t, binds, Options{})
	files, err := s.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		defer f.Close()
	}
	h := startHelper(t, files, append(InheritEnv(len(files)), "GOWSGI_TEST_BINDS="+strings.Join(binds, ","))...)
	// The old process stops accepting and leaves the socket file to the new one.
	s.SetUnlinkOnClose(false)
	s.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the old process removed the socket file: %v", err)
	}
	r := h.report()
	if r.Err != "" {
		t.Fatalf("Open in the child: %s", r.Err)
	}
	if len(r.Describe) != 2 || !strings.HasPrefix(r.Describe[0], "unix:"+sock+" (fd 3 ") ||
		!strings.HasPrefix(r.Describe[1], "http://"+s.Listeners[1].Addr().String()+" (fd 4 ") {
		t.Fatalf("Describe() = %q, want the parent's listeners in order", r.Describe)
	}
	if len(r.Env) != 0 || len(r.LeakFDs) != 0 {
		t.Errorf("env left %q, fds leaking %v", r.Env, r.LeakFDs)
	}
	if got := greeting(t, "unix", sock); got != r.Describe[0] {
		t.Errorf("unix listener greets %q", got)
	}
	if got := greeting(t, "tcp", s.Listeners[1].Addr().String()); got != r.Describe[1] {
		t.Errorf("TCP listener greets %q", got)
	}
	if r := h.report(); len(r.SocketFiles) != 0 {
		t.Errorf("the new process left its socket file %v on Close", r.SocketFiles)
	}
}
