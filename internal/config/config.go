// Package config holds gowsgi's settings: one documented struct whose zero values are useful,
// the defaults gunicorn users expect, and a Validate that names the offending setting. It parses
// nothing from the command line (package cli does) and imports no server code.
package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration of a gowsgi server.
type Config struct {
	// App is the application, as MODULE[:CALLABLE] (gunicorn's spelling).
	App string
	// Binds are the addresses to listen on: HOST:PORT, [::1]:PORT, HOST (port 8000),
	// unix:PATH or fd://N (an inherited listening socket). Empty means the sockets passed by
	// systemd socket activation if any, else 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.
	Binds []string
	// Workers is the number of worker processes (default $WEB_CONCURRENCY, else 1).
	Workers int
	// Threads is the number of Python threads per worker (default 1).
	Threads int
	// Prefetch is how many requests each worker may hold queued beyond its threads (0: none,
	// each request waits in the front for a free thread; -1, the default: 3 × Threads).
	// Requests go to idle threads first; a worker's queued requests run back to back, a
	// worker whose threads are all held up hands them back, and a worker that dies before
	// starting them loses none.
	Prefetch int
	// Chdir is the directory to change to before loading the app; "" keeps the current one.
	Chdir string
	// PythonPath lists directories prepended to sys.path.
	PythonPath []string
	// Env lists KEY=VALUE pairs set in the environment before workers start.
	Env []string
	// LogLevel is debug, info (default), warning, error or critical.
	LogLevel string
	// AccessLog is the access log file; "-" is stdout, "" disables it.
	AccessLog string
	// ErrorLog is the error log file; "-" or "" is stderr.
	ErrorLog string
	// CheckConfig validates the configuration and loads the app, then exits.
	CheckConfig bool
	// GracefulTimeout bounds how long in-flight requests may run after a stop signal
	// (default 30s).
	GracefulTimeout time.Duration
	// Timeout is the per-request timeout (default 30s; 0 disables it, as in gunicorn).
	Timeout time.Duration
	// KeepAlive is how long an idle keep-alive connection is kept (default 5s).
	KeepAlive time.Duration
	// LimitRequestLine, LimitRequestFields and LimitRequestFieldSize bound a request head
	// (gunicorn defaults 4094, 100, 8190; 0 means the default).
	LimitRequestLine      int
	LimitRequestFields    int
	LimitRequestFieldSize int
	// MaxRequests recycles a worker after this many requests (0: never); MaxRequestsJitter adds
	// a random 0..jitter per worker so they do not recycle together.
	MaxRequests       int
	MaxRequestsJitter int
	// MaxWorkerMemoryMB recycles a worker whose resident memory exceeds it (0: never).
	MaxWorkerMemoryMB int
	// ScriptName is the SCRIPT_NAME the app is mounted at (from the SCRIPT_NAME environment
	// variable, as gunicorn does).
	ScriptName string
	// Backlog is the listen(2) backlog of the sockets gowsgi opens (gunicorn --backlog,
	// default 2048); the kernel caps it at net.core.somaxconn. Inherited sockets keep theirs.
	Backlog int
	// Pidfile is the file the front's pid is written to (gunicorn -p/--pid); "" writes none.
	Pidfile string
	// WorkerScheduling is the Linux scheduling policy of the worker processes: "batch"
	// (SCHED_BATCH, the default; "" means it too) or "normal" (SCHED_OTHER). A batch task does
	// not preempt the running one when it wakes, so on a busy core the front and the workers
	// hand each other whole batches of requests instead of one request per switch; the front
	// itself keeps the normal policy, so the network side stays responsive.
	WorkerScheduling string
	// UnixSocketMode is the permission of unix:PATH socket files (default 0666: anyone who can
	// reach the directory may connect, as with gunicorn's default umask 0).
	UnixSocketMode os.FileMode
}

// Default returns the defaults, reading PORT, WEB_CONCURRENCY and SCRIPT_NAME through getenv.
func Default(getenv func(string) string) Config {
	c := Config{
		Workers:         1,
		Threads:         1,
		Prefetch:        -1,
		LogLevel:        "info",
		ErrorLog:        "-",
		GracefulTimeout: 30 * time.Second,
		Timeout:         30 * time.Second,
		KeepAlive:       5 * time.Second,
		ScriptName:      getenv("SCRIPT_NAME"),
		Backlog:         2048,
		UnixSocketMode:  0o666,
	}
	if n, err := strconv.Atoi(getenv("WEB_CONCURRENCY")); err == nil && n > 0 {
		c.Workers = n
	}
	return c
}

