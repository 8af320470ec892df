// Package listen opens the front's listening sockets and owns gowsgi's integration with the
// process that started it: systemd socket activation (LISTEN_FDS), inherited sockets (fd://N),
// listeners handed to a new gowsgi binary on upgrade (GOWSGI_LISTEN_FDS), the pid file
// (-p/--pid) and readiness notification (sd_notify, NOTIFY_SOCKET).
//
// Binds are spelled as in gunicorn and parsed by config.ParseBind:
//
//	HOST:PORT, [::1]:PORT  TCP; HOST alone means port 8000; an empty HOST (":PORT") listens on
//	                       every IPv6 and IPv4 address, 0.0.0.0 on every IPv4 address only
//	unix:PATH              a unix socket; a stale socket file is replaced, a live one (someone
//	                       accepts connections on it) or a non-socket file is an error. The file
//	                       gets Options.UnixMode and is removed by Set.Close if it is still ours.
//	                       unix:@NAME is a Linux abstract socket (no file).
//	fd://N                 an already-open listening socket inherited at file descriptor N
//
// Sockets gowsgi opens itself are created with socket(2), bind(2) and listen(2) so that the
// backlog is Options.Backlog (gunicorn --backlog, default 2048, capped by the kernel at
// net.core.somaxconn) instead of Go's net.Listen choice.
//
// # systemd socket activation
//
// When LISTEN_PID is our pid and LISTEN_FDS is n > 0, file descriptors 3 .. 3+n-1 are
// listening sockets passed by systemd (LISTEN_FDNAMES, if present, names them in the log).
// Without binds they are the listeners; with binds, fd://N may refer to them and the other
// binds are opened as usual; systemd sockets no bind refers to are closed with a warning.
// Open removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the environment whatever it
// finds, so that worker processes never see them.
//
// # Binary upgrade
//
// A running gowsgi can hand its listeners to a new process: Set.Files returns duplicates in
// order, to be passed as ExtraFiles (so they land on fds 3, 4, ...), with InheritEnv(n) added
// to the new process's environment. systemd's LISTEN_PID cannot be used for that, since it must
// hold the child's pid, which os/exec cannot know before the exec; the private variable
// UpgradeEnv (GOWSGI_LISTEN_FDS=n) has no such requirement. When Open finds it, the inherited
// sockets are the listeners, in the parent's order, and the binds are not opened again (as
// gunicorn does on re-exec); a unix socket whose path is one of the binds is owned, and so
// removed on Close, by the new process. The old process calls Set.SetUnlinkOnClose(false)
// before it exits so that it leaves the socket files to the new one.
package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gowsgi/internal/config"
)

// DefaultBacklog is gunicorn's default --backlog.
const DefaultBacklog = 2048

// DefaultUnixMode is the default permission of unix socket files: anyone may connect who can
// reach the directory, as with gunicorn (which binds under its --umask, default 0). Restrict
// access with the directory's permissions or Options.UnixMode (--unix-socket-mode 660 lets
// only the owner and group connect, e.g. nginx in the socket's group).
const DefaultUnixMode os.FileMode = 0o666

// UpgradeEnv is the environment variable through which a gowsgi process passes its listeners
// to a new gowsgi process it starts (binary upgrade): its value is the number n of listening
// sockets on fds 3 .. 3+n-1, in the order of the parent's Set. Unlike systemd's LISTEN_FDS it
// needs no LISTEN_PID. Open honours it and removes it from the environment.
const UpgradeEnv = "GOWSGI_LISTEN_FDS"

// The systemd socket activation variables (sd_listen_fds(3)).
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
)

// firstFD is SD_LISTEN_FDS_START: inherited listeners start at fd 3.
const firstFD = 3

