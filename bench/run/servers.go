package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// App is one benchmark application in bench/apps.
type App struct {
	Name   string // short name used in tables
	Module string // MODULE:CALLABLE inside bench/apps
	Desc   string
	Method string
	// BodySize > 0 sends a POST body of that many bytes (postBody).
	BodySize int
	// ExpectLen is the response body length every response must have (-1: not checked
	// by the fairness pass).
	ExpectLen int64
	// ExpectBody, when set, is the exact response body.
	ExpectBody string
	// Verify checks one full response before the measurement.
	Verify func(body []byte) error
}

const (
	streamSize = 1 << 20
	echoSize   = 16 << 10
)

// postBody is the 16 KiB request body of the echo app (the wrk Lua script builds the
// same bytes with string.rep).
var postBody = []byte(strings.Repeat("0123456789abcdef", echoSize/16))

func echoDigest() string {
	s := sha256.Sum256(postBody)
	return hex.EncodeToString(s[:])
}

var allApps = []App{
	{
		Name: "hello", Module: "hello:application", Method: "GET",
		Desc:      "plain WSGI, 13-byte body",
		ExpectLen: 13, ExpectBody: "Hello, World!",
		Verify: func(b []byte) error { return want(string(b) == "Hello, World!", "body %q", b) },
	},
	{
		Name: "flask", Module: "flaskjson:application", Method: "GET",
		Desc:      "Flask route answering JSON",
		ExpectLen: -1,
		Verify: func(b []byte) error {
			var v struct {
				Message string `json:"message"`
				OK      bool   `json:"ok"`
			}
			if err := json.Unmarshal(b, &v); err != nil {
				return err
			}
			return want(v.Message == "Hello, World!" && v.OK, "json %s", b)
		},
	},
	{
		Name: "stream", Module: "stream:application", Method: "GET",
		Desc:      "1 MiB streamed in 16 chunks of 64 KiB",
		ExpectLen: streamSize,
		Verify: func(b []byte) error {
			return want(len(b) == streamSize && bytes.Count(b, []byte("x")) == streamSize, "body of %d bytes", len(b))
		},
	},
	{
		Name: "echo", Module: "echo:application", Method: "POST", BodySize: echoSize,
		Desc:      "16 KiB POST, answers its sha256 (hex)",
		ExpectLen: 64, ExpectBody: echoDigest(),
		Verify: func(b []byte) error { return want(string(b) == echoDigest(), "body %q", b) },
	},
	{
		Name: "sleep", Module: "sleep:application", Method: "GET",
		Desc:      "I/O-bound: time.sleep(0.010), short body",
		ExpectLen: 12, ExpectBody: "slept 10 ms\n",
		Verify: func(b []byte) error { return want(string(b) == "slept 10 ms\n", "body %q", b) },
	},
}

func want(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf("unexpected response: "+format, args...)
}

// goBaseline is the Go net/http server of bench/gohello: the ceiling of the HTTP side, not a
// WSGI peer, so "best peer" comparisons leave it out.
const goBaseline = "go-net/http"

// Server is one server configuration under test.
type Server struct {
	Name string // short name used in tables and JSON
	// Config describes processes and threads for the report.
	Config func(app App) string
	// Argv builds the command line serving app on addr from the bench/apps directory.
	Argv func(env *Env, app App, addr string) []string
	// Only, when set, restricts the server to these apps.
	Only []string
}

// Env holds paths and settings the server command lines need.
type Env struct {
	AppsDir    string
	Gowsgi     string
	GoHello    string
	Python     string
	Gunicorn   string
	UWSGI      string
	Workers    int
	Threads    int
	AppThreads map[string]int // gowsgi threads per app (overrides Threads)
}

func (e *Env) gowsgiThreads(app App) int {
	if t, ok := e.AppThreads[app.Name]; ok {
		return t
	}
	return e.Threads
}

