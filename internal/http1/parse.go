package http1

import (
	"strings"

	"gowsgi/internal/ascii"
)

// parseHead fills req from a head read by readHead: lines ending in CRLF, the request line
// (already parsed into rl) first, no final empty line. req.Headers must have room for every
// field.
func parseHead(req *Request, s string, rl *requestLine) error {
	rl.set(req, s)
	s = s[strings.IndexByte(s, '\n')+1:]

	var (
		hosts, contentTypes, cls, tes int
		cl                            int64
		te                            string
		closeConn, keepAlive          bool
	)
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		line := s[:i-1]
		s = s[i+1:]

		c := strings.IndexByte(line, ':')
		if c < 0 {
			return badRequest("header field without colon")
		}
		name := line[:c]
		if !isToken(name) {
			// Covers an empty name, whitespace before the colon, NUL and non-ASCII bytes.
			return badRequest("invalid header field name")
		}
		value, ok := fieldValue(line[c+1:])
		if !ok {
			return badRequest("invalid character in header field value")
		}
		req.Headers = append(req.Headers, Header{Name: name, Value: value})

		switch len(name) {
		case 4:
			if ascii.EqualFold(name, "host") {
				if hosts++; hosts > 1 {
					return badRequest("duplicate Host header")
				}
				if !validHostPort(value, false, false) {
					return badRequest("invalid Host header")
				}
				if rl.host.hi == 0 { // else an absolute-form or CONNECT target has set it
					req.Host = value
				}
			}
		case 6:
			if ascii.EqualFold(name, "expect") && ascii.EqualFold(value, "100-continue") && req.Minor == 1 {
				req.Expect100 = true
			}
		case 7:
			if ascii.EqualFold(name, "upgrade") {
				req.Upgrade = true
			}
		case 10:
			if ascii.EqualFold(name, "connection") {
				for v := value; v != ""; {
					var elem string
					elem, v, _ = strings.Cut(v, ",")
					elem = trimOWS(elem)
					closeConn = closeConn || ascii.EqualFold(elem, "close")
					keepAlive = keepAlive || ascii.EqualFold(elem, "keep-alive")
				}
			}
		case 12:
			if ascii.EqualFold(name, "content-type") {
				if contentTypes++; contentTypes > 1 {
					return badRequest("duplicate Content-Type header")
				}
			}
		case 14:
			if ascii.EqualFold(name, "content-length") {
				if cls++; cls > 1 {
					return badRequest("duplicate Content-Length header")
				}
				n, ok := parseContentLength(value)
				if !ok {
					return badRequest("invalid Content-Length")
				}
				cl = n
			}
		case 17:
			if ascii.EqualFold(name, "transfer-encoding") {
				if tes++; tes > 1 {
					return badRequest("duplicate Transfer-Encoding header")
				}
				te = value
			}
		}
	}

	switch {
	case tes > 0:
		if req.Minor == 0 {
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if cls > 0 {
			return badRequest("both Content-Length and Transfer-Encoding")
		}
		if err := checkTransferEncoding(te); err != nil {
			return err
		}
		req.Chunked = true
		req.ContentLength = -1
	case cls > 0:
		req.ContentLength = cl
	}
	if req.Minor == 1 {
		req.KeepAlive = !closeConn
	} else {
		req.KeepAlive = keepAlive && !closeConn
	}
	return nil
}

// span is a byte range [lo, hi) of a request line.
type span struct{ lo, hi int }

// requestLine is a validated request line as offsets into it, so that it can be checked on the
// bytes of br's buffer as soon as it arrives and sliced later from the head string.
type requestLine struct {
	method, target, path, query, host span
	pathConst                         string // "*" or "/" when the path is not part of the target
	minor                             int
}

// set fills the request-line fields of req from s, which starts with the request line.
func (rl *requestLine) set(req *Request, s string) {
	req.Method = s[rl.method.lo:rl.method.hi]
	req.Target = s[rl.target.lo:rl.target.hi]
	if rl.pathConst != "" {
		req.Path = rl.pathConst
	} else {
		req.Path = s[rl.path.lo:rl.path.hi]
	}
	req.RawQuery = s[rl.query.lo:rl.query.hi]
	req.Host = s[rl.host.lo:rl.host.hi]
	req.Minor = rl.minor
	req.Proto = "HTTP/1.0"
	if rl.minor == 1 {
		req.Proto = "HTTP/1.1"
	}
}

