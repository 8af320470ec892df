package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

// exitTimeout bounds runs that must end by themselves (bad flags, import errors, checks).
const exitTimeout = 30 * time.Second

func TestHelloExample(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t, "--chdir", "examples/hello", "app:application")
	resp, body := get(t, s.URL+"/")
	wantStatus(t, resp, body, 200)
	if string(body) != "Hello, World!" {
		t.Errorf("body %q, want %q", body, "Hello, World!")
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
}

func TestListeningLogLine(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	want := fmt.Sprintf("Listening at: http://%s (%d)", s.Addr, s.Pid)
	if !eventually(5*time.Second, func() bool { return strings.Contains(s.Stderr(), want) }) {
		t.Errorf("stderr lacks %q:\n%s", want, s.Stderr())
	}
}

func TestBadFlagValue(t *testing.T) {
	t.Parallel()
	code, out := testenv.StartCmd(t, exitTimeout, "--threads", "x", "--chdir", "testdata/apps", "rawapp:application")
	if code == 0 {
		t.Errorf("--threads x: exit 0, want non-zero; output:\n%s", out)
	}
	if !strings.Contains(out, "--threads") {
		t.Errorf("--threads x: output does not name --threads:\n%s", out)
	}
}

func TestUnknownFlag(t *testing.T) {
	t.Parallel()
	code, out := testenv.StartCmd(t, exitTimeout, "--no-such-flag", "rawapp:application")
	if code == 0 || !strings.Contains(out, "no-such-flag") {
		t.Errorf("--no-such-flag: exit %d, output %q; want non-zero naming the flag", code, out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"-v", "--version"} {
		code, out := testenv.StartCmd(t, exitTimeout, flag)
		if code != 0 || !strings.Contains(strings.ToLower(out), "gowsgi") {
			t.Errorf("%s: exit %d, output %q; want 0 and a version naming gowsgi", flag, code, out)
		}
	}
	for _, flag := range []string{"-h", "--help"} {
		code, out := testenv.StartCmd(t, exitTimeout, flag)
		if code != 0 || !strings.Contains(out, "--bind") || !strings.Contains(out, "MODULE") {
			t.Errorf("%s: exit %d, output %q; want 0 and usage listing --bind", flag, code, out)
		}
	}
}

// TestImportErrors: an app that cannot be imported stops gowsgi with a non-zero exit, the
// Python traceback, and a one-line reason naming the app and the error (a line apart from
// the traceback's own last line).
func TestImportErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		module, exc string
	}{
		{"importerr_missing", "ModuleNotFoundError"},
		{"importerr_syntax", "SyntaxError"},
		{"importerr_raises", "RuntimeError"},
	} {
		t.Run(tc.module, func(t *testing.T) {
			t.Parallel()
			code, out := testenv.StartCmd(t, exitTimeout, "--chdir", "testdata/apps", tc.module+":application")
			if code == 0 {
				t.Errorf("exit 0, want non-zero")
			}
			if !strings.Contains(out, "Traceback (most recent call last)") {
				t.Errorf("output has no Python traceback")
			}
			if !hasReasonLine(out, tc.module, tc.exc) {
				t.Errorf("output has no one-line reason naming %s and %s", tc.module, tc.exc)
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// hasReasonLine reports whether out has a line that names both the app module and the
// exception and is not just the traceback's final "Exc: message" line.
func hasReasonLine(out, module, exc string) bool {
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, exc+":") || strings.HasPrefix(trimmed, "File ") {
			continue
		}
		if strings.Contains(line, module) && strings.Contains(line, exc) {
			return true
		}
	}
	return false
}

func TestNotCallable(t *testing.T) {
	t.Parallel()
	code, out := testenv.StartCmd(t, exitTimeout, "--chdir", "testdata/apps", "notcallable:application")
	if code == 0 || !strings.Contains(strings.ToLower(out), "callable") || !strings.Contains(out, "notcallable") {
		t.Errorf("exit %d; want non-zero and a reason naming notcallable and 'callable'; output:\n%s", code, out)
	}
}

func TestMissingCallable(t *testing.T) {
	t.Parallel()
	code, out := testenv.StartCmd(t, exitTimeout, "--chdir", "testdata/apps", "rawapp:no_such_callable")
	if code == 0 || !strings.Contains(out, "no_such_callable") {
		t.Errorf("exit %d; want non-zero and a reason naming no_such_callable; output:\n%s", code, out)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	code, out := testenv.StartCmd(t, exitTimeout, "--check-config", "--chdir", "testdata/apps", "rawapp:application")
	if code != 0 {
		t.Errorf("--check-config with a good app: exit %d, want 0; output:\n%s", code, out)
	}
	code, out = testenv.StartCmd(t, exitTimeout, "--check-config", "--chdir", "testdata/apps", "importerr_raises:application")
	if code == 0 || !strings.Contains(out, "RuntimeError") {
		t.Errorf("--check-config with a failing app: exit %d, want non-zero naming RuntimeError; output:\n%s", code, out)
	}
}

func TestFactoryApp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec string
		want string
	}{
		{"factory:create_app()", `{"debug": false, "name": "x"}`},
		{"factory:create_app('y', debug=True)", `{"debug": true, "name": "y"}`},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			t.Parallel()
			s := startApp(t, tc.spec)
			resp, body := get(t, s.URL+"/")
			wantStatus(t, resp, body, 200)
			if string(body) != tc.want {
				t.Errorf("body %s, want %s", body, tc.want)
			}
		})
	}
}

