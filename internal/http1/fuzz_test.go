package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"gowsgi/internal/ascii"
)

// step is one request read from a stream, in a form that can be compared between runs.
type step struct {
	req  Request
	body string
	err  string
}

func errString(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return strconv.Itoa(e.Status) + " " + e.Reason
	}
	return err.Error()
}

// fuzzLimits picks limits from sel so that the fuzzer reaches every limit cheaply.
func fuzzLimits(sel uint8) Limits {
	var lim Limits
	if sel&1 != 0 {
		lim.MaxLineBytes = 40
	}
	if sel&2 != 0 {
		lim.MaxFields = 3
	}
	if sel&4 != 0 {
		lim.MaxFieldBytes = 40
	}
	if sel&8 != 0 {
		lim.MaxChunkLineBytes = 12
	}
	return lim
}

// readAll reads requests and bodies until an error, checking the invariants of every request.
func readAll(t *testing.T, data []byte, size int, lim Limits) []step {
	br := bufio.NewReaderSize(bytes.NewReader(data), size)
	var steps []step
	for i := 0; i <= len(data); i++ {
		req, err := ReadRequest(br, lim)
		if err != nil {
			checkError(t, err, false)
			return append(steps, step{err: errString(err)})
		}
		checkRequest(t, req)
		body, err := io.ReadAll(NewBodyReader(br, req, lim))
		if !req.Chunked && int64(len(body)) > req.ContentLength {
			t.Fatalf("body of %d bytes for Content-Length %d", len(body), req.ContentLength)
		}
		r := *req
		r.Headers = append([]Header(nil), req.Headers...)
		steps = append(steps, step{req: r, body: string(body), err: errString(err)})
		if err != nil {
			checkError(t, err, true)
			return steps
		}
	}
	t.Fatalf("more requests than bytes")
	return nil
}

func checkError(t *testing.T, err error, inBody bool) {
	var e *Error
	switch {
	case err == io.EOF && !inBody, err == io.ErrUnexpectedEOF:
	case errors.As(err, &e):
		switch e.Status {
		case 400, 414, 431, 501, 505:
		default:
			t.Fatalf("unexpected status %d", e.Status)
		}
		if inBody && e.Status != 400 {
			t.Fatalf("body error with status %d", e.Status)
		}
		if e.Reason == "" {
			t.Fatal("error without reason")
		}
	default:
		t.Fatalf("unexpected error %v", err)
	}
}

func checkRequest(t *testing.T, r *Request) {
	if !isToken(r.Method) || len(r.Method) < 3 || len(r.Method) > 20 {
		t.Fatalf("method %q", r.Method)
	}
	if r.Method == "CONNECT" {
		if r.Path != "" || r.Host == "" {
			t.Fatalf("CONNECT path %q host %q", r.Path, r.Host)
		}
	} else if r.Path == "" || r.Path[0] != '/' && r.Path != "*" {
		t.Fatalf("path %q", r.Path)
	}
	if r.Target == "" || strings.ContainsAny(r.Target, " \r\n\x00\x7f") {
		t.Fatalf("target %q", r.Target)
	}
	if strings.ContainsAny(r.Path+r.RawQuery, "# ") {
		t.Fatalf("path %q query %q", r.Path, r.RawQuery)
	}
	if r.Proto != "HTTP/1.0" && r.Proto != "HTTP/1.1" || r.Proto[7] != byte('0'+r.Minor) {
		t.Fatalf("proto %q minor %d", r.Proto, r.Minor)
	}
	if strings.ContainsAny(r.Host, " \t\r\n\x00/@") {
		t.Fatalf("host %q", r.Host)
	}
	hosts := 0
	for _, h := range r.Headers {
		if !isToken(h.Name) || strings.ContainsAny(h.Value, "\r\n\x00") ||
			strings.TrimLeft(h.Value, " \t") != h.Value || strings.TrimRight(h.Value, " \t") != h.Value {
			t.Fatalf("header %q", h)
		}
		if ascii.EqualFold(h.Name, "host") {
			hosts++
		}
	}
	if hosts > 1 {
		t.Fatal("two Host headers accepted")
	}
	if r.ContentLength < -1 || r.Chunked != (r.ContentLength == -1) {
		t.Fatalf("content length %d chunked %v", r.ContentLength, r.Chunked)
	}
	if r.Chunked && r.Minor == 0 {
		t.Fatal("chunked HTTP/1.0 request")
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add(c.raw, uint8(0))
		f.Add(c.raw, uint8(0xff))
	}
	for _, tc := range smuggling {
		f.Add([]byte(tc.raw), uint8(0))
	}
	f.Add([]byte(typicalGET), uint8(0x30))
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		lim := fuzzLimits(sel)
		small := 16 + int(sel>>4)*4
		a := readAll(t, data, 4096, lim)
		b := readAll(t, data, small, lim)
		// The in-buffer fast path and the line-by-line slow path must agree exactly.
		if len(a) != len(b) {
			t.Fatalf("buffer 4096 read %d steps, buffer %d read %d", len(a), small, len(b))
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.err != y.err || x.body != y.body || len(x.req.Headers) != len(y.req.Headers) {
				t.Fatalf("step %d differs: %+v vs %+v", i, x, y)
			}
			hx, hy := x.req.Headers, y.req.Headers
			if !reflect.DeepEqual(x.req, y.req) {
				t.Fatalf("step %d differs: %+v vs %+v", i, x.req, y.req)
			}
			for j := range hx {
				if hx[j] != hy[j] {
					t.Fatalf("step %d header %d differs: %q vs %q", i, j, hx[j], hy[j])
				}
			}
		}
	})
}

