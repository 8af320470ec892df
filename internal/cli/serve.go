package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

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
	errFile, err := openLog(cfg.ErrorLog, os.Stderr)
	if err != nil {
		return fail("--error-logfile: %v", err)
	}
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
	if cfg.AccessLog != "" {
		f, err := openLog(cfg.AccessLog, os.Stdout)
		if err != nil {
			return fail("--access-logfile: %v", err)
		}
		access = f
	}

	sup := supervisor.New(supervisor.Config{
		Exe: exe, Args: []string{workerArg}, Env: env, Workers: cfg.Workers,
		Stdout: os.Stdout, Stderr: errFile, Logger: log, AppLoadExit: worker.ExitAppLoad,
	})
	// Stop on TERM or INT; a second one stops at once.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	startErr := make(chan error, 1)
	go func() { startErr <- sup.Start() }()
	select {
	case err := <-startErr:
		if err != nil {
			if errors.Is(err, supervisor.ErrAppLoad) {
				log.Error("Shutting down: the application could not be loaded (see above)")
				return exitAppLoad
			}
			log.Error(fmt.Sprintf("Shutting down: %v", err))
			return exitFailure
		}
	case sig := <-sigs:
		log.Info(fmt.Sprintf("Received %v before the workers were ready; stopping", sig))
		sup.Stop(0)
		<-startErr
		return exitOK
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
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, cfg.GracefulTimeout)
		close(served)
	}()
	code := exitOK
	select {
	case sig := <-sigs:
		log.Info(fmt.Sprintf("Handling signal: %s; draining (graceful timeout %v)", signalName(sig), cfg.GracefulTimeout))
	case err := <-sup.Fatal():
		log.Error(fmt.Sprintf("Shutting down: %v", err))
		code = exitAppLoad
	}
	stop()
	go func() {
		// A second signal while draining means "now".
		if sig, ok := <-sigs; ok {
			log.Warn(fmt.Sprintf("Received %s again; exiting now", signalName(sig)))
			os.Exit(exitFailure)
		}
	}()
	<-served
	sup.Stop(cfg.GracefulTimeout)
	log.Info("Shutting down: Master")
	return code
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "term"
	case syscall.SIGINT:
		return "int"
	}
	return s.String()
}

// checkApp runs one worker in check mode: it loads the app and exits.
func checkApp(exe string, env []string, errFile *os.File, stdout io.Writer) int {
	p, err := os.StartProcess(exe, []string{exe, workerArg}, &os.ProcAttr{
		Env: env, Files: []*os.File{os.Stdin, os.Stdout, errFile},
	})
	if err != nil {
		fmt.Fprintf(errFile, "gowsgi: error: start a worker: %v\n", err)
		return exitFailure
	}
	st, err := p.Wait()
	if err != nil {
		fmt.Fprintf(errFile, "gowsgi: error: wait for the worker: %v\n", err)
		return exitFailure
	}
	if st.ExitCode() != 0 {
		return exitAppLoad
	}
	fmt.Fprintln(stdout, "Configuration OK")
	return exitOK
}

func openLog(name string, dash *os.File) (*os.File, error) {
	if name == "" || name == "-" {
		return dash, nil
	}
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
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
