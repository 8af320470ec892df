package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"gowsgi/internal/listen"
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
	// A binary upgrade starts the new front where we were started, so relative paths in the
	// command line (--chdir, --pid, unix sockets) mean the same to it.
	startDir, err := os.Getwd()
	if err != nil {
		return fail("current directory: %v", err)
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
		Multiprocess: cfg.Workers > 1, SchedBatch: cfg.WorkerScheduling != "normal", LogLevel: cfg.LogLevel,
		CheckOnly: cfg.CheckConfig}
	wjson, err := json.Marshal(wopts)
	if err != nil {
		return fail("encode worker options: %v", err)
	}
	workerVar := workerEnv + "=" + string(wjson)

	if cfg.CheckConfig {
		return checkApp(exe, append(os.Environ(), workerVar), errFile, stdout)
	}

	log.Info(fmt.Sprintf("Starting gowsgi %s", Version))
	lset, err := listen.Open(cfg.Binds, listen.Options{Backlog: cfg.Backlog, UnixMode: cfg.UnixSocketMode,
		Default: cfg.EffectiveBinds(os.Getenv)})
	if err != nil {
		return fail("%v", err)
	}
	defer lset.Close() // after draining: closes what is left, removes our unix socket files
	listeners := lset.Listeners
	for _, d := range lset.Describe() {
		log.Info(fmt.Sprintf("Listening at: %s (%d)", d, os.Getpid()))
	}
	for _, w := range lset.Warnings {
		log.Warn(w)
	}
	if cfg.Pidfile != "" {
		removePid, err := listen.WritePidfile(cfg.Pidfile)
		if err != nil {
			return fail("--pid: %v", err)
		}
		defer removePid()
	}
	// Taken after listen.Open, which removed systemd's LISTEN_* variables: not for workers.
	env := append(os.Environ(), workerVar)
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
		Exe: exe, Args: []string{workerArg}, Env: env, Workers: cfg.Workers, Threads: cfg.Threads,
		Prefetch: cfg.EffectivePrefetch(),
		Stdout:   os.Stdout, Stderr: errFile, Logger: log, AppLoadExit: worker.ExitAppLoad,
		GracefulTimeout: cfg.GracefulTimeout, MaxRequests: cfg.MaxRequests,
		MaxRequestsJitter: cfg.MaxRequestsJitter, MaxMemory: int64(cfg.MaxWorkerMemoryMB) << 20,
		HeartbeatTimeout: heartbeatTimeout(cfg.Timeout),
	})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGUSR2)
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
	if err := listen.Notify("READY=1"); err != nil {
		log.Warn(err.Error())
	}
	reportUpgradeReady()

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
	var upgraded chan error // non-nil while a binary upgrade is under way
wait:
	for {
		select {
		case err := <-upgraded:
			upgraded = nil
			if err != nil {
				log.Error(err.Error() + "; still serving with this binary")
				continue
			}
			log.Info(fmt.Sprintf("The new gowsgi serves; draining this one (graceful timeout %v)", grace))
			lset.SetUnlinkOnClose(false) // the socket files belong to the new front now
			break wait
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
			case syscall.SIGUSR2:
				if upgraded != nil {
					log.Warn("Handling signal: usr2; an upgrade is already under way")
					continue
				}
				log.Info("Handling signal: usr2; starting a new gowsgi from the binary on disk")
				upgraded = make(chan error, 1)
				go func(c chan error) { c <- upgrade(exe, startDir, lset, os.Stdout, os.Stderr) }(upgraded)
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
	if err := listen.Notify("STOPPING=1"); err != nil {
		log.Warn(err.Error())
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
