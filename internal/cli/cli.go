// Package cli turns gowsgi's command line into a config.Config and runs the matching mode: the
// front (serve), a worker process (re-executed by the front), or a check. It decides exit codes
// in one place; it starts no goroutines and opens no sockets itself.
package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gowsgi/internal/config"
	"gowsgi/internal/logging"
	"gowsgi/internal/worker"
	"gowsgi/internal/wsgi"
)

// Version is gowsgi's version.
const Version = "0.1.0"

// workerEnv carries a worker's options from the front to the re-executed binary.
const workerEnv = "GOWSGI_WORKER_CONFIG"

// workerArg is argv[1] of a worker process.
const workerArg = "__worker"

// Exit codes of the gowsgi command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitAppLoad = 3 // as gunicorn's WORKER_BOOT_ERROR: the app could not be loaded
)

// Main runs gowsgi with args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == workerArg {
		return runWorker(stderr)
	}
	cfg, action, err := parseArgs(args, os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "gowsgi: error: %v\nRun 'gowsgi --help' for usage.\n", err)
		return exitUsage
	}
	switch action {
	case actionHelp:
		fmt.Fprint(stdout, usage)
		return exitOK
	case actionVersion:
		fmt.Fprintf(stdout, "gowsgi %s\n", Version)
		return exitOK
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "gowsgi: error: %v\n", err)
		return exitUsage
	}
	return serve(cfg, stdout, stderr)
}

type action int

const (
	actionServe action = iota
	actionHelp
	actionVersion
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// seconds is a duration flag given in (possibly fractional) seconds, as gunicorn takes them.
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return strconv.FormatFloat(s.d.Seconds(), 'f', -1, 64)
}

func (s seconds) Set(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return errors.New("not a number of seconds")
	}
	*s.d = time.Duration(f * float64(time.Second))
	return nil
}

// stringFlag is a string flag that can be registered under two names.
type stringFlag struct{ p *string }

func (s stringFlag) String() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

func (s stringFlag) Set(v string) error { *s.p = v; return nil }

// positiveInt is an integer flag.
type intFlag struct{ p *int }

func (i intFlag) String() string {
	if i.p == nil {
		return ""
	}
	return strconv.Itoa(*i.p)
}

func (i intFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not an integer")
	}
	*i.p = n
	return nil
}

// modeFlag is a file permission given in octal (660, 0660 or 0o660).
type modeFlag struct{ p *os.FileMode }

func (m modeFlag) String() string {
	if m.p == nil {
		return ""
	}
	return fmt.Sprintf("%#o", uint32(*m.p))
}

func (m modeFlag) Set(v string) error {
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
	if err != nil {
		return errors.New("not an octal mode (e.g. 660)")
	}
	*m.p = os.FileMode(n)
	return nil
}

func parseArgs(args []string, getenv func(string) string) (config.Config, action, error) {
	cfg := config.Default(getenv)
	fs := flag.NewFlagSet("gowsgi", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var binds, env stringList
	var pythonpath string
	var help, version bool
	both := func(short, long string, v flag.Value) {
		if short != "" {
			fs.Var(v, short, "")
		}
		fs.Var(v, long, "")
	}
	both("b", "bind", &binds)
	fs.Var(intFlag{&cfg.Backlog}, "backlog", "")
	fs.Var(modeFlag{&cfg.UnixSocketMode}, "unix-socket-mode", "")
	both("p", "pid", stringFlag{&cfg.Pidfile})
	both("w", "workers", intFlag{&cfg.Workers})
	both("", "threads", intFlag{&cfg.Threads})
	fs.Var(intFlag{&cfg.Prefetch}, "prefetch", "")
	fs.StringVar(&cfg.WorkerScheduling, "worker-scheduling", cfg.WorkerScheduling, "")
	fs.StringVar(&cfg.Chdir, "chdir", cfg.Chdir, "")
	fs.StringVar(&pythonpath, "pythonpath", "", "")
	both("e", "env", &env)
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "")
	fs.StringVar(&cfg.AccessLog, "access-logfile", cfg.AccessLog, "")
	fs.StringVar(&cfg.ErrorLog, "error-logfile", cfg.ErrorLog, "")
	fs.StringVar(&cfg.ErrorLog, "log-file", cfg.ErrorLog, "")
	fs.BoolVar(&cfg.CheckConfig, "check-config", false, "")
	both("t", "timeout", seconds{&cfg.Timeout})
	fs.Var(seconds{&cfg.GracefulTimeout}, "graceful-timeout", "")
	fs.Var(seconds{&cfg.KeepAlive}, "keep-alive", "")
	fs.Var(intFlag{&cfg.MaxRequests}, "max-requests", "")
	fs.Var(intFlag{&cfg.MaxRequestsJitter}, "max-requests-jitter", "")
	fs.Var(intFlag{&cfg.MaxWorkerMemoryMB}, "max-worker-memory", "")
	fs.Var(intFlag{&cfg.LimitRequestLine}, "limit-request-line", "")
	fs.Var(intFlag{&cfg.LimitRequestFields}, "limit-request-fields", "")
	fs.Var(intFlag{&cfg.LimitRequestFieldSize}, "limit-request-field_size", "")
	fs.BoolVar(&version, "v", false, "")
	fs.BoolVar(&version, "version", false, "")
	fs.BoolVar(&help, "h", false, "")
	fs.BoolVar(&help, "help", false, "")

	// Flags may come before and after the app, as with gunicorn.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return cfg, actionServe, flagError(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if help {
		return cfg, actionHelp, nil
	}
	if version {
		return cfg, actionVersion, nil
	}
	if len(positional) > 1 {
		return cfg, actionServe, fmt.Errorf("one application expected, got %d: %s", len(positional), strings.Join(positional, " "))
	}
	if len(positional) == 1 {
		cfg.App = positional[0]
	}
	cfg.Binds = binds
	cfg.Env = env
	if pythonpath != "" {
		for _, p := range strings.Split(pythonpath, ",") {
			if p = strings.TrimSpace(p); p != "" {
				cfg.PythonPath = append(cfg.PythonPath, p)
			}
		}
	}
	return cfg, actionServe, nil
}