func serverDefs(e *Env) []Server {
	w, t := strconv.Itoa(e.Workers), strconv.Itoa(e.Threads)
	procs := func(n int, what string) string { return fmt.Sprintf("%d × %s", n, what) }
	gunicorn := func(extra ...string) func(*Env, App, string) []string {
		return func(e *Env, app App, addr string) []string {
			return append([]string{e.Gunicorn, "-w", w, "-b", addr, "--chdir", e.AppsDir,
				"--log-level", "warning"}, append(extra, app.Module)...)
		}
	}
	uwsgi := func(socketFlag string, extra ...string) func(*Env, App, string) []string {
		return func(e *Env, app App, addr string) []string {
			argv := append([]string{e.UWSGI, "--plugin", "python3", socketFlag, addr}, extra...)
			return append(argv, "--master", "--processes", w, "--threads", t,
				"--die-on-term", "--disable-logging", "--need-app",
				"--chdir", e.AppsDir, "--module", app.Module)
		}
	}
	return []Server{
		{
			Name: "gowsgi",
			Config: func(app App) string {
				return procs(e.Workers, fmt.Sprintf("%d threads", e.gowsgiThreads(app)))
			},
			Argv: func(e *Env, app App, addr string) []string {
				return []string{e.Gowsgi, "-w", w, "--threads", strconv.Itoa(e.gowsgiThreads(app)),
					"-b", addr, "--chdir", e.AppsDir, "--log-level", "warning", app.Module}
			},
		},
		{
			Name:   "gunicorn-sync",
			Config: func(App) string { return procs(e.Workers, "1 thread (sync)") },
			Argv:   gunicorn("-k", "sync"),
		},
		{
			Name:   "gunicorn-gthread",
			Config: func(App) string { return procs(e.Workers, t+" threads (gthread)") },
			Argv:   gunicorn("-k", "gthread", "--threads", t),
		},
		{
			Name:   "gunicorn-gevent",
			Config: func(App) string { return procs(e.Workers, "gevent, 1000 connections") },
			Argv:   gunicorn("-k", "gevent", "--worker-connections", "1000"),
		},
		{
			Name:   "uwsgi-http",
			Config: func(App) string { return procs(e.Workers, t+" threads, --http-socket") },
			// --http-socket closes the connection after every response without saying so;
			// announcing it lets clients reconnect instead of failing their next request.
			Argv: uwsgi("--http-socket", "--add-header", "Connection: close"),
		},
		{
			Name:   "uwsgi-http11",
			Config: func(App) string { return procs(e.Workers, t+" threads, --http11-socket") },
			Argv:   uwsgi("--http11-socket"),
		},
		{
			Name: "waitress",
			Config: func(App) string {
				return fmt.Sprintf("1 × %d threads (single process)", e.Workers*e.Threads)
			},
			Argv: func(e *Env, app App, addr string) []string {
				return []string{e.Python, "-m", "waitress", "--listen=" + addr,
					"--threads=" + strconv.Itoa(e.Workers*e.Threads), app.Module}
			},
		},
		{
			Name:   goBaseline,
			Config: func(App) string { return "1 process, GOMAXPROCS = CPUs" },
			Argv: func(e *Env, app App, addr string) []string {
				return []string{e.GoHello, "-b", addr, "-app", app.Name}
			},
			Only: []string{"hello", "stream"},
		},
	}
}

func (s Server) serves(app string) bool {
	if s.Only == nil {
		return true
	}
	for _, a := range s.Only {
		if a == app {
			return true
		}
	}
	return false
}

// request performs one request against the app with a fresh connection.
func request(app App, base string, timeout time.Duration) (int, []byte, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	var body io.Reader
	if app.BodySize > 0 {
		body = bytes.NewReader(postBody)
	}
	req, err := http.NewRequest(app.Method, base+"/", body)
	if err != nil {
		return 0, nil, err
	}
	if app.BodySize > 0 {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