// EffectivePrefetch returns Prefetch, or its default for Threads when it is negative.
func (c *Config) EffectivePrefetch() int {
	if c.Prefetch < 0 {
		return 3 * c.Threads
	}
	return c.Prefetch
}

// EffectiveBinds returns Binds, or the default bind when none was given.
func (c *Config) EffectiveBinds(getenv func(string) string) []string {
	if len(c.Binds) > 0 {
		return c.Binds
	}
	if p := getenv("PORT"); p != "" {
		return []string{"0.0.0.0:" + p}
	}
	return []string{"127.0.0.1:8000"}
}

// Error names the setting that is wrong.
type Error struct {
	Field string // the flag spelling, e.g. "--threads"
	Msg   string
}

func (e *Error) Error() string { return e.Field + ": " + e.Msg }

// Validate checks every setting and returns an *Error for the first bad one.
func (c *Config) Validate() error {
	if c.App == "" {
		return &Error{"APP_MODULE", "no application given (e.g. gowsgi myproject.wsgi:application)"}
	}
	if c.Workers < 1 {
		return &Error{"--workers", fmt.Sprintf("must be at least 1, got %d", c.Workers)}
	}
	if c.Threads < 1 || c.Threads > 1024 {
		return &Error{"--threads", fmt.Sprintf("must be between 1 and 1024, got %d", c.Threads)}
	}
	if c.Prefetch < -1 || c.Prefetch > 4096 { // -1: the default, 3 × Threads
		return &Error{"--prefetch", fmt.Sprintf("must be between 0 and 4096, got %d", c.Prefetch)}
	}
	for _, b := range c.Binds {
		if _, _, err := ParseBind(b); err != nil {
			return &Error{"--bind", err.Error()}
		}
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return &Error{"--env", fmt.Sprintf("%q is not KEY=VALUE", e)}
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warning", "warn", "error", "critical":
	default:
		return &Error{"--log-level", fmt.Sprintf("unknown level %q (want debug, info, warning, error or critical)", c.LogLevel)}
	}
	if c.GracefulTimeout < 0 {
		return &Error{"--graceful-timeout", "must not be negative"}
	}
	if c.KeepAlive < 0 {
		return &Error{"--keep-alive", "must not be negative"}
	}
	if c.Backlog < 1 || c.Backlog > 1<<31-1 {
		return &Error{"--backlog", fmt.Sprintf("must be between 1 and 2147483647, got %d", c.Backlog)}
	}
	switch c.WorkerScheduling {
	case "", "batch", "normal":
	default:
		return &Error{"--worker-scheduling", fmt.Sprintf("unknown policy %q (want batch or normal)", c.WorkerScheduling)}
	}
	if c.UnixSocketMode == 0 || c.UnixSocketMode&^0o777 != 0 {
		return &Error{"--unix-socket-mode", fmt.Sprintf("must be an octal mode from 1 to 777, got %#o", uint32(c.UnixSocketMode))}
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"--limit-request-line", c.LimitRequestLine}, {"--limit-request-fields", c.LimitRequestFields}, {"--limit-request-field_size", c.LimitRequestFieldSize},
		{"--max-requests", c.MaxRequests}, {"--max-requests-jitter", c.MaxRequestsJitter}, {"--max-worker-memory", c.MaxWorkerMemoryMB}} {
		if l.v < 0 {
			return &Error{l.name, "must not be negative"}
		}
	}
	return nil
}

// ParseBind turns a bind address into a network ("tcp", "unix" or "fd") and an address: for
// tcp and unix one for net.Listen, for fd the decimal number of an inherited listening socket
// (fd://N). HOST alone means port 8000, as in gunicorn.
func ParseBind(s string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return "", "", fmt.Errorf("%q: empty unix socket path", s)
		}
		return "unix", path, nil
	}
	if fd, ok := strings.CutPrefix(s, "fd://"); ok {
		n, err := parseFD(fd)
		if err != nil {
			return "", "", fmt.Errorf("%q: %v", s, err)
		}
		return "fd", strconv.Itoa(n), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// HOST without a port, or a bare IPv6 literal in brackets.
		h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if h == "" || strings.ContainsAny(h, "/ ") {
			return "", "", fmt.Errorf("%q is not HOST:PORT, HOST or unix:PATH", s)
		}
		return "tcp", net.JoinHostPort(h, "8000"), nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// parseFD parses the N of fd://N: a decimal file descriptor number, digits only.
func parseFD(s string) (int, error) {
	if s == "" || len(s) > 9 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("file descriptor %q is not a number from 0 to 999999999", s)
	}
	n, _ := strconv.Atoi(s)
	return n, nil
}
