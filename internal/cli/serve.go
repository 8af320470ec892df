package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gowsgi/internal/config"
	"gowsgi/internal/front"
	"gowsgi/internal/http1"
	"gowsgi/internal/logging"
	"gowsgi/internal/supervisor"
	"gowsgi/internal/worker"
	"gowsgi/internal/wsgi"
)

// serve runs the front process: listeners, workers, and the HTTP server, until a stop signal.
func serve(cfg config.Config, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gowsgi: error: "+format+"\n", a...)
		return exitFailure
	}
	spec, err := wsgi.ParseAppSpec(cfg.App)
	if err != nil {
		fmt.Fprintf(stderr, "gowsgi: error: %v\n", err)
		return exitUsage
	}
	if cfg.Chdir != "" {
		if err := os.Chdir(cfg.Chdir); err != nil {
			return fail("--chdir: %v", err)
		}
	}
	for _, kv := range cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return fail("--env %s: %v", k, err)
		}
	}
	errFile, err := logging.OpenFile(cfg.ErrorLog, os.Stderr)
	if err != nil {
		return fail("--error-logfile: %v", err)
	}
	defer errFile.Close()
	level, _ := logging.ParseLevel(cfg.LogLevel) // Validate checked it
	log := logging.New(errFile, level)

	exe, err := os.Executable()
	if err != nil {
		return fail("find the gowsgi binary: %v", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return fail("current directory: %v", err)
	}
	paths := make([]string, 0, len(cfg.PythonPath)+1)
	for _, p := range cfg.PythonPath {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		paths = append(paths, p)
	}
	paths = append(paths, cwd)
	wopts := workerOptions{App: spec, AppName: cfg.App, Threads: cfg.Threads, Paths: paths,
		Multiprocess: cfg.Workers > 1, LogLevel: cfg.LogLevel, CheckOnly: cfg.CheckConfig}
	wjson, err := json.Marshal(wopts)
	if err != nil {
		return fail("encode worker options: %v", err)
	}
	env := append(os.Environ(), workerEnv+"="+string(wjson))

	if cfg.CheckConfig {
		return checkApp(exe, env, errFile, stdout)
	}

	log.Info(fmt.Sprintf("Starting gowsgi %s", Version))
	listeners, cleanup, err := listen(cfg.EffectiveBinds(os.Getenv))
	if err != nil {
		return fail("%v", err)
	}
	defer cleanup()
	for _, l := range listeners {
		log.Info(fmt.Sprintf("Listening at: %s (%d)", listenURL(l), os.Getpid()))
	}
	log.Info(fmt.Sprintf("Using %d worker(s) with %d thread(s) each, app %s", cfg.Workers, cfg.Threads, cfg.App))

	var access io.Writer
	var accessFile *logging.File
	if cfg.AccessLog != "" {
		accessFile, err = logging.OpenFile(cfg.AccessLog, os.Stdout)
		if err != nil {
			return fail("--access-logfile: %v", err)
		}
		defer accessFile.Close()
		access = accessFile
	}

	sup := supervisor.New(supervisor.Config{
		Exe: exe, Args: []string{workerArg}, Env: env, Workers: cfg.Workers,
		Stdout: os.Stdout, Stderr: errFile, Logger: log, AppLoadExit: worker.ExitAppLoad,
		GracefulTimeout: cfg.GracefulTimeout, MaxRequests: cfg.MaxRequests,
		MaxRequestsJitter: cfg.MaxRequestsJitter, MaxMemory: int64(cfg.MaxWorkerMemoryMB) << 20,
		HeartbeatTimeout: heartbeatTimeout(cfg.Timeout),
	})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	startErr := make(chan error, 1)
	go func() { startErr <- sup.Start() }()
	for started := false; !started; {
		select {
		case err := <-startErr:
			if errors.Is(err, supervisor.ErrAppLoad) {
				log.Error("Shutting down: the application could not be loaded (see above)")
				return exitAppLoad
			}
			if err != nil {
				log.Error(fmt.Sprintf("Shutting down: %v", err))
				return exitFailure
			}
			started = true
		case sig := <-sigs:
			if sig != syscall.SIGTERM && sig != syscall.SIGINT && sig != syscall.SIGQUIT {
				continue // reload or resize before the first worker is up: nothing to do yet
			}
			log.Info(fmt.Sprintf("Received %s before the workers were ready; stopping", signalName(sig)))
			sup.Stop(0)
			<-startErr
			return exitOK
		}
	}

	srv := front.New(front.Config{
		Listeners: listeners,
		Limits: http1.Limits{MaxLineBytes: cfg.LimitRequestLine, MaxFields: cfg.LimitRequestFields,
			MaxFieldBytes: cfg.LimitRequestFieldSize},
		Environ:   wsgi.Options{ScriptName: cfg.ScriptName},
		KeepAlive: cfg.KeepAlive,
		Timeout:   cfg.Timeout,
		AccessLog: access,
		Logger:    log,
	}, sup)
	grace := cfg.GracefulTimeout
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, func() time.Duration { return grace })
		close(served)
	}()
	code := exitOK
