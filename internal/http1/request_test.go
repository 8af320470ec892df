package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// bufSizes are the bufio sizes every table row is run with: the minimum (every head takes the
// slow path), a small one, the default, and a large one.
var bufSizes = []int{16, 64, 4096, 1 << 16}

// outcome is what reading one request (head and body) produced.
type outcome struct {
	req    *Request
	body   string
	status int   // *Error status from the head or the body; 0 if none
	err    error // any error (nil on success)
	inBody bool  // the error came from the body
}

// readOne reads one request and its body.
func readOne(br *bufio.Reader, lim Limits) outcome {
	req, err := ReadRequest(br, lim)
	if err != nil {
		return outcome{status: statusOf(err), err: err}
	}
	b, err := io.ReadAll(NewBodyReader(br, req, lim))
	o := outcome{req: req, body: string(b)}
	if err != nil {
		o.status, o.err, o.inBody = statusOf(err), err, true
	}
	return o
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// unexpected is the pseudo-status of io.ErrUnexpectedEOF in the tables below.
const unexpected = -1

func wantMatches(o outcome, want int) bool {
	switch want {
	case 0:
		return o.err == nil
	case unexpected:
		return o.err == io.ErrUnexpectedEOF
	}
	return o.status == want
}

// smuggling holds one row per request-smuggling and header-parsing vector of
// docs landscape.md §3, "Test cases to build from the above", items 1-5 and 9. want is the
// status of the first request (head or body), 0 for success, or unexpected.
var smuggling = []struct {
	item int
	name string
	raw  string
	want int
}{
	// 1. Transfer-Encoding variants.
	{1, "TE chunked twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE chunked twice in one list", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE gzip, chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
	{1, "TE identity, chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501},
	{1, "TE chunked, identity", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400},
	{1, "TE gzip only", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", 400},
	{1, "TE identity only", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 400},
	{1, "TE empty", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400},
	{1, "TE empty list element", "POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with parameter", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 400},
	{1, "TE xchunked", "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE chunkedx", "POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with vertical tab", "POST / HTTP/1.1\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with trailing vertical tab", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with form feed", "POST / HTTP/1.1\r\nTransfer-Encoding: \x0cchunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with tab before colon", "POST / HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE with NBSP", "POST / HTTP/1.1\r\nTransfer-Encoding: \xa0chunked\r\n\r\n0\r\n\r\n", 400},
	// A tab is OWS (RFC 9110 §5.6.3): every RFC parser reads "chunked", so it is no desync.
	{1, "TE with tab as OWS", "POST / HTTP/1.1\r\nTransfer-Encoding:\tchunked\t\r\n\r\n0\r\n\r\n", 0},
	{1, "TE upper case", "POST / HTTP/1.1\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n0\r\n\r\n", 0},
	{1, "TE obs-folded", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE obs-folded with tab", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip,\r\n\tchunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{1, "TE underscore is just a header", "POST / HTTP/1.1\r\nTransfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\nok", 0},

	// 2. Content-Length variants.
	{2, "CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{2, "TE and CL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400},
	{2, "CL plus sign", "POST / HTTP/1.1\r\nContent-Length: +10\r\n\r\n0123456789", 400},
	{2, "CL hex", "POST / HTTP/1.1\r\nContent-Length: 0x0a\r\n\r\n0123456789", 400},
	{2, "CL underscore", "POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n0123456789", 400},
	{2, "CL list", "POST / HTTP/1.1\r\nContent-Length: 10, 10\r\n\r\n0123456789", 400},
	{2, "CL duplicated equal", "POST / HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n0123456789", 400},
	{2, "CL duplicated different", "POST / HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 2\r\n\r\n0123456789", 400},
	{2, "CL negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
	{2, "CL minus zero", "POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n", 400},
	{2, "CL huge", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
	{2, "CL max int64 plus one", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", 400},
	{2, "CL space inside", "POST / HTTP/1.1\r\nContent-Length: 1 0\r\n\r\n0123456789", 400},
	{2, "CL empty", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
	{2, "CL exponent", "POST / HTTP/1.1\r\nContent-Length: 1e1\r\n\r\n0123456789", 400},
	{2, "CL leading zeros ok", "POST / HTTP/1.1\r\nContent-Length: 0010\r\n\r\n0123456789", 0},
	{2, "CL with OWS ok", "POST / HTTP/1.1\r\nContent-Length: \t10 \r\n\r\n0123456789", 0},

	// 3. Chunked body variants.
	{3, "chunk size 0x prefix", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x01\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size plus", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size minus", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size trailing spaces", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1  \r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size leading space", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size underscore", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789ABCDEF\r\n0\r\n\r\n", 400},
	{3, "chunk size empty", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size overflow", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk size bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext bare CR", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\rc\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext control char", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\x01\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext NUL in quoted", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"\x00\"\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext unterminated quote", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext empty name", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;=b\r\nA\r\n0\r\n\r\n", 400},
	{3, "chunk ext valid", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 ; a = \"b\\\"c\" ;d\r\nA\r\n0;e=f\r\n\r\n", 0},
	{3, "chunk data without CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nAB\r\n0\r\n\r\n", 400},
	{3, "chunk data with LF only", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\n0\r\n\r\n", 400},
	{3, "truncated terminal chunk", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", unexpected},
	{3, "truncated terminal chunk with CR", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r", unexpected},
	{3, "truncated chunk data", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAB", unexpected},
	{3, "oversized chunk line", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=" + strings.Repeat("b", 5000) + "\r\nA\r\n0\r\n\r\n", 400},
	{3, "forbidden trailer Content-Length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400},
	{3, "forbidden trailer Host", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nhost: evil\r\n\r\n", 400},
	{3, "trailer obs-fold", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: b\r\n c\r\n\r\n", 400},
	{3, "trailer bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: b\n\r\n", 400},
	{3, "trailer NUL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: \x00\r\n\r\n", 400},

	// 4. Line endings, field syntax, method and version.
	{4, "bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
	{4, "bare LF header", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400},
	{4, "bare LF end of head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
	{4, "bare LF everywhere", "GET / HTTP/1.1\nHost: a\n\n", 400},
	{4, "bare CR request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
	{4, "bare CR in target", "GET /a\rb HTTP/1.1\r\n\r\n", 400},
	{4, "NUL in value", "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400},
	{4, "CR in value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400},
	{4, "DEL in value", "GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", 400},
	{4, "ESC in value", "GET / HTTP/1.1\r\nX-A: a\x1bb\r\n\r\n", 400},
	{4, "space before colon", "GET / HTTP/1.1\r\nContent-Length : 0\r\n\r\n", 400},
	{4, "tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
	{4, "empty header name", "GET / HTTP/1.1\r\n: a\r\n\r\n", 400},
	{4, "header without colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400},
	{4, "space in header name", "GET / HTTP/1.1\r\nX A: a\r\n\r\n", 400},
	{4, "non-ASCII header name", "GET / HTTP/1.1\r\nX-\xc3\x9f: a\r\n\r\n", 400},
	{4, "obs-fold", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400},
	{4, "lower-case method", "get / HTTP/1.1\r\n\r\n", 400},
	{4, "method with paren", "G(ET / HTTP/1.1\r\n\r\n", 400},
	{4, "method with colon", "GET: / HTTP/1.1\r\n\r\n", 400},
	{4, "method with NUL", "GET\x00 / HTTP/1.1\r\n\r\n", 400},
	{4, "method with hash", "GE#T / HTTP/1.1\r\n\r\n", 400},
	{4, "method non-ASCII", "GET\xc3\x9f / HTTP/1.1\r\n\r\n", 400},
	{4, "method too long", strings.Repeat("A", 21) + " / HTTP/1.1\r\n\r\n", 400},
	{4, "method too short", "GE / HTTP/1.1\r\n\r\n", 400},
	{4, "method 20 chars", strings.Repeat("A", 20) + " / HTTP/1.1\r\n\r\n", 0},
	{4, "double space", "GET  / HTTP/1.1\r\n\r\n", 400},
	{4, "tab separator", "GET\t/ HTTP/1.1\r\n\r\n", 400},
	{4, "trailing space", "GET / HTTP/1.1 \r\n\r\n", 400},
	{4, "HTTP/1.10", "GET / HTTP/1.10\r\n\r\n", 400},
	{4, "HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 505},
	{4, "HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505},
	{4, "HTTP/1.2", "GET / HTTP/1.2\r\n\r\n", 505},
	{4, "h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
	{4, "lower-case version", "GET / http/1.1\r\n\r\n", 400},
	{4, "no version", "GET /\r\n\r\n", 400},
	{4, "HTTP/0.9 simple request", "GET /\r\n", 400},

	// 5. Host, Content-Type and request-target forms.
	{5, "duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	{5, "duplicate Host same value", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400},
	{5, "invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
	{5, "Host with userinfo", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400},
	{5, "Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
	{5, "Host with bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400},
	{5, "empty Host ok", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},
	{5, "duplicate Content-Type", "POST / HTTP/1.1\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400},
	{5, "authority-form outside CONNECT", "GET example.com:443 HTTP/1.1\r\n\r\n", 400},
	{5, "origin-form with CONNECT", "CONNECT /path HTTP/1.1\r\n\r\n", 400},
	{5, "CONNECT without port", "CONNECT example.com HTTP/1.1\r\n\r\n", 400},
	{5, "CONNECT absolute-form", "CONNECT http://example.com:443/ HTTP/1.1\r\n\r\n", 400},
	{5, "relative target", "GET foo/bar HTTP/1.1\r\n\r\n", 400},
	{5, "dot-relative target", "GET ./foo HTTP/1.1\r\n\r\n", 400},
	{5, "scheme-relative target", "GET //example.com/ HTTP/1.1\r\n\r\n", 0}, // an origin-form path "//example.com/"
	{5, "asterisk outside OPTIONS", "GET * HTTP/1.1\r\n\r\n", 400},
	{5, "asterisk with suffix", "OPTIONS *x HTTP/1.1\r\n\r\n", 400},
	{5, "absolute-form ftp", "GET ftp://example.com/ HTTP/1.1\r\n\r\n", 400},
	{5, "absolute-form empty host", "GET http:///foo HTTP/1.1\r\n\r\n", 400},
	{5, "absolute-form userinfo", "GET http://u:p@example.com/ HTTP/1.1\r\n\r\n", 400},
	{5, "absolute-form bad authority", "PUT s://]ufd/: HTTP/1.1\r\n\r\n", 400},
	{5, "control char in target", "GET /a\x01 HTTP/1.1\r\n\r\n", 400},
	{5, "DEL in target", "GET /a\x7f HTTP/1.1\r\n\r\n", 400},
}

func TestSmuggling(t *testing.T) {
	for _, tc := range smuggling {
		for _, size := range bufSizes {
			br := bufio.NewReaderSize(strings.NewReader(tc.raw), size)
			o := readOne(br, Limits{})
			if !wantMatches(o, tc.want) {
				t.Errorf("item %d %q (buf %d): got status %d err %v, want %d", tc.item, tc.name, size, o.status, o.err, tc.want)
			}
		}
	}
}

// TestPipelineAfterInvalid is landscape.md §3 item 9: once a request is refused, nothing behind
// it on the connection is ever parsed as a request, and a smuggled request inside a refused
// body is never surfaced.
func TestPipelineAfterInvalid(t *testing.T) {
	cases := []string{
		"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\nContent-Length: 26\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
	}
	for _, raw := range cases {
		for _, size := range bufSizes {
			br := bufio.NewReaderSize(strings.NewReader(raw), size)
			o := readOne(br, Limits{})
			if o.err == nil || o.err == io.EOF {
				t.Errorf("%q: first request accepted", raw)
			}
			if o.req != nil && o.req.Path == "/admin" {
				t.Errorf("%q: smuggled request surfaced", raw)
			}
		}
	}
	// And a valid pipeline is read request by request, to a clean io.EOF.
	raw := "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\r\n" +
		"PUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy" +
		"GET /c HTTP/1.0\r\n\r\n"
	for _, size := range bufSizes {
		br := bufio.NewReaderSize(strings.NewReader(raw), size)
		for _, want := range []struct{ path, body string }{{"/a", "abc"}, {"/b", "xy"}, {"/c", ""}} {
			o := readOne(br, Limits{})
			if o.err != nil || o.req.Path != want.path || o.body != want.body {
				t.Fatalf("buf %d: got %+v, want %s %q", size, o, want.path, want.body)
			}
		}
		if _, err := ReadRequest(br, Limits{}); err != io.EOF {
			t.Fatalf("buf %d: after pipeline got %v, want io.EOF", size, err)
		}
	}
}

func TestParse(t *testing.T) {
	type want struct {
		method, target, path, query, proto, host string
		minor                                    int
		cl                                       int64
		chunked, keepAlive, expect100, upgrade   bool
		headers                                  int
	}
	cases := []struct {
		raw string
		w   want
	}{
		{"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			want{"GET", "/a/b?c=d&e", "/a/b", "c=d&e", "HTTP/1.1", "example.com:8080", 1, 0, false, true, false, false, 1}},
		{"GET /a#frag?x HTTP/1.1\r\n\r\n",
			want{"GET", "/a#frag?x", "/a", "", "HTTP/1.1", "", 1, 0, false, true, false, false, 0}},
		{"GET /a?b#c HTTP/1.0\r\n\r\n",
			want{"GET", "/a?b#c", "/a", "b", "HTTP/1.0", "", 0, 0, false, false, false, false, 0}},
		{"GET /\xc3\xa0%20k HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			want{"GET", "/\xc3\xa0%20k", "/\xc3\xa0%20k", "", "HTTP/1.0", "", 0, 0, false, true, false, false, 1}},
		{"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
			want{"GET", "/", "/", "", "HTTP/1.0", "", 0, 0, false, false, false, false, 1}},
		{"GET / HTTP/1.1\r\nConnection: Upgrade , CLOSE\r\nUpgrade: websocket\r\n\r\n",
			want{"GET", "/", "/", "", "HTTP/1.1", "", 1, 0, false, false, false, true, 2}},
		{"PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
			want{"PUT", "/x", "/x", "", "HTTP/1.1", "", 1, 3, false, true, true, false, 2}},
		{"PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
			want{"PUT", "/x", "/x", "", "HTTP/1.0", "", 0, 3, false, false, false, false, 2}},
		{"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
			want{"POST", "/x", "/x", "", "HTTP/1.1", "", 1, -1, true, true, false, false, 1}},
		{"GET http://Example.com:80/p?q=1#f HTTP/1.1\r\nHost: other\r\n\r\n",
			want{"GET", "http://Example.com:80/p?q=1#f", "/p", "q=1", "HTTP/1.1", "Example.com:80", 1, 0, false, true, false, false, 1}},
		{"GET HTTPS://[::1]?q HTTP/1.1\r\n\r\n",
			want{"GET", "HTTPS://[::1]?q", "/", "q", "HTTP/1.1", "[::1]", 1, 0, false, true, false, false, 0}},
		{"OPTIONS http://a.b HTTP/1.1\r\n\r\n",
			want{"OPTIONS", "http://a.b", "*", "", "HTTP/1.1", "a.b", 1, 0, false, true, false, false, 0}},
		{"OPTIONS * HTTP/1.1\r\n\r\n",
			want{"OPTIONS", "*", "*", "", "HTTP/1.1", "", 1, 0, false, true, false, false, 0}},
		{"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
			want{"CONNECT", "[::1]:443", "", "", "HTTP/1.1", "[::1]:443", 1, 0, false, true, false, false, 1}},
		// landscape.md §3 item 8: non-ASCII bytes in Upgrade and WebSocket fields are obs-text;
		// the parser accepts them (the front refuses upgrades) and must never fail on them.
		{"GET /ws HTTP/1.1\r\nUpgrade: websocket\xff\r\nSec-WebSocket-Protocol: \xc3\xa9, chat\r\n\r\n",
			want{"GET", "/ws", "/ws", "", "HTTP/1.1", "", 1, 0, false, true, false, true, 2}},
		{"\r\n\r\nGET / HTTP/1.1\r\nX-Empty:\r\nX-Pad: \t a b \t\r\n\r\n",
			want{"GET", "/", "/", "", "HTTP/1.1", "", 1, 0, false, true, false, false, 2}},
	}
	for _, tc := range cases {
		for _, size := range bufSizes {
			br := bufio.NewReaderSize(strings.NewReader(tc.raw), size)
			r, err := ReadRequest(br, Limits{})
			if err != nil {
				t.Fatalf("%q: %v", tc.raw, err)
			}
			got := want{r.Method, r.Target, r.Path, r.RawQuery, r.Proto, r.Host, r.Minor, r.ContentLength,
				r.Chunked, r.KeepAlive, r.Expect100, r.Upgrade, len(r.Headers)}
			if got != tc.w {
				t.Errorf("%q (buf %d):\n got %+v\nwant %+v", tc.raw, size, got, tc.w)
			}
		}
	}

	r, err := ReadRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nX-Pad: \t a b \t\r\nx-caf\xe9:1\r\n\r\n")), Limits{})
	if err == nil {
		t.Fatalf("non-token name accepted: %+v", r)
	}
	r, err = ReadRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nX-Pad: \t a b \t\r\nx-obs:caf\xe9\r\n\r\n")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	wantH := []Header{{"X-Pad", "a b"}, {"x-obs", "caf\xe9"}}
	if len(r.Headers) != 2 || r.Headers[0] != wantH[0] || r.Headers[1] != wantH[1] {
		t.Fatalf("headers %q, want %q", r.Headers, wantH)
	}
}

func TestEOF(t *testing.T) {
	cases := []struct {
		raw  string
		want error
	}{
		{"", io.EOF},
		{"\r\n", io.EOF},
		{"\r\n\r\n", io.EOF},
		{"\r", io.ErrUnexpectedEOF},
		{"G", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\n", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: a\r\n", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", io.ErrUnexpectedEOF},
	}
	for _, tc := range cases {
		for _, size := range bufSizes {
			_, err := ReadRequest(bufio.NewReaderSize(strings.NewReader(tc.raw), size), Limits{})
			if err != tc.want {
				t.Errorf("%q (buf %d): got %v, want %v", tc.raw, size, err, tc.want)
			}
		}
	}

	// Read errors are returned unchanged, both before and inside a head.
	boom := errors.New("boom")
	for _, prefix := range []string{"", "GET / HTTP/1.1\r\n", strings.Repeat("a", 5000)} {
		for _, size := range bufSizes {
			r := io.MultiReader(strings.NewReader(prefix), &errReader{boom})
			_, err := ReadRequest(bufio.NewReaderSize(r, size), Limits{MaxLineBytes: 8000})
			if !errors.Is(err, boom) {
				t.Errorf("prefix %.20q (buf %d): got %v, want boom", prefix, size, err)
			}
		}
	}

	// Content-Length bodies cut short.
	br := bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"))
	if o := readOne(br, Limits{}); o.err != io.ErrUnexpectedEOF || o.body != "abc" {
		t.Errorf("short body: %+v", o)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func TestLeadingEmptyLines(t *testing.T) {
	for n := 0; n <= maxLeadingEmptyLines+1; n++ {
		raw := strings.Repeat("\r\n", n) + "GET / HTTP/1.1\r\n\r\n"
		_, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{})
		if (err == nil) != (n <= maxLeadingEmptyLines) {
			t.Errorf("%d empty lines: %v", n, err)
		}
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("\nGET / HTTP/1.1\r\n\r\n")), Limits{}); statusOf(err) != 400 {
		t.Errorf("leading bare LF: %v", err)
	}
}

func TestLimits(t *testing.T) {
	if d := DefaultLimits(); d != (Limits{4094, 100, 8190, 4096}) {
		t.Fatalf("DefaultLimits() = %+v", d)
	}
	line := func(n int) string { // a request line of exactly n bytes without CRLF
		return "GET /" + strings.Repeat("a", n-len("GET / HTTP/1.1")) + " HTTP/1.1\r\n"
	}
	field := func(n int) string { // a field line of exactly n bytes with CRLF
		return "X: " + strings.Repeat("v", n-len("X: \r\n")) + "\r\n"
	}
	fields := func(n int) string { return strings.Repeat("X: v\r\n", n) }
	cases := []struct {
		name string
		lim  Limits
		raw  string
		want int
	}{
		{"line at default limit", Limits{}, line(4094) + "\r\n", 0},
		{"line over default limit", Limits{}, line(4095) + "\r\n", 414},
		{"line over limit, unterminated", Limits{}, line(4095)[:4097], 414},
		{"line at custom limit", Limits{MaxLineBytes: 100}, line(100) + "\r\n", 0},
		{"line over custom limit", Limits{MaxLineBytes: 100}, line(101) + "\r\n", 414},
		{"field at default limit", Limits{}, line(20) + field(8190) + "\r\n", 0},
		{"field over default limit", Limits{}, line(20) + field(8191) + "\r\n", 431},
		{"field over limit, unterminated", Limits{}, line(20) + field(9000)[:8500], 431},
		{"field at custom limit", Limits{MaxFieldBytes: 64}, line(20) + field(64) + "\r\n", 0},
		{"field over custom limit", Limits{MaxFieldBytes: 64}, line(20) + field(65) + "\r\n", 431},
		{"fields at default limit", Limits{}, line(20) + fields(100) + "\r\n", 0},
		{"fields over default limit", Limits{}, line(20) + fields(101) + "\r\n", 431},
		{"fields at custom limit", Limits{MaxFields: 3}, line(20) + fields(3) + "\r\n", 0},
		{"fields over custom limit", Limits{MaxFields: 3}, line(20) + fields(4) + "\r\n", 431},
		{"negative means default", Limits{-1, -1, -1, -1}, line(4094) + fields(100) + "\r\n", 0},
		{"large head", Limits{MaxLineBytes: 1 << 20, MaxFieldBytes: 1 << 20}, line(100000) + field(100000) + fields(99) + "\r\n", 0},
	}
	for _, tc := range cases {
		for _, size := range bufSizes {
			o := readOne(bufio.NewReaderSize(strings.NewReader(tc.raw), size), tc.lim)
			if !wantMatches(o, tc.want) {
				t.Errorf("%s (buf %d): got %d %v, want %d", tc.name, size, o.status, o.err, tc.want)
			}
		}
	}
}

// endless yields one prefix and then the same byte forever, counting what was read.
type endless struct {
	prefix string
	b      byte
	n      int
}

func (r *endless) Read(p []byte) (int, error) {
	n := copy(p, r.prefix)
	r.prefix = r.prefix[n:]
	for i := n; i < len(p); i++ {
		p[i] = r.b
	}
	r.n += len(p)
	return len(p), nil
}

// TestBoundedBuffering checks that an endless line costs no more than its limit plus one
// buffer before it is refused.
func TestBoundedBuffering(t *testing.T) {
	cases := []struct {
		prefix string
		want   int
		limit  int
	}{
		{"GET /", 414, 4094},
		{"GET / HTTP/1.1\r\nX: ", 431, 8190},
	}
	for _, tc := range cases {
		for _, size := range bufSizes {
			r := &endless{prefix: tc.prefix, b: 'a'}
			_, err := ReadRequest(bufio.NewReaderSize(r, size), Limits{})
			if statusOf(err) != tc.want {
				t.Errorf("%q (buf %d): %v", tc.prefix, size, err)
			}
			if max := tc.limit + 2*size + len(tc.prefix); r.n > max {
				t.Errorf("%q (buf %d): read %d bytes, want at most %d", tc.prefix, size, r.n, max)
			}
		}
	}
	// The same for a chunk-size line and a trailer line.
	for _, prefix := range []string{"1;a=", "0\r\nX: "} {
		for _, size := range bufSizes {
			r := &endless{prefix: prefix, b: 'a'}
			br := bufio.NewReaderSize(r, size)
			_, err := io.Copy(io.Discard, NewBodyReader(br, &Request{Chunked: true, ContentLength: -1}, Limits{}))
			if statusOf(err) != 400 {
				t.Errorf("%q (buf %d): %v", prefix, size, err)
			}
			if max := 8190 + 2*size + len(prefix); r.n > max {
				t.Errorf("%q (buf %d): read %d bytes, want at most %d", prefix, size, r.n, max)
			}
		}
	}
}

// typicalGET is a 6-header GET as a browser or load generator sends it.
const typicalGET = "GET /api/items?page=2 HTTP/1.1\r\n" +
	"Host: example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef\r\n" +
	"\r\n"

// TestRequestBufferReuse: a request read into a used RequestBuffer keeps nothing of the one
// before it.
func TestRequestBufferReuse(t *testing.T) {
	first := "POST /up?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n" +
		"Upgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n"
	second := "GET / HTTP/1.0\r\n\r\n"
	var rb RequestBuffer
	for _, tc := range []string{first, second} {
		br := bufio.NewReader(strings.NewReader(tc))
		got, err := rb.Read(br, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := ReadRequest(bufio.NewReader(strings.NewReader(tc)), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q into a used buffer:\n got %+v\nwant %+v", tc, got, want)
		}
	}
	// Reset lets go of the head: nothing of the last request is left in the buffer.
	rb.Reset()
	if !reflect.ValueOf(rb.b).IsZero() {
		t.Errorf("after Reset the buffer still holds %+v", rb.b.req)
	}
}

// TestAllocs pins the allocation count of a typical request: one for the head string and one
// for the Request with its inline header array; the body reader of a bodiless request costs
// nothing.
func TestAllocs(t *testing.T) {
	sr := strings.NewReader(typicalGET)
	br := bufio.NewReader(sr)
	allocs := testing.AllocsPerRun(1000, func() {
		sr.Reset(typicalGET)
		br.Reset(sr)
		req, err := ReadRequest(br, Limits{})
		if err != nil || len(req.Headers) != 6 {
			t.Fatal(req, err)
		}
		if n, err := NewBodyReader(br, req, Limits{}).Read(nil); n != 0 || err != io.EOF {
			t.Fatal(n, err)
		}
	})
	if allocs > 2 {
		t.Errorf("typical GET: %v allocations, want at most 2", allocs)
	}

	// A connection's RequestBuffer leaves the head string only.
	var rb RequestBuffer
	allocs = testing.AllocsPerRun(1000, func() {
		sr.Reset(typicalGET)
		br.Reset(sr)
		if req, err := rb.Read(br, Limits{}); err != nil || len(req.Headers) != 6 {
			t.Fatal(req, err)
		}
	})
	if allocs > 1 {
		t.Errorf("typical GET into a RequestBuffer: %v allocations, want at most 1", allocs)
	}

	// A head larger than the bufio buffer takes the slow path: one more for the scratch slice.
	big := strings.Replace(typicalGET, "session=", "session="+strings.Repeat("x", 5000), 1)
	sr.Reset(big)
	allocs = testing.AllocsPerRun(100, func() {
		sr.Reset(big)
		br.Reset(sr)
		if _, err := ReadRequest(br, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Errorf("large GET: %v allocations, want at most 3", allocs)
	}
}

func BenchmarkReadRequest(b *testing.B) {
	sr := strings.NewReader(typicalGET)
	br := bufio.NewReader(sr)
	b.SetBytes(int64(len(typicalGET)))
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(typicalGET)
		br.Reset(sr)
		if _, err := ReadRequest(br, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunked(b *testing.B) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	enc := encodeChunked(payload, 8192, nil)
	r := bytes.NewReader(enc)
	br := bufio.NewReader(r)
	buf := make([]byte, 32<<10)
	req := &Request{Chunked: true, ContentLength: -1}
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		r.Reset(enc)
		br.Reset(r)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{NewBodyReader(br, req, Limits{})}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