// Options tune Open. The zero value means the defaults.
type Options struct {
	// Backlog is the listen(2) backlog of sockets Open creates (0: DefaultBacklog).
	// Inherited sockets keep the backlog their creator gave them.
	Backlog int
	// UnixMode is the permission given to unix socket files (0: DefaultUnixMode). It is set
	// with chmod after bind and before listen, so it does not depend on the umask and no
	// client can connect before it is in place.
	UnixMode os.FileMode
	// Default are the binds used when binds is empty and no socket was inherited
	// (e.g. config.Config.EffectiveBinds).
	Default []string
	// Getenv reads the environment (nil: os.Getenv). Open still removes the variables it
	// consumed from the real environment.
	Getenv func(string) string
}

// Set is the listeners of one server, in the order of its binds.
type Set struct {
	// Listeners are the open listeners. The front closes them when it drains; Close closes
	// whatever is still open.
	Listeners []net.Listener
	// Warnings are things Open did that the operator should hear about (e.g. a systemd socket
	// no bind refers to was closed).
	Warnings []string

	desc    []string
	sockets []socketFile // unix socket files we own

	mu       sync.Mutex // guards keep and closed
	keep     bool       // SetUnlinkOnClose(false) was called
	closed   bool
	closeErr error
}

// socketFile is a unix socket file we bound, identified by device, inode and change time so
// that Close does not remove a file someone else put in its place.
type socketFile struct {
	path     string // absolute
	dev, ino uint64
	ctime    syscall.Timespec
}

// Describe returns one line per listener in gunicorn's style: http://127.0.0.1:8000,
// http://[::1]:8000 or unix:/run/app.sock; an inherited socket adds where it came from, e.g.
// "http://127.0.0.1:8000 (fd://3)" or "unix:/run/app.sock (systemd fd 3 "web")".
func (s *Set) Describe() []string { return append([]string(nil), s.desc...) }

// SetUnlinkOnClose sets whether Close removes the unix socket files Open created (default
// true). A process handing its listeners to a new one (binary upgrade) sets it to false.
func (s *Set) SetUnlinkOnClose(unlink bool) {
	s.mu.Lock()
	s.keep = !unlink
	s.mu.Unlock()
}