wait:
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM:
				log.Info(fmt.Sprintf("Handling signal: term; draining (graceful timeout %v)", grace))
				break wait
			case syscall.SIGINT, syscall.SIGQUIT:
				grace = min(grace, quickStop)
				log.Info(fmt.Sprintf("Handling signal: %s; stopping quickly (%v)", signalName(sig), grace))
				break wait
			case syscall.SIGHUP:
				log.Info("Handling signal: hup")
				sup.Reload()
			case syscall.SIGTTIN:
				sup.Add()
			case syscall.SIGTTOU:
				sup.Remove()
			case syscall.SIGUSR1:
				log.Info("Handling signal: usr1; reopening log files")
				for _, f := range []*logging.File{errFile, accessFile} {
					if f == nil {
						continue
					}
					if err := f.Reopen(); err != nil {
						log.Error(err.Error())
					}
				}
			}
		case err := <-sup.Fatal():
			log.Error(fmt.Sprintf("Shutting down: %v", err))
			code = exitAppLoad
			break wait
		}
	}
	stop()
	go func() {
		// A second stop signal while draining means "now".
		if sig, ok := <-waitStop(sigs); ok {
			log.Warn(fmt.Sprintf("Received %s again; exiting now", signalName(sig)))
			os.Exit(exitFailure)
		}
	}()
	<-served
	sup.Stop(grace)
	log.Info("Shutting down: Master")
	return code
}

// heartbeatTimeout is how long a worker may send nothing before it is killed: gunicorn's
// --timeout meaning ("a worker silent for N seconds"), at least a few heartbeats long.
func heartbeatTimeout(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return 0 // the supervisor's default
	}
	return max(timeout, 3*time.Second)
}

// quickStop is how long in-flight requests get on SIGINT or SIGQUIT.
const quickStop = time.Second

// waitStop passes on the first stop signal (TERM, INT, QUIT) from sigs, ignoring the others.
func waitStop(sigs <-chan os.Signal) <-chan os.Signal {
	out := make(chan os.Signal, 1)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT {
				out <- sig
				return
			}
		}
	}()
	return out
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "term"
	case syscall.SIGINT:
		return "int"
	case syscall.SIGQUIT:
		return "quit"
	}
	return s.String()
}

// checkApp runs one worker in check mode: it loads the app and exits.
func checkApp(exe string, env []string, errLog io.Writer, stdout io.Writer) int {
	cmd := exec.Command(exe, workerArg)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, errLog
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return exitAppLoad
		}
		fmt.Fprintf(errLog, "gowsgi: error: run a worker: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "Configuration OK")
	return exitOK
}

// listen opens every bind; cleanup closes them and removes unix socket files we created.
func listen(binds []string) ([]net.Listener, func(), error) {
	var ls []net.Listener
	var sockets []string
	cleanup := func() {
		for _, l := range ls {
			l.Close() // already closed by the front on a normal stop
		}
		for _, p := range sockets {
			os.Remove(p)
		}
	}
	for _, b := range binds {
		network, addr, err := config.ParseBind(b)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("--bind: %w", err)
		}
		if network == "unix" {
			if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
				os.Remove(addr) // a stale socket from an earlier run
			}
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("bind %s: %w", b, err)
		}
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // cleanup removes it, after draining
			sockets = append(sockets, addr)
		}
		ls = append(ls, l)
	}
	return ls, cleanup, nil
}

func listenURL(l net.Listener) string {
	if ua, ok := l.Addr().(*net.UnixAddr); ok {
		return "unix:" + ua.Name
	}
	return "http://" + l.Addr().String()
}
