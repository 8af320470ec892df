package config

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c := Default(env(nil))
	if c.Workers != 1 || c.Threads != 1 || c.GracefulTimeout != 30*time.Second || c.LogLevel != "info" ||
		c.Backlog != 2048 || c.UnixSocketMode != 0o666 || c.Pidfile != "" {
		t.Fatalf("got %+v", c)
	}
	if got := c.EffectiveBinds(env(nil)); len(got) != 1 || got[0] != "127.0.0.1:8000" {
		t.Fatalf("default bind: got %v", got)
	}
	if got := c.EffectiveBinds(env(map[string]string{"PORT": "9000"})); got[0] != "0.0.0.0:9000" {
		t.Fatalf("bind with PORT: got %v", got)
	}
	if c := Default(env(map[string]string{"WEB_CONCURRENCY": "3"})); c.Workers != 3 {
		t.Fatalf("WEB_CONCURRENCY: got %d workers", c.Workers)
	}
	c.Threads = 4
	if got := c.EffectivePrefetch(); got != 12 {
		t.Fatalf("default prefetch with 4 threads: %d, want 12", got)
	}
	c.Prefetch = 0
	if got := c.EffectivePrefetch(); got != 0 {
		t.Fatalf("--prefetch 0: %d, want 0", got)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no app", func(c *Config) { c.App = "" }, "APP_MODULE"},
		{"zero threads", func(c *Config) { c.Threads = 0 }, "--threads"},
		{"negative prefetch", func(c *Config) { c.Prefetch = -2 }, "--prefetch"},
		{"huge prefetch", func(c *Config) { c.Prefetch = 5000 }, "--prefetch"},
		{"zero workers", func(c *Config) { c.Workers = 0 }, "--workers"},
		{"bad bind", func(c *Config) { c.Binds = []string{"127.0.0.1:99999"} }, "--bind"},
		{"bad env", func(c *Config) { c.Env = []string{"NOEQUALS"} }, "--env"},
		{"bad level", func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{"negative limit", func(c *Config) { c.LimitRequestLine = -1 }, "--limit-request-line"},
		{"zero backlog", func(c *Config) { c.Backlog = 0 }, "--backlog"},
		{"huge backlog", func(c *Config) { c.Backlog = 1 << 31 }, "--backlog"},
		{"zero socket mode", func(c *Config) { c.UnixSocketMode = 0 }, "--unix-socket-mode"},
		{"unknown scheduling policy", func(c *Config) { c.WorkerScheduling = "rr" }, "--worker-scheduling"},
		{"setuid socket mode", func(c *Config) { c.UnixSocketMode = 0o4777 }, "--unix-socket-mode"},
		{"bad fd bind", func(c *Config) { c.Binds = []string{"fd://x"} }, "--bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default(env(nil))
			c.App = "app:application"
			tc.edit(&c)
			err := c.Validate()
			var ce *Error
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
	c := Default(env(nil))
	c.App = "app"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults with an app: %v", err)
	}
}

func TestParseBind(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"127.0.0.1:8000", "tcp", "127.0.0.1:8000"},
		{"0.0.0.0:80", "tcp", "0.0.0.0:80"},
		{"[::1]:9000", "tcp", "[::1]:9000"},
		{"localhost", "tcp", "localhost:8000"},
		{"[::1]", "tcp", "[::1]:8000"},
		{"unix:/tmp/g.sock", "unix", "/tmp/g.sock"},
		{"unix:", "", ""},
		{"fd://3", "fd", "3"},
		{"fd://0", "fd", "0"},
		{"fd://007", "fd", "7"},
		{"fd://", "", ""},
		{"fd://-1", "", ""},
		{"fd://+3", "", ""},
		{"fd://3x", "", ""},
		{"fd://1234567890", "", ""},
		{"127.0.0.1:http", "", ""},
		{"host:70000", "", ""},
	} {
		n, a, err := ParseBind(tc.in)
		if tc.network == "" {
			if err == nil {
				t.Errorf("ParseBind(%q) = %q %q, want an error", tc.in, n, a)
			}
			continue
		}
		if err != nil || n != tc.network || a != tc.addr {
			t.Errorf("ParseBind(%q) = %q %q %v, want %q %q", tc.in, n, a, err, tc.network, tc.addr)
		}
	}
}

func FuzzParseBind(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8000", "unix:/x", "[::1]:1", "h", "fd://3", "fd://", "fd://0042", "fd://-3", "fd://9999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, a, err := ParseBind(s)
		if err != nil {
			return
		}
		switch n {
		case "tcp", "unix":
			if a == "" {
				t.Fatalf("ParseBind(%q) = %q %q without error", s, n, a)
			}
		case "fd":
			if fd, err := strconv.Atoi(a); err != nil || fd < 0 || strconv.Itoa(fd) != a {
				t.Fatalf("ParseBind(%q) = fd %q: not a canonical descriptor number", s, a)
			}
		default:
			t.Fatalf("ParseBind(%q) = network %q", s, n)
		}
	})
}
