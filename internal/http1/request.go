// Package http1 parses HTTP/1.x requests from a byte stream with the strict rules of RFC 9112,
// rejecting every request-smuggling vector the peers have shipped CVEs for. It owns only parsing:
// request head, body framing (Content-Length or chunked) and limits; connections, responses and
// policy live in the front.
package http1

import (
	"bufio"
	"bytes"
	"io"
)

// Header is one header field as it arrived on the wire. Name keeps the client's spelling; Value has
// leading and trailing whitespace (SP / HTAB) removed.
type Header struct {
	Name  string
	Value string
}

// Request is a parsed request head. It is not safe for concurrent use.
type Request struct {
	Method   string // e.g. "GET"; validated as an RFC 9110 token
	Target   string // the raw request-target as sent
	Path     string // the path of the target, still percent-encoded ("*" for asterisk-form, "" for CONNECT)
	RawQuery string // the query after '?', without the '?', raw; a "#fragment" is dropped from both
	Proto    string // "HTTP/1.1" or "HTTP/1.0"
	Minor    int    // 0 or 1 (major is always 1)

	// Headers lists every field in wire order; repeated fields are kept separate.
	Headers []Header

	// Host is the value of the single Host header ("" when absent). The authority of an
	// absolute-form target, or the target of CONNECT, overrides it (RFC 9112 §3.2.2).
	Host string

	// ContentLength is the body length when the body is Content-Length delimited, 0 when there is
	// no body, and -1 when the body is chunked.
	ContentLength int64
	// Chunked reports Transfer-Encoding: chunked.
	Chunked bool

	// KeepAlive reports whether the connection may carry another request after this one
	// (HTTP/1.1 without "Connection: close", or HTTP/1.0 with "Connection: keep-alive").
	KeepAlive bool
	// Expect100 reports "Expect: 100-continue" on an HTTP/1.1 request (RFC 9110 §10.1.1 has
	// servers ignore it in HTTP/1.0).
	Expect100 bool
	// Upgrade reports an Upgrade header (gowsgi serves WSGI only and never switches protocols).
	Upgrade bool
}

// Limits bounds what a request head may hold; a zero (or negative) field means the default in
// DefaultLimits.
type Limits struct {
	MaxLineBytes      int // request-line length without its CRLF; gunicorn --limit-request-line (4094)
	MaxFields         int // header count, also applied to trailers; gunicorn --limit-request-fields (100)
	MaxFieldBytes     int // one header or trailer line including its CRLF; gunicorn --limit-request-field_size (8190)
	MaxChunkLineBytes int // one chunk-size line including extensions and CRLF (4096)
}

// Error is a request the server must refuse. Status is the response code to send (400, 413, 414,
// 431, 501 or 505); the connection must be closed after it.
type Error struct {
	Status int
	Reason string
}

// Error returns the reason, a short English phrase fit for a response body.
func (e *Error) Error() string { return e.Reason }

// DefaultLimits returns gunicorn's default limits: a 4094-byte request line, 100 header fields of
// at most 8190 bytes each, and 4096-byte chunk-size lines.
func DefaultLimits() Limits {
	return Limits{MaxLineBytes: 4094, MaxFields: 100, MaxFieldBytes: 8190, MaxChunkLineBytes: 4096}
}

// withDefaults replaces every zero or negative field by its default.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = d.MaxLineBytes
	}
	if l.MaxFields <= 0 {
		l.MaxFields = d.MaxFields
	}
	if l.MaxFieldBytes <= 0 {
		l.MaxFieldBytes = d.MaxFieldBytes
	}
	if l.MaxChunkLineBytes <= 0 {
		l.MaxChunkLineBytes = d.MaxChunkLineBytes
	}
	return l
}

func badRequest(reason string) error { return &Error{Status: 400, Reason: reason} }

// maxLeadingEmptyLines is how many empty lines (CRLF) may precede a request line. RFC 9112 §2.2
// asks servers to ignore at least one; clients add one after a POST body now and then.
const maxLeadingEmptyLines = 4

// inlineHeaders is how many header fields are stored in the same allocation as the Request.
const inlineHeaders = 12

// requestBlock puts a Request and room for its first header fields in one allocation.
type requestBlock struct {
	req Request
	hdr [inlineHeaders]Header
}