// flagError rewrites the flag package's messages to name flags as users type them (--threads).
func flagError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, " -"); i >= 0 {
		rest := msg[i+2:]
		name := rest
		if j := strings.IndexAny(rest, ": "); j >= 0 {
			name = rest[:j]
		}
		if len(name) > 1 {
			msg = msg[:i] + " --" + rest
		}
	}
	return errors.New(msg)
}

// workerOptions is what the front tells a worker through workerEnv.
type workerOptions struct {
	App          wsgi.AppSpec
	AppName      string
	Threads      int
	Paths        []string
	Multiprocess bool
	SchedBatch   bool
	LogLevel     string
	CheckOnly    bool
}

func runWorker(stderr io.Writer) int {
	var o workerOptions
	if err := json.Unmarshal([]byte(os.Getenv(workerEnv)), &o); err != nil {
		fmt.Fprintf(stderr, "gowsgi: error: %s is not a worker's configuration: %v\n", workerEnv, err)
		return worker.ExitBadSetup
	}
	level, err := logging.ParseLevel(o.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "gowsgi: error: %v\n", err)
		return worker.ExitBadSetup
	}
	return worker.Run(worker.Options{
		SocketFD: 3, CounterFD: 4, ChunksFD: 5, ToFront: [3]int{6, 7, 8}, FromFront: [3]int{9, 10, 11}, App: o.App, AppName: o.AppName, Threads: o.Threads, Paths: o.Paths,
		Multiprocess: o.Multiprocess, SchedBatch: o.SchedBatch, CheckOnly: o.CheckOnly,
		Logger: logging.New(stderr, level),
	})
}

const usage = `usage: gowsgi [OPTIONS] MODULE[:CALLABLE]

Serve a Python WSGI application (PEP 3333). MODULE[:CALLABLE] is gunicorn's spelling:
module:variable, package.module:app, module:create_app() or module:create_app('x', debug=True).
The default callable is "application".

Options:
  -b, --bind ADDRESS          listen on HOST:PORT, [::1]:PORT, HOST, unix:PATH or fd://N (an
                              inherited listening socket); repeatable. Default: the sockets of
                              systemd socket activation, else 127.0.0.1:8000, or 0.0.0.0:$PORT
                              when PORT is set
      --backlog N             listen backlog of the sockets gowsgi opens (default 2048)
      --unix-socket-mode MODE permission of unix:PATH socket files, octal (default 666)
  -p, --pid FILE              write the front's pid to FILE (removed at exit)
  -w, --workers N             worker processes (default $WEB_CONCURRENCY or 1)
      --threads N             Python threads per worker (default 1)
      --prefetch N            requests a worker may hold queued beyond its threads; they run
                              back to back, and come back if its threads are held up
                              (default 3 × threads; 0: each waits for a free thread)
      --worker-scheduling P   CPU scheduling policy of the workers: batch (SCHED_BATCH, the
                              default) or normal
      --chdir DIR             change to DIR before loading the app
      --pythonpath DIRS       comma-separated directories to prepend to sys.path
  -e, --env KEY=VALUE         set an environment variable (repeatable)
  -t, --timeout SECONDS       per-request timeout (default 30)
      --graceful-timeout S    time in-flight requests get after SIGTERM (default 30)
      --keep-alive SECONDS    idle keep-alive connection timeout (default 5)
      --max-requests N        replace a worker after N requests (default 0: never)
      --max-requests-jitter N add 0..N at random to each worker's --max-requests
      --max-worker-memory MB  replace a worker whose resident memory exceeds MB
      --limit-request-line N  max request line bytes (default 4094)
      --limit-request-fields N
                              max header fields (default 100)
      --limit-request-field_size N
                              max header field bytes (default 8190)
      --log-level LEVEL       debug, info, warning, error, critical (default info)
      --access-logfile FILE   access log ("-" for stdout; default none)
      --error-logfile FILE    error log ("-" for stderr, the default)
      --check-config          check the configuration and load the app, then exit
  -v, --version               print the version and exit
  -h, --help                  print this help and exit

Signals: TERM stops gracefully (in-flight requests finish within --graceful-timeout); INT and
QUIT stop quickly (1 second); HUP reloads the workers with fresh code, without dropping a
request; TTIN and TTOU add and remove a worker; USR1 reopens the log files.
`
