// Package tests holds black-box tests of the built gowsgi binary: each test starts the real
// server (internal/testenv) on a loopback port, serves a WSGI app from testdata/apps, and
// talks HTTP to it, with net/http where that is enough and raw connections where the bytes
// on the wire matter.
//
// Tests that assert timings do not call t.Parallel, so they run before the parallel batch
// and do not compete with it for CPU.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// ioTimeout bounds every single exchange with a server, so that a hang fails the test
// instead of the whole run.
const ioTimeout = 30 * time.Second

// client is the HTTP client for tests that need no byte-level control. Keep-alives are off
// so that each request is independent of the ones before.
var client = &http.Client{
	Timeout:   ioTimeout,
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
}

// startApp serves app (MODULE:CALLABLE) from testdata/apps with one worker; extra flags go
// before the app and may override -w.
func startApp(t *testing.T, app string, extra ...string) *testenv.Server {
	t.Helper()
	args := []string{"--chdir", "testdata/apps", "-w", "1"}
	args = append(args, extra...)
	return testenv.StartServer(t, append(args, app)...)
}

// startRaw serves the validated rawapp router.
func startRaw(t *testing.T, extra ...string) *testenv.Server {
	t.Helper()
	return startApp(t, "rawapp:application", extra...)
}

// do sends req and returns the response with its whole body read.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v (got %d bytes: %.200q)", req.Method, req.URL, err, len(body), body)
	}
	return resp, body
}

// get GETs url and returns the response and its body.
func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// post POSTs body with content type ctype to url.
func post(t *testing.T, url, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	return do(t, req)
}

// wantStatus fails the test unless resp has status code want.
func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %q, want %d; body %.300q", resp.Request.Method, resp.Request.URL, resp.Status, want, body)
	}
}

// getJSON GETs url, requires a 200 and decodes the JSON body into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, body := get(t, url)
	wantStatus(t, resp, body, 200)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: bad JSON %q: %v", url, body, err)
	}
}

// decodeJSON decodes body into v or fails.
func decodeJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("bad JSON %q: %v", body, err)
	}
}

// dial opens a raw TCP connection to s with an overall deadline; cleanup closes it.
func dial(t *testing.T, s *testenv.Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// write writes all of s to c or fails.
func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write request: %v", err)
	}
}

// readResponse reads one response to a request with the given method from br, body
// included. It fails the test on malformed framing.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response to %s: %v", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of response to %s (status %q): %v (got %.200q)", method, resp.Status, err, body)
	}
	return resp, body
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sha returns the hex SHA-256 of b.
func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// multipartBody builds a multipart/form-data body from fields and one file.
func multipartBody(t *testing.T, fields map[string]string, fileField, fileName string, data []byte) (ctype string, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if fileField != "" {
		fw, err := w.CreateFormFile(fileField, fileName)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), buf.Bytes()
}

// closedCount returns rawapp's counters of iterables created and closed (per worker: use -w 1).
func closedCount(t *testing.T, s *testenv.Server) (created, closed int) {
	t.Helper()
	var c struct{ Created, Closed int }
	getJSON(t, s.URL+"/closed_count", &c)
	return c.Created, c.Closed
}

// eventually polls cond every 50 ms until it returns true or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stillServes fails the test unless s answers a plain request: used after error cases to
// show that bad app output did not take the server down.
func stillServes(t *testing.T, s *testenv.Server) {
	t.Helper()
	resp, body := get(t, s.URL+"/status?code=200")
	wantStatus(t, resp, body, 200)
}

// headRequest is a minimal HTTP/1.1 request head for raw connections.
func headRequest(method, target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: gowsgi.test\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// unixClient is an HTTP client that dials the unix socket sock whatever the URL's host.
func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: ioTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}
