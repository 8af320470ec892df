package tests

import (
	"bufio"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"gowsgi/internal/testenv"
)

// environReport is what rawapp's /environ returns.
type environReport struct {
	Environ         map[string]string `json:"environ"`
	Types           map[string]string `json:"types"`
	Version         []int             `json:"wsgi.version"`
	Multithread     bool              `json:"wsgi.multithread"`
	Multiprocess    bool              `json:"wsgi.multiprocess"`
	RunOnce         bool              `json:"wsgi.run_once"`
	InputTerminated *bool             `json:"wsgi.input_terminated"`
	HasFileWrapper  bool              `json:"has_file_wrapper"`
}

// rawEnviron sends the raw request text to s and decodes the /environ report.
func rawEnviron(t *testing.T, s *testenv.Server, request string) environReport {
	t.Helper()
	c := dial(t, s)
	write(t, c, request)
	resp, body := readResponse(t, bufio.NewReader(c), "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %q, body %q", resp.Status, body)
	}
	var r environReport
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("bad JSON %q: %v", body, err)
	}
	return r
}

func TestEnvironCGIVariables(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	_, port, _ := strings.Cut(s.Addr, ":")
	// The request's Host names the port, so SERVER_PORT is the same whether the server takes
	// it from Host (as gunicorn does) or from the socket.
	r := rawEnviron(t, s, "GET /environ?a=1&b=%20x HTTP/1.1\r\nHost: gowsgi.test:"+port+"\r\n"+
		"X-Custom: v1\r\nUser-Agent: gowsgi-test\r\n\r\n")
	for k, want := range map[string]string{
		"REQUEST_METHOD":  "GET",
		"SCRIPT_NAME":     "",
		"PATH_INFO":       "/environ",
		"QUERY_STRING":    "a=1&b=%20x", // not decoded
		"SERVER_PROTOCOL": "HTTP/1.1",
		"SERVER_PORT":     port,
		"REMOTE_ADDR":     "127.0.0.1",
		"HTTP_HOST":       "gowsgi.test:" + port,
		"HTTP_X_CUSTOM":   "v1",
		"HTTP_USER_AGENT": "gowsgi-test",
		"wsgi.url_scheme": "http",
	} {
		if got, ok := r.Environ[k]; !ok || got != want {
			t.Errorf("environ[%q] = %q (present %v), want %q", k, got, ok, want)
		}
	}
	if r.Environ["SERVER_NAME"] == "" {
		t.Errorf("SERVER_NAME empty or missing")
	}
	for _, k := range []string{"CONTENT_LENGTH", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} {
		if v, ok := r.Environ[k]; ok && v != "" {
			t.Errorf("environ[%q] = %q on a GET without body, want absent or empty", k, v)
		}
	}
	if len(r.Version) != 2 || r.Version[0] != 1 || r.Version[1] != 0 {
		t.Errorf("wsgi.version = %v, want (1, 0)", r.Version)
	}
	if r.RunOnce {
		t.Errorf("wsgi.run_once = true, want false")
	}
	if r.InputTerminated == nil || !*r.InputTerminated {
		t.Errorf("wsgi.input_terminated = %v, want true (the front de-chunks bodies)", r.InputTerminated)
	}
	if !r.HasFileWrapper {
		t.Errorf("wsgi.file_wrapper missing")
	}
	for _, k := range []string{"wsgi.input", "wsgi.errors"} {
		if r.Types[k] == "" {
			t.Errorf("environ lacks %s (types: %v)", k, r.Types)
		}
	}
}

func TestEnvironBodyHeaders(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	r := rawEnviron(t, s, "POST /environ HTTP/1.1\r\nHost: h\r\nContent-Type: text/x-t\r\nContent-Length: 5\r\n\r\nhello")
	if r.Environ["CONTENT_LENGTH"] != "5" || r.Environ["CONTENT_TYPE"] != "text/x-t" {
		t.Errorf("CONTENT_LENGTH %q, CONTENT_TYPE %q; want 5, text/x-t", r.Environ["CONTENT_LENGTH"], r.Environ["CONTENT_TYPE"])
	}
	for _, k := range []string{"HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} {
		if _, ok := r.Environ[k]; ok {
			t.Errorf("environ has %s; PEP 3333 uses CONTENT_* only", k)
		}
	}
}

func TestEnvironHTTP10(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	r := rawEnviron(t, s, "GET /environ HTTP/1.0\r\n\r\n")
	if r.Environ["SERVER_PROTOCOL"] != "HTTP/1.0" {
		t.Errorf("SERVER_PROTOCOL %q, want HTTP/1.0", r.Environ["SERVER_PROTOCOL"])
	}
}

// TestEnvironPathLatin1: PATH_INFO is percent-decoded, and its bytes are given to the app
// as latin-1 (PEP 3333's "bytes in unicode" native strings).
func TestEnvironPathLatin1(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	r := rawEnviron(t, s, headRequest("GET", "/environ/caf%C3%A9%20x"))
	if want := "/environ/caf\u00c3\u00a9 x"; r.Environ["PATH_INFO"] != want {
		t.Errorf("PATH_INFO %q, want %q", r.Environ["PATH_INFO"], want)
	}
}

// TestEnvironHeaderJoining: repeated headers are joined; Cookie headers with "; ".
func TestEnvironHeaderJoining(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	r := rawEnviron(t, s, headRequest("GET", "/environ", "X-Multi: a", "X-Multi: b", "Cookie: c1=1", "Cookie: c2=2"))
	if got := r.Environ["HTTP_X_MULTI"]; got != "a,b" && got != "a, b" {
		t.Errorf("HTTP_X_MULTI %q, want \"a, b\" or \"a,b\"", got)
	}
	if got := r.Environ["HTTP_COOKIE"]; got != "c1=1; c2=2" {
		t.Errorf("HTTP_COOKIE %q, want \"c1=1; c2=2\"", got)
	}
}

// TestEnvironUnderscoreHeaderDropped: a header name with "_" would collide with the "-"
// spelling in HTTP_* keys (X_User vs X-User), so it is dropped rather than trusted.
func TestEnvironUnderscoreHeaderDropped(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	r := rawEnviron(t, s, headRequest("GET", "/environ", "X-User: real", "X_User: spoofed"))
	if got := r.Environ["HTTP_X_USER"]; got != "real" {
		t.Errorf("HTTP_X_USER %q, want %q (the X_User header must be dropped)", got, "real")
	}
}

func TestEnvironConcurrencyFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		workers, threads          int
		multithread, multiprocess bool
	}{
		{1, 1, false, false},
		{2, 2, true, true},
	} {
		t.Run("w"+strconv.Itoa(tc.workers)+"t"+strconv.Itoa(tc.threads), func(t *testing.T) {
			t.Parallel()
			s := startRaw(t, "-w", strconv.Itoa(tc.workers), "--threads", strconv.Itoa(tc.threads))
			var r environReport
			getJSON(t, s.URL+"/environ", &r)
			if r.Multithread != tc.multithread || r.Multiprocess != tc.multiprocess {
				t.Errorf("multithread %v, multiprocess %v; want %v, %v", r.Multithread, r.Multiprocess, tc.multithread, tc.multiprocess)
			}
		})
	}
}