func TestCallableInstance(t *testing.T) {
	t.Parallel()
	s := startApp(t, "callable_instance:application")
	resp, body := get(t, s.URL+"/")
	wantStatus(t, resp, body, 200)
	if string(body) != "Hello from a callable instance" {
		t.Errorf("body %q", body)
	}
}

func TestDefaultCallableName(t *testing.T) {
	t.Parallel()
	s := startApp(t, "callable_instance") // no :CALLABLE means "application"
	resp, body := get(t, s.URL+"/")
	wantStatus(t, resp, body, 200)
}

func TestPythonPath(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t, "--pythonpath", "/nonexistent-dir,testdata/apps", "-w", "1", "rawapp:application")
	resp, body := get(t, s.URL+"/status?code=200")
	wantStatus(t, resp, body, 200)
}

func TestEnvFlag(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "-e", "GOWSGI_T1=one", "--env", "GOWSGI_T2=a=b")
	for name, want := range map[string]string{"GOWSGI_T1": "one", "GOWSGI_T2": "a=b"} {
		resp, body := get(t, s.URL+"/osenv?name="+name)
		wantStatus(t, resp, body, 200)
		if string(body) != want {
			t.Errorf("os.environ[%s] = %q, want %q", name, body, want)
		}
	}
}

func TestBindUnixSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "gowsgi.sock")
	testenv.StartServer(t, "-b", "unix:"+sock, "--chdir", "testdata/apps", "rawapp:application")
	c := unixClient(sock)
	resp, err := c.Get("http://unix/status?code=200")
	if err != nil {
		t.Fatalf("GET over unix socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %q over unix socket, want 200", resp.Status)
	}
}

func TestBindIPv6(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := testenv.StartServer(t, "-b", "[::1]:"+strconv.Itoa(port), "--chdir", "testdata/apps", "rawapp:application")
	resp, body := get(t, s.URL+"/status?code=200")
	wantStatus(t, resp, body, 200)
}

func TestMultipleBinds(t *testing.T) {
	t.Parallel()
	p1, p2 := testenv.FreePort(t), testenv.FreePort(t)
	a1, a2 := "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	testenv.StartServer(t, "-b", a1, "--bind", a2, "--chdir", "testdata/apps", "rawapp:application")
	for _, a := range []string{a1, a2} {
		resp, body := get(t, "http://"+a+"/status?code=200")
		wantStatus(t, resp, body, 200)
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "--access-logfile", "-")
	resp, body := get(t, s.URL+"/status?code=201")
	wantStatus(t, resp, body, 201)
	// gunicorn's default format: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
	re := regexp.MustCompile(`(?m)^127\.0\.0\.1 - - \[[^\]]+\] "GET /status\?code=201 HTTP/1\.1" 201 \d+ "-" "[^"]*"$`)
	if !eventually(5*time.Second, func() bool { return re.MatchString(s.Stdout()) }) {
		t.Errorf("access log on stdout has no line matching %s:\n%s", re, s.Stdout())
	}
}

func TestErrorLogFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "error.log")
	s := startRaw(t, "--error-logfile", path)
	want := "Listening at: http://" + s.Addr
	var content []byte
	if !eventually(5*time.Second, func() bool {
		content, _ = os.ReadFile(path)
		return strings.Contains(string(content), want)
	}) {
		t.Errorf("%s lacks %q:\n%s", path, want, content)
	}
}