// parseRequestLine parses "method SP request-target SP HTTP-version" (without CRLF) in one
// pass. Its checks run in this order: the shape (token, one SP, target bytes, one SP), the
// version (505 for a well-formed one we do not speak), the method rule, the target form.
func parseRequestLine[S string | []byte](line S) (rl requestLine, err error) {
	n := len(line)
	i := 0
	for i < n && chars[line[i]]&cTchar != 0 {
		i++
	}
	if i == 0 || i == n || line[i] != ' ' {
		return rl, badRequest("malformed request line")
	}
	rl.method = span{0, i}

	t0 := i + 1
	q, h := -1, -1 // first '?' and first '#'
	j := t0
	for ; j < n && chars[line[j]]&cTarget != 0; j++ {
		switch line[j] {
		case '?':
			if q < 0 {
				q = j
			}
		case '#':
			if h < 0 {
				h = j
			}
		}
	}
	if j == t0 || j == n || line[j] != ' ' {
		if j < n && line[j] != ' ' {
			return rl, badRequest("invalid character in request target")
		}
		return rl, badRequest("malformed request line")
	}
	te := j
	rl.target = span{t0, te}
	if h < 0 {
		h = te
	}
	if q < 0 || q > h {
		q = h
	}

	switch v := line[te+1:]; {
	case equal(v, "HTTP/1.1"):
		rl.minor = 1
	case equal(v, "HTTP/1.0"):
		rl.minor = 0
	case len(v) == 8 && equal(v[:5], "HTTP/") && isDigit(v[5]) && v[6] == '.' && isDigit(v[7]):
		// A well-formed HTTP-version (RFC 9112 §2.3) that we do not speak.
		return rl, &Error{Status: 505, Reason: "HTTP version not supported"}
	default: // including "HTTP/1.10" and a stray space
		return rl, badRequest("malformed HTTP version")
	}

	if i < 3 || i > 20 {
		return rl, badRequest("invalid method")
	}
	for k := 0; k < i; k++ {
		if chars[line[k]]&cMethod == 0 {
			return rl, badRequest("invalid method")
		}
	}
	method := line[:i]

	switch {
	case equal(method, "CONNECT"):
		// authority-form, and only it (RFC 9112 §3.2.3): host ":" port.
		if !validHostPort(line[t0:te], true, true) {
			return rl, badRequest("CONNECT needs an authority-form target")
		}
		rl.host = rl.target
		rl.path = span{t0, t0}
	case line[t0] == '/':
		rl.path = span{t0, q}
	case te-t0 == 1 && line[t0] == '*':
		if !equal(method, "OPTIONS") {
			return rl, badRequest("asterisk-form target outside OPTIONS")
		}
		rl.path = rl.target
	default:
		// absolute-form: only http and https, an authority with a host and without userinfo
		// (RFC 9110 §4.2.4 asks recipients to treat userinfo as an error).
		k := t0
		for k < te && line[k] != ':' {
			k++
		}
		scheme := line[t0:k]
		if k+3 > te || !equal(line[k:k+3], "://") || !ascii.EqualFold(scheme, "http") && !ascii.EqualFold(scheme, "https") {
			return rl, badRequest("invalid request target")
		}
		a := k + 3
		b := a
		for b < q && line[b] != '/' {
			b++
		}
		if !validHostPort(line[a:b], true, false) {
			return rl, badRequest("invalid authority in request target")
		}
		rl.host = span{a, b}
		rl.path = span{b, q}
		if b == q {
			rl.pathConst = "/"
			if equal(method, "OPTIONS") {
				rl.pathConst = "*" // RFC 9112 §3.2.4
			}
		}
	}
	if q < h {
		rl.query = span{q + 1, h}
	} else {
		rl.query = span{h, h}
	}
	return rl, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// equal reports whether s holds exactly the bytes of lit.
func equal[S string | []byte](s S, lit string) bool {
	if len(s) != len(lit) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != lit[i] {
			return false
		}
	}
	return true
}

// validHostPort checks uri-host [":" port] (RFC 3986 §3.2.2, RFC 9110 §7.2). An IP-literal
// holds only hex digits, ':' and '.'; a reg-name holds unreserved and sub-delims characters
// and valid pct-encodings; a port is at most five digits. needHost refuses an empty host and
// needPort a missing or empty port. An empty string is a valid Host value.
func validHostPort[S string | []byte](s S, needHost, needPort bool) bool {
	n := len(s)
	port, hasPort := n, false // port starts at s[port:]
	if n > 0 && s[0] == '[' {
		end := 1
		for end < n && s[end] != ']' {
			if c := s[end]; chars[c]&cHex == 0 && c != ':' && c != '.' {
				return false
			}
			end++
		}
		if end == n || end < 2 {
			return false
		}
		switch {
		case end+1 == n:
		case s[end+1] == ':':
			port, hasPort = end+2, true
		default:
			return false
		}
	} else {
		i := 0
		for ; i < n && s[i] != ':'; i++ {
			c := s[i]
			if chars[c]&cRegName == 0 {
				return false
			}
			if c == '%' {
				if i+2 >= n || chars[s[i+1]]&cHex == 0 || chars[s[i+2]]&cHex == 0 {
					return false
				}
				i += 2
			}
		}
		if needHost && i == 0 {
			return false
		}
		if i < n {
			port, hasPort = i+1, true
		}
	}
	if n-port > 5 || needPort && (!hasPort || port == n) {
		return false
	}
	for i := port; i < n; i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// parseContentLength parses 1*DIGIT into a non-negative int64.
func parseContentLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) {
			return 0, false
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, false // overflow
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// checkTransferEncoding accepts a Transfer-Encoding value that is exactly "chunked" (any case,
// OWS allowed). A list whose final coding is not chunked, or that names chunked twice, cannot
// be framed (RFC 9112 §6.3) and gets 400; a list of valid codings ending in a single chunked
// but with other codings before it (gzip, identity...) gets 501, since we decode none of them.
// Empty list elements and coding parameters are refused.
func checkTransferEncoding(v string) error {
	chunked, others := 0, false
	var last string
	for rest := v; ; {
		elem, tail, more := strings.Cut(rest, ",")
		elem = trimOWS(elem)
		if !isToken(elem) {
			return badRequest("invalid Transfer-Encoding")
		}
		if ascii.EqualFold(elem, "chunked") {
			chunked++
		} else {
			others = true
		}
		last = elem
		if !more {
			break
		}
		rest = tail
	}
	if !ascii.EqualFold(last, "chunked") || chunked > 1 {
		return badRequest("chunked must be the final and only framing coding")
	}
	if others {
		return &Error{Status: 501, Reason: "unsupported transfer coding"}
	}
	return nil
}
