package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// inputBody is a request body with lines of several shapes, ending without a newline.
const inputBody = "first line\nsecond line\n\n" + "a longer third line with some more text in it\nlast line without newline"

// linesReport is what rawapp's line-oriented input routes return.
type linesReport struct {
	Count int      `json:"count"`
	Lines []string `json:"lines"`
	Rest  string   `json:"rest"`
}

func splitLines(s string) []string {
	var out []string
	for s != "" {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}

func TestInputReadAll(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, n := range []int{0, 1, 1000, 5 << 20} {
		data := randomBytes(t, n)
		resp, body := post(t, s.URL+"/echo", "application/octet-stream", data)
		wantStatus(t, resp, body, 200)
		if !bytes.Equal(body, data) || resp.Header.Get("X-Sha256") != sha(data) {
			t.Errorf("echo of %d bytes: got %d bytes, X-Sha256 %s, want %s", n, len(body), resp.Header.Get("X-Sha256"), sha(data))
		}
	}
}

func TestInputReadN(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	data := randomBytes(t, 100_000)
	for _, n := range []int{1, 7, 4096, 65536, 1 << 20} {
		resp, body := post(t, s.URL+"/read_n?n="+strconv.Itoa(n), "application/octet-stream", data)
		wantStatus(t, resp, body, 200)
		var r struct {
			Pieces, Length int
			Sha256         string
		}
		decodeJSON(t, body, &r)
		if r.Length != len(data) || r.Sha256 != sha(data) {
			t.Errorf("read(%d): length %d sha %s, want %d %s", n, r.Length, r.Sha256, len(data), sha(data))
		}
		if min := (len(data) + n - 1) / n; r.Pieces < min {
			t.Errorf("read(%d): %d pieces, impossible (fewer than %d)", n, r.Pieces, min)
		}
	}
}

func TestInputLines(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	want := splitLines(inputBody)
	for _, route := range []string{"/readline", "/readlines", "/iter_input"} {
		resp, body := post(t, s.URL+route, "text/plain", []byte(inputBody))
		wantStatus(t, resp, body, 200)
		var r linesReport
		decodeJSON(t, body, &r)
		if fmt.Sprint(r.Lines) != fmt.Sprint(want) {
			t.Errorf("%s: lines %q, want %q", route, r.Lines, want)
		}
	}
}

func TestInputReadlineSize(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, size := range []int{1, 4, 11, 1000} {
		resp, body := post(t, s.URL+"/readline_size?size="+strconv.Itoa(size), "text/plain", []byte(inputBody))
		wantStatus(t, resp, body, 200)
		var r linesReport
		decodeJSON(t, body, &r)
		// readline(size) returns at most size bytes, never crosses a newline, and loses nothing.
		if got := strings.Join(r.Lines, ""); got != inputBody {
			t.Errorf("readline(%d): joined %q, want %q", size, got, inputBody)
		}
		for _, l := range r.Lines {
			if len(l) > size || (strings.Contains(l, "\n") && !strings.HasSuffix(l, "\n")) {
				t.Errorf("readline(%d) returned %q", size, l)
			}
		}
	}
}

func TestInputReadlinesHint(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	resp, body := post(t, s.URL+"/readlines_hint?hint=5", "text/plain", []byte(inputBody))
	wantStatus(t, resp, body, 200)
	var r linesReport
	decodeJSON(t, body, &r)
	if got := strings.Join(r.Lines, "") + r.Rest; got != inputBody {
		t.Errorf("readlines(5) + read(): %q, want %q", got, inputBody)
	}
	for _, l := range r.Lines[:max(0, len(r.Lines)-1)] {
		if !strings.HasSuffix(l, "\n") {
			t.Errorf("readlines(5) returned a partial line %q before the last", l)
		}
	}
}

func TestInputReadPastEnd(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, data := range []string{"", "x", inputBody} {
		resp, body := post(t, s.URL+"/read_past_end", "text/plain", []byte(data))
		wantStatus(t, resp, body, 200)
		if want := fmt.Sprintf(`{"length": %d, "ok": true}`, len(data)); string(body) != want {
			t.Errorf("body %s, want %s", body, want)
		}
	}
	// A GET has an empty wsgi.input too.
	resp, body := get(t, s.URL+"/read_past_end")
	wantStatus(t, resp, body, 200)
}

func TestInputChunkedRequest(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	write(t, c, "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer-X: t\r\n\r\n")
	resp, body := readResponse(t, br, "POST")
	if resp.StatusCode != 200 || string(body) != "hello world" {
		t.Fatalf("chunked echo: %q %q, want 200 \"hello world\"", resp.Status, body)
	}
	// The connection stays usable, and the line-reading routes see the de-chunked body too.
	write(t, c, "POST /readline HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"4\r\nab\nc\r\n3\r\nd\ne\r\n0\r\n\r\n")
	resp, body = readResponse(t, br, "POST")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"lines": ["ab\n", "cd\n", "e"]`) {
		t.Errorf("chunked readline: %q %s", resp.Status, body)
	}
}

func TestInputChunkedRequestLarge(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	data := randomBytes(t, 3<<20)
	// http.Request with an unknown length is sent chunked.
	req, err := http.NewRequest("POST", s.URL+"/echo", io.MultiReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	resp, body := do(t, req)
	wantStatus(t, resp, body, 200)
	if !bytes.Equal(body, data) {
		t.Errorf("chunked echo of %d bytes: got %d bytes (sha %s, want %s)", len(data), len(body), sha(body), sha(data))
	}
}

// TestInputExpectContinue: with "Expect: 100-continue" the client waits for the go-ahead
// before it sends the body. /echo reads the body, so the server must send 100 Continue
// (rather than wait for a body that will not come), then the final response.
func TestInputExpectContinue(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	payload := "hello world"
	write(t, c, headRequest("POST", "/echo", "Expect: 100-continue", "Content-Length: "+strconv.Itoa(len(payload))))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatalf("no 100 Continue nor final response within 5s: %v", err)
	}
	if resp.StatusCode != 100 {
		t.Fatalf("status %q before the body was sent, want 100 Continue (the app reads the body)", resp.Status)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	write(t, c, payload)
	resp, body := readResponse(t, br, "POST")
	if resp.StatusCode != 200 || string(body) != payload {
		t.Errorf("after 100 Continue: %q %q, want 200 %q", resp.Status, body, payload)
	}
}

// TestInputSlowClient: a body that trickles in is still read whole.
func TestInputSlowClient(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	data := randomBytes(t, 10_000)
	write(t, c, headRequest("POST", "/echo", "Content-Length: "+strconv.Itoa(len(data))))
	for i := 0; i < 10; i++ {
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write(data[i*1000 : (i+1)*1000]); err != nil {
			t.Fatal(err)
		}
	}
	resp, body := readResponse(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Errorf("slow upload: %q, %d bytes back, want 200 and the %d bytes sent", resp.Status, len(body), len(data))
	}
}

// TestSlowClientDoesNotHoldThread: with one worker thread, a client that stalls in the
// middle of its headers or of a small body must not keep other requests waiting: requests
// wait in the front until they are complete.
func TestSlowClientDoesNotHoldThread(t *testing.T) {
	s := startRaw(t, "--threads", "1")
	stalledHead := dial(t, s)
	write(t, stalledHead, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Len")
	stalledBody := dial(t, s)
	write(t, stalledBody, headRequest("POST", "/echo", "Content-Length: 100")+"only part of the body")
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	resp, body := get(t, s.URL+"/status?code=200")
	wantStatus(t, resp, body, 200)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("request took %v while two clients stalled; want it served at once", d)
	}
	// The stalled body still completes once the rest arrives.
	write(t, stalledBody, strings.Repeat("z", 100-len("only part of the body")))
	resp, body = readResponse(t, bufio.NewReader(stalledBody), "POST")
	if resp.StatusCode != 200 || len(body) != 100 {
		t.Errorf("completed stalled body: %q, %d bytes", resp.Status, len(body))
	}
}