// Close closes every listener (those the front already closed are skipped) and removes the
// unix socket files Open bound, if each is still the socket we created: a file another server
// put in its place is left alone. A file is ours when it has the device, inode and change time
// it had after we bound it (ext4 reuses a freed inode number at once, hence the time) and
// nothing accepts connections on it any more. It is safe to call more than once.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closeErr
	}
	s.closed = true
	var errs []error
	for _, l := range s.Listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if !s.keep {
		for _, sf := range s.sockets {
			if err := sf.remove(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.closeErr = errors.Join(errs...)
	return s.closeErr
}

func (sf socketFile) remove() error {
	fi, err := os.Lstat(sf.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	id, ok := fileID(fi)
	if !ok || fi.Mode().Type() != os.ModeSocket || id.dev != sf.dev || id.ino != sf.ino || id.ctime != sf.ctime {
		return nil // replaced by someone else's socket (or file): not ours to remove
	}
	// Our listeners are closed by now: a socket that still accepts is someone else's, bound
	// in the same clock tick and given our freed inode number.
	c, err := net.DialTimeout("unix", sf.path, time.Second)
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err := os.Remove(sf.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Files returns a duplicate of every listener's file descriptor, in order, for handing the
// listeners to a new process (exec.Cmd.ExtraFiles, with InheritEnv(len(files))). The caller
// closes them. Closing them does not affect the listeners.
func (s *Set) Files() ([]*os.File, error) {
	files := make([]*os.File, 0, len(s.Listeners))
	for i, l := range s.Listeners {
		fl, ok := l.(interface{ File() (*os.File, error) })
		var f *os.File
		var err error
		if !ok {
			err = fmt.Errorf("%T has no file descriptor", l)
		} else {
			f, err = fl.File()
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("listener %d (%s): %w", i, s.desc[i], err)
		}
		files = append(files, f)
	}
	return files, nil
}

// InheritEnv returns the environment entries that make Open, in a process started with n
// listeners on fds 3 .. 3+n-1 (the files of Set.Files as ExtraFiles), take them over.
func InheritEnv(n int) []string {
	return []string{UpgradeEnv + "=" + strconv.Itoa(n)}
}

// inheritance is what the environment says about inherited listening sockets.
type inheritance struct {
	source string   // "systemd" or "upgrade"; "" when nothing is inherited
	n      int      // fds firstFD .. firstFD+n-1
	names  []string // systemd's LISTEN_FDNAMES, one per fd, or nil
}

// consumeEnv reads and unsets the socket activation variables.
func consumeEnv(getenv func(string) string) (inheritance, error) {
	upgrade := getenv(UpgradeEnv)
	pid, fds, names := getenv(envListenPID), getenv(envListenFDs), getenv(envListenFDNames)
	for _, k := range []string{UpgradeEnv, envListenPID, envListenFDs, envListenFDNames} {
		os.Unsetenv(k)
	}
	count := func(name, v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1<<16 {
			return 0, fmt.Errorf("%s=%q is not a number of file descriptors", name, v)
		}
		return n, nil
	}
	if upgrade != "" {
		n, err := count(UpgradeEnv, upgrade)
		if err != nil || n == 0 {
			return inheritance{}, err
		}
		return inheritance{source: "upgrade", n: n}, nil
	}
	if fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return inheritance{}, nil // not for us (LISTEN_PID names another process)
	}
	n, err := count(envListenFDs, fds)
	if err != nil || n == 0 {
		return inheritance{}, err
	}
	in := inheritance{source: "systemd", n: n}
	if names != "" {
		if parts := strings.Split(names, ":"); len(parts) == n {
			in.names = parts
		}
	}
	return in, nil
}

// Open opens the listeners for binds (see the package doc), taking over inherited sockets as
// the environment says. On error nothing stays open.
func Open(binds []string, opts Options) (*Set, error) {
	if opts.Backlog <= 0 {
		opts.Backlog = DefaultBacklog
	}
	if opts.UnixMode == 0 {
		opts.UnixMode = DefaultUnixMode
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	in, err := consumeEnv(opts.Getenv)
	if err != nil {
		return nil, err
	}
	// Inherited descriptors are not close-on-exec: mark them now so that none leaks into a
	// worker, whatever happens next.
	for i := 0; i < in.n; i++ {
		syscall.CloseOnExec(firstFD + i)
	}
	s := &Set{}
	used := map[int]bool{} // inherited fds taken over (or being taken over)
	fail := func(err error) (*Set, error) {
		s.Close()
		for fd := range unused(in, used) {
			syscall.Close(fd)
		}
		return nil, err
	}

	switch {
	case in.source == "upgrade" || in.source == "systemd" && len(binds) == 0:
		owned := map[string]bool{}
		for _, b := range binds {
			if network, addr, err := config.ParseBind(b); err == nil && network == "unix" {
				owned[absPath(addr)] = true
			}
		}
		for i := 0; i < in.n; i++ {
			fd := firstFD + i
			used[fd] = true
			if err := s.addFD(fd, in.label(fd)); err != nil {
				return fail(err)
			}
			if in.source == "upgrade" {
				s.own(s.Listeners[len(s.Listeners)-1], owned)
			}
		}
	default:
		if len(binds) == 0 {
			binds = opts.Default
		}
		for _, b := range binds {
			network, addr, err := config.ParseBind(b)
			if err != nil {
				return fail(fmt.Errorf("--bind: %w", err))
			}
			switch network {
			case "fd":
				fd, _ := strconv.Atoi(addr)
				if used[fd] {
					return fail(fmt.Errorf("bind %s: file descriptor %d is given twice", b, fd))
				}
				used[fd] = true
				if err := s.addFD(fd, in.label(fd)); err != nil {
					return fail(fmt.Errorf("bind %s: %w", b, err))
				}
			case "unix":
				l, sf, err := listenUnix(addr, opts.UnixMode, opts.Backlog)
				if err != nil {
					return fail(fmt.Errorf("bind %s: %w", b, err))
				}
				s.Listeners = append(s.Listeners, l)
				s.desc = append(s.desc, "unix:"+addr)
				if sf.path != "" {
					s.sockets = append(s.sockets, sf)
				}
			default:
				l, err := listenTCP(addr, opts.Backlog)
				if err != nil {
					return fail(fmt.Errorf("bind %s: %w", b, err))
				}
				s.Listeners = append(s.Listeners, l)
				s.desc = append(s.desc, "http://"+l.Addr().String())
			}
		}
	}
	for fd := range unused(in, used) {
		syscall.Close(fd)
		s.Warnings = append(s.Warnings, fmt.Sprintf("closed %s: no --bind fd://%d refers to it", in.label(fd), fd))
	}
	return s, nil
}

// unused yields the inherited fds not in used.
func unused(in inheritance, used map[int]bool) func(func(int) bool) {
	return func(yield func(int) bool) {
		for i := 0; i < in.n; i++ {
			if fd := firstFD + i; !used[fd] && !yield(fd) {
				return
			}
		}
	}
}

// label says where fd came from, for messages.
func (in inheritance) label(fd int) string {
	if fd < firstFD || fd >= firstFD+in.n {
		return "fd://" + strconv.Itoa(fd)
	}
	switch in.source {
	case "systemd":
		l := "systemd fd " + strconv.Itoa(fd)
		if in.names != nil && in.names[fd-firstFD] != "" {
			l += " " + strconv.Quote(in.names[fd-firstFD])
		}
		return l
	case "upgrade":
		return "fd " + strconv.Itoa(fd) + " from the previous gowsgi"
	}
	return "fd://" + strconv.Itoa(fd)
}

// addFD takes over the listening socket at fd: it is checked, duplicated into a net.Listener
// and closed.
func (s *Set) addFD(fd int, label string) error {
	l, err := fileListener(fd, label)
	if err != nil {
		return err
	}
	s.Listeners = append(s.Listeners, l)
	s.desc = append(s.desc, addrString(l.Addr())+" ("+label+")")
	return nil
}

// own records an inherited unix listener's socket file as ours when its path is one of the
// unix binds, so that Close removes it.
func (s *Set) own(l net.Listener, owned map[string]bool) {
	ua, ok := l.Addr().(*net.UnixAddr)
	if !ok || ua.Name == "" || ua.Name[0] == '@' || !owned[absPath(ua.Name)] {
		return
	}
	fi, err := os.Lstat(ua.Name)
	if err != nil {
		return
	}
	if id, ok := fileID(fi); ok {
		id.path = absPath(ua.Name)
		s.sockets = append(s.sockets, id)
	}
}

func addrString(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return "http://" + a.String()
	case *net.UnixAddr:
		return "unix:" + a.Name
	}
	return a.Network() + ":" + a.String()
}

// fileListener checks that fd is a listening stream socket and turns it into a net.Listener;
// fd itself is closed (the listener holds a duplicate).
func fileListener(fd int, label string) (net.Listener, error) {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	switch {
	case errors.Is(err, syscall.EBADF):
		return nil, fmt.Errorf("%s: file descriptor %d is not open", label, fd)
	case errors.Is(err, syscall.ENOTSOCK):
		return nil, fmt.Errorf("%s: file descriptor %d is not a socket", label, fd)
	case err != nil:
		return nil, fmt.Errorf("%s: getsockopt SO_TYPE: %w", label, err)
	case typ != syscall.SOCK_STREAM:
		return nil, fmt.Errorf("%s: file descriptor %d is not a stream socket (SO_TYPE %d)", label, fd, typ)
	}
	acc, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("%s: getsockopt SO_ACCEPTCONN: %w", label, err)
	}
	if acc == 0 {
		return nil, fmt.Errorf("%s: file descriptor %d is a socket but not listening", label, fd)
	}
	f := os.NewFile(uintptr(fd), label)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return l, nil
}

// listenTCP creates a TCP socket listening on addr with the given backlog.
func listenTCP(addr string, backlog int) (net.Listener, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	if ta.IP == nil {
		// No host: every address, IPv6 and IPv4 on one socket where IPv6 exists.
		l, err := listenSocket(syscall.AF_INET6, &syscall.SockaddrInet6{Port: ta.Port}, true, backlog, addr)
		if !errors.Is(err, syscall.EAFNOSUPPORT) {
			return l, err
		}
		return listenSocket(syscall.AF_INET, &syscall.SockaddrInet4{Port: ta.Port}, false, backlog, addr)
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &syscall.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		return listenSocket(syscall.AF_INET, sa, false, backlog, addr)
	}
	sa := &syscall.SockaddrInet6{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To16())
	if ta.Zone != "" {
		if ifi, err := net.InterfaceByName(ta.Zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.ParseUint(ta.Zone, 10, 32); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			return nil, fmt.Errorf("unknown IPv6 zone %q", ta.Zone)
		}
	}
	return listenSocket(syscall.AF_INET6, sa, false, backlog, addr)
}

// listenSocket creates, binds and listens on a TCP socket. dualStack clears IPV6_V6ONLY on an
// IPv6 socket (the no-host case); otherwise it stays at the system default, as in gunicorn.
func listenSocket(family int, sa syscall.Sockaddr, dualStack bool, backlog int, name string) (net.Listener, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "tcp:"+name)
	defer f.Close() // the listener holds a duplicate
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if family == syscall.AF_INET6 && dualStack {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
			return nil, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return nil, err // "address already in use" reads best without a prefix
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		return nil, os.NewSyscallError("listen", err)
	}
	return net.FileListener(f)
}

// maxUnixPath is the longest unix socket path Linux accepts (sun_path is 108 bytes with
// the terminating NUL).
const maxUnixPath = 107

// listenUnix creates a unix socket listening at path with mode and backlog. For a path in
// the file system it returns the socket file's identity; abstract sockets (@NAME) have none.
func listenUnix(path string, mode os.FileMode, backlog int) (net.Listener, socketFile, error) {
	var sf socketFile
	if len(path) > maxUnixPath {
		return nil, sf, fmt.Errorf("socket path is %d bytes long; at most %d are possible", len(path), maxUnixPath)
	}
	abstract := path[0] == '@'
	if !abstract {
		if err := removeStale(path); err != nil {
			return nil, sf, err
		}
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, sf, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "unix:"+path)
	defer f.Close() // the listener holds a duplicate
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		return nil, sf, err
	}
	if !abstract {
		// Before listen: until then a client's connect is refused, so no one connects
		// through the umask's mode.
		err := os.Chmod(path, mode)
		var fi os.FileInfo
		if err == nil {
			fi, err = os.Lstat(path)
		}
		if err == nil {
			var ok bool
			if sf, ok = fileID(fi); !ok {
				err = errors.New("no inode")
			}
		}
		if err != nil {
			os.Remove(path) // just bound, not listening: ours
			return nil, socketFile{}, err
		}
		sf.path = absPath(path)
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		sf.remove()
		return nil, socketFile{}, os.NewSyscallError("listen", err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		sf.remove()
		return nil, socketFile{}, err
	}
	return l, sf, nil
}

// removeStale removes a socket file left at path by a server that is gone. A socket someone
// still accepts on, one whose state cannot be told, or a file that is not a socket is an
// error: it is not ours to replace.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: another process accepts connections on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and may be in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the stale socket: %w", err)
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// fileID returns fi's identity (without the path).
func fileID(fi os.FileInfo) (socketFile, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return socketFile{}, false
	}
	return socketFile{dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim}, true
}