var fuzzExts = []string{"", ";a=b", ";a=\"x \\\"y\"", " ; q", ";a;b=c\t;d"}

func FuzzChunked(f *testing.F) {
	for _, tc := range []string{
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"5; some; parameters=stuff\r\nhello\r\n0\r\nVary: *\r\n\r\n",
		"0005\r\nhello\r\n000\r\n\r\n",
		"5;foo=\"bar baz\"\r\nhello\r\n0\r\n\r\n",
		"6_0\r\n world\r\n0\r\n\r\n",
		"0\r\n",
		"8000000000000000\r\n",
		"5;ext=val\rue\r\nhello\r\n0\r\n\r\n",
	} {
		f.Add([]byte(tc), []byte("hello world"), uint16(3), uint8(0))
	}
	f.Add([]byte{}, bytes.Repeat([]byte("x"), 5000), uint16(4096), uint8(0x13))
	f.Fuzz(func(t *testing.T, raw, payload []byte, chunk uint16, sel uint8) {
		lim := fuzzLimits(sel)
		small := 16 + int(sel>>4)*4

		// Arbitrary input: no panic, never more output than input, only the documented errors,
		// and the same result whatever the buffer size.
		var outs [2]string
		var errs [2]string
		for i, size := range []int{4096, small} {
			br := bufio.NewReaderSize(bytes.NewReader(raw), size)
			out, err := io.ReadAll(NewBodyReader(br, chunkedRequest(), lim))
			if len(out) > len(raw) {
				t.Fatalf("decoded %d bytes from %d", len(out), len(raw))
			}
			if err != nil {
				checkError(t, err, true)
			}
			outs[i], errs[i] = string(out), errString(err)
		}
		if outs[0] != outs[1] || errs[0] != errs[1] {
			t.Fatalf("buffer sizes disagree: %q %s vs %q %s", outs[0], errs[0], outs[1], errs[1])
		}

		// A valid encoding round-trips and the decoder stops exactly at its end.
		ext := fuzzExts[int(sel)%len(fuzzExts)]
		var trailers []string
		if sel&0x40 != 0 {
			trailers = []string{"X-Sum: 1", "Vary: *"}
		}
		enc := encodeChunked(payload, int(chunk), trailers, ext)
		lim = Limits{}
		br := bufio.NewReaderSize(bytes.NewReader(append(enc, "NEXT"...)), small)
		out, err := io.ReadAll(NewBodyReader(br, chunkedRequest(), lim))
		if err != nil || !bytes.Equal(out, payload) {
			t.Fatalf("round trip: %d of %d bytes, %v", len(out), len(payload), err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
			t.Fatalf("decoder left %q", rest)
		}
	})
}