// ReadRequest reads one request head (request line, header fields and the empty line) from br
// and validates it with the strict rules of RFC 9112 and RFC 9110. It does not read the body;
// use NewBodyReader for that, and drain the body before reading the next request.
//
// It returns exactly io.EOF when the stream ends cleanly before a request starts (empty lines
// that may precede a request do not count as a start), io.ErrUnexpectedEOF when it ends inside
// a head, a read error of br unchanged, and otherwise an *Error whose Status is 400 (malformed),
// 414 (request line over lim.MaxLineBytes), 431 (more than lim.MaxFields fields, or one over
// lim.MaxFieldBytes), 501 (a transfer coding other than chunked) or 505 (an HTTP version other
// than 1.0 and 1.1). After any error the connection must be closed.
//
// Rules beyond the RFC grammar, each chosen to match gunicorn 26 or to refuse a smuggling
// vector:
//   - Lines end in CRLF; a bare LF or CR anywhere in the head is refused. Obsolete line folding
//     is refused.
//   - The method is 3 to 20 token characters with no lower-case letter and no '#'.
//   - The request-target may hold any byte from 0x21 to 0xFF except DEL (gunicorn accepts
//     quotes and raw UTF-8 in paths); a "#fragment" is accepted and dropped from Path and
//     RawQuery. Authority-form is accepted only with CONNECT (and CONNECT only with it), asterisk
//     form only with OPTIONS, and absolute-form only for http and https without userinfo.
//   - HTTP/1.1 requests without Host are accepted (gunicorn does); a repeated Host, Content-Type,
//     Content-Length or Transfer-Encoding field, or an invalid Host value, is refused.
//   - Content-Length is one or more digits, nothing else. Transfer-Encoding is refused on
//     HTTP/1.0, together with Content-Length, and unless the coding list is exactly "chunked".
//
// Every string in the Request shares one allocation holding the head; a typical request costs
// two allocations in total (one with a RequestBuffer).
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	return readRequest(br, lim, nil)
}

// RequestBuffer is where a connection reads its requests, one after the other: the Request
// and its first header fields reuse one allocation (a front at 70,000 hello requests/s
// allocated 38 % of its bytes there, and collected them).
type RequestBuffer struct{ b requestBlock }

// Read is ReadRequest into rb. The Request it returns is valid until the next Read or Reset
// of rb; its strings stay valid for good.
func (rb *RequestBuffer) Read(br *bufio.Reader, lim Limits) (*Request, error) {
	return readRequest(br, lim, &rb.b)
}

// Reset lets go of the last request: its fields point into its head, which an idle
// keep-alive connection should not keep (up to about 100 KiB with the default limits).
func (rb *RequestBuffer) Reset() { rb.b = requestBlock{} }

// readRequest is ReadRequest, into b when b is not nil.
func readRequest(br *bufio.Reader, lim Limits, b *requestBlock) (*Request, error) {
	lim = lim.withDefaults()
	h := headScan{lim: lim}
	head, err := readHead(br, &h)
	if err != nil {
		return nil, err
	}
	fields := h.fields
	var req *Request
	if fields <= inlineHeaders {
		if b == nil {
			b = new(requestBlock)
		}
		req = &b.req
		*req = Request{Headers: b.hdr[:0:fields]}
	} else {
		req = new(Request)
		req.Headers = make([]Header, 0, fields)
	}
	if err := parseHead(req, head, &h.rl); err != nil {
		return nil, err
	}
	return req, nil
}

// Kinds of head line, as classified by headScan.line.
const (
	lineMore = iota // a request line or field line; more follow
	lineSkip        // an empty line before the request line
	lineEnd         // the empty line that ends the head
)

// headScan finds the lines of a head and enforces the framing rules that must hold before the
// head is accepted at all: CRLF endings, no obs-fold, and the limits.
type headScan struct {
	lim     Limits
	started bool        // the request line has been seen
	rl      requestLine // the request line, parsed as soon as it is complete
	empties int         // empty lines before the request line
	fields  int         // field lines so far
}

