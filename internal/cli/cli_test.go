package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	cfg, act, err := parseArgs([]string{"-w", "4", "--threads=8", "--prefetch", "5", "-b", "127.0.0.1:1", "--bind", "unix:/tmp/s",
		"myproj.wsgi:application", "--chdir", "/srv", "--pythonpath", "a, b", "-e", "A=1", "--graceful-timeout", "2.5",
		"-t", "10"}, func(string) string { return "" })
	if err != nil || act != actionServe {
		t.Fatalf("got %v %v", act, err)
	}
	if cfg.Workers != 4 || cfg.Threads != 8 || cfg.Prefetch != 5 || cfg.App != "myproj.wsgi:application" || cfg.Chdir != "/srv" {
		t.Fatalf("got %+v", cfg)
	}
	if strings.Join(cfg.Binds, " ") != "127.0.0.1:1 unix:/tmp/s" || strings.Join(cfg.PythonPath, " ") != "a b" {
		t.Fatalf("binds %v, pythonpath %v", cfg.Binds, cfg.PythonPath)
	}
	if cfg.GracefulTimeout != 2500*time.Millisecond || cfg.Timeout != 10*time.Second || cfg.Env[0] != "A=1" {
		t.Fatalf("got %+v", cfg)
	}
}

func TestBadFlagsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--threads", "x", "app"}, "--threads"},
		{[]string{"--workers", "0", "app"}, "--workers"},
		{[]string{"--no-such-flag", "app"}, "--no-such-flag"},
		{[]string{"-b", "1.2.3.4:99999", "app"}, "--bind"},
		{[]string{"app1", "app2"}, "one application"},
		{[]string{"bad app:1x"}, "identifier"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("Main(%q) = %d, stderr %q; want non-zero naming %q", tc.args, code, errb.String(), tc.want)
		}
		if n := strings.Count(strings.TrimSpace(errb.String()), "\n"); n > 1 {
			t.Errorf("Main(%q): %d lines of error, want one clear line (+ hint)", tc.args, n+1)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"--version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), Version) {
		t.Fatalf("--version: %d %q", code, out.String())
	}
	out.Reset()
	if code := Main([]string{"-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--bind") {
		t.Fatalf("-h: %d %q", code, out.String())
	}
}

func TestListenFlags(t *testing.T) {
	cfg, _, err := parseArgs([]string{"--backlog", "64", "-p", "/run/g.pid", "--unix-socket-mode", "0660",
		"-b", "fd://3", "app"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backlog != 64 || cfg.Pidfile != "/run/g.pid" || cfg.UnixSocketMode != 0o660 || cfg.Binds[0] != "fd://3" {
		t.Fatalf("got backlog %d pid %q mode %o binds %q", cfg.Backlog, cfg.Pidfile, cfg.UnixSocketMode, cfg.Binds)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg, _, _ = parseArgs([]string{"--pid=x.pid", "--unix-socket-mode=0o600", "app"}, func(string) string { return "" })
	if cfg.Pidfile != "x.pid" || cfg.UnixSocketMode != 0o600 || cfg.Backlog != 2048 {
		t.Fatalf("got pid %q mode %o backlog %d", cfg.Pidfile, cfg.UnixSocketMode, cfg.Backlog)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backlog", "0", "app"}, "--backlog"},
		{[]string{"--backlog", "x", "app"}, "--backlog"},
		{[]string{"--unix-socket-mode", "999", "app"}, "--unix-socket-mode"},
		{[]string{"--worker-scheduling", "fifo", "app"}, "--worker-scheduling"},
		{[]string{"--unix-socket-mode", "1777", "app"}, "--unix-socket-mode"},
		{[]string{"-b", "fd://three", "app"}, "--bind"},
	} {
		var out, errb bytes.Buffer
		if code := Main(tc.args, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("Main(%q) = %d, stderr %q; want usage error naming %s", tc.args, code, errb.String(), tc.want)
		}
	}
}