// line classifies one complete line, which ends in '\n'.
func (h *headScan) line(l []byte) (int, error) {
	n := len(l)
	crlf := n >= 2 && l[n-2] == '\r'
	// The limits come first, with the arithmetic of partial, so that the outcome does not
	// depend on how much of the line had arrived when it was first looked at.
	if !h.started {
		content := n - 1
		if crlf {
			content--
		}
		if content > h.lim.MaxLineBytes {
			return 0, &Error{Status: 414, Reason: "request line too long"}
		}
	} else if n > h.lim.MaxFieldBytes {
		return 0, &Error{Status: 431, Reason: "header field too long"}
	}
	if !crlf {
		return 0, badRequest("line not terminated by CRLF")
	}
	if n == 2 {
		if h.started {
			return lineEnd, nil
		}
		if h.empties++; h.empties > maxLeadingEmptyLines {
			return 0, badRequest("too many empty lines before the request line")
		}
		return lineSkip, nil
	}
	if !h.started {
		// Refuse a bad request line at once rather than after waiting for the whole head.
		rl, err := parseRequestLine(l[:n-2])
		if err != nil {
			return 0, err
		}
		h.rl = rl
		h.started = true
		return lineMore, nil
	}
	if l[0] == ' ' || l[0] == '\t' {
		return 0, badRequest("obsolete line folding")
	}
	if h.fields++; h.fields > h.lim.MaxFields {
		return 0, &Error{Status: 431, Reason: "too many header fields"}
	}
	return lineMore, nil
}

// partial checks an incomplete line of n bytes (no '\n' yet) against the limits, so that an
// over-long line is refused as soon as it is certain, without buffering the rest of it.
func (h *headScan) partial(n int) error {
	if !h.started {
		// The line is at least n bytes plus "\n"; at most one of the n may be its CR.
		if n-1 > h.lim.MaxLineBytes {
			return &Error{Status: 414, Reason: "request line too long"}
		}
		return nil
	}
	if n+1 > h.lim.MaxFieldBytes {
		return &Error{Status: 431, Reason: "header field too long"}
	}
	return nil
}

// eofError is the error for a stream that ended with `pending` bytes of an unfinished line.
func (h *headScan) eofError(pending int) error {
	if !h.started && pending == 0 {
		return io.EOF
	}
	return io.ErrUnexpectedEOF
}

// readHead reads a head and returns it as one string: the request line and every field line,
// each with its CRLF, without leading empty lines and without the final empty line. h holds
// the parsed request line and the number of field lines afterwards.
//
// When the whole head fits in br's buffer it is scanned in place and copied once; otherwise the
// lines are gathered in a scratch slice. Either way no line is buffered beyond its limit (or
// br's buffer size, whichever is larger).
func readHead(br *bufio.Reader, h *headScan) (string, error) {
	start, pos := 0, 0 // start of the request line; end of the complete lines scanned
	want := br.Buffered()
	if want == 0 {
		want = 1
	}
	var buf []byte
	for {
		_, perr := br.Peek(want)
		buf, _ = br.Peek(br.Buffered())
		for {
			i := bytes.IndexByte(buf[pos:], '\n')
			if i < 0 {
				break
			}
			kind, err := h.line(buf[pos : pos+i+1])
			if err != nil {
				return "", err
			}
			pos += i + 1
			switch kind {
			case lineSkip:
				start = pos
			case lineEnd:
				s := string(buf[start : pos-2])
				_, _ = br.Discard(pos)
				return s, nil
			}
		}
		if err := h.partial(len(buf) - pos); err != nil {
			return "", err
		}
		if perr != nil && perr != bufio.ErrBufferFull {
			if perr == io.EOF {
				perr = h.eofError(len(buf) - pos)
			}
			return "", perr
		}
		if len(buf) >= br.Size() {
			break // the head is larger than the buffer
		}
		want = len(buf) + 1
	}

	// Slow path: keep the complete lines seen so far, then read line by line.
	scratch := append(make([]byte, 0, 2*br.Size()), buf[start:pos]...)
	_, _ = br.Discard(pos)
	for {
		ls := len(scratch)
		for {
			frag, err := br.ReadSlice('\n')
			scratch = append(scratch, frag...)
			if err == nil {
				break
			}
			if perr := h.partial(len(scratch) - ls); perr != nil {
				return "", perr
			}
			if err != bufio.ErrBufferFull {
				if err == io.EOF {
					err = h.eofError(len(scratch) - ls)
				}
				return "", err
			}
		}
		kind, err := h.line(scratch[ls:])
		if err != nil {
			return "", err
		}
		switch kind {
		case lineSkip:
			scratch = scratch[:ls]
		case lineEnd:
			return string(scratch[:ls]), nil
		}
	}
}
