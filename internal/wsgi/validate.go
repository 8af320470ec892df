package wsgi

import (
	"errors"
	"fmt"
)

// ErrHopByHop is matched (with errors.Is) by the error [ValidateHeader] returns for a
// well-formed hop-by-hop header, which PEP 3333 forbids an application to set. The caller may
// fail the response or drop the header with a warning.
var ErrHopByHop = errors.New("hop-by-hop headers are not allowed in a WSGI response (PEP 3333)")

// maxEcho is how many input bytes an error message quotes at most.
const maxEcho = 64

// Byte classes for validation.
const (
	classToken = 1 << iota // RFC 9110 tchar
	classText              // HTAB, SP, VCHAR, obs-text: allowed in a reason phrase or field value
)

var byteClass = func() (t [256]uint8) {
	for c := 0x21; c <= 0x7E; c++ {
		t[c] = classText
	}
	for c := 0x80; c <= 0xFF; c++ {
		t[c] = classText
	}
	t['\t'] = classText
	t[' '] = classText
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
		t[c] |= classToken
	}
	return t
}()

// echo quotes at most maxEcho bytes of b for an error message.
func echo(b []byte) string {
	if len(b) > maxEcho {
		return fmt.Sprintf("%q...", b[:maxEcho])
	}
	return fmt.Sprintf("%q", b)
}

// ValidateStatus checks a WSGI status string such as "200 OK" and returns its code.
//
// The status must be three ASCII digits forming a code from 100 to 999, a single space, and a
// reason phrase, which may be empty, of HTAB, SP, visible ASCII and obs-text (0x80-0xFF) only:
// no CR, LF, NUL, DEL or other control characters. Errors quote at most 64 bytes of s.
func ValidateStatus(s []byte) (code int, err error) {
	if len(s) < 3 || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[2]) {
		return 0, fmt.Errorf("status %s does not start with a three-digit code", echo(s))
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("status %s: code %s is below 100", echo(s), s[:3])
	}
	if len(s) == 3 || s[3] != ' ' {
		return 0, fmt.Errorf("status %s: want a space after the three-digit code, as in \"200 OK\"", echo(s))
	}
	for _, c := range s[4:] {
		if byteClass[c]&classText == 0 {
			return 0, fmt.Errorf("invalid character 0x%02x in status %s", c, echo(s))
		}
	}
	return int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0'), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ValidateHeader checks one response header (name and value as latin-1 bytes).
//
// The name must be a non-empty RFC 9110 token. The value may hold HTAB, SP, visible ASCII and
// obs-text (0x80-0xFF), including leading and trailing whitespace, but no CR, LF, NUL, DEL or
// other control characters. A well-formed header that is hop-by-hop (Connection, Keep-Alive,
// Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Trailers as wsgiref spells it,
// Transfer-Encoding, Upgrade; any case) yields an error matching [ErrHopByHop], so the caller
// can drop it instead of failing; syntax errors are checked first and never match it. Errors
// quote at most 64 bytes of the name.
func ValidateHeader(name, value []byte) error {
	if len(name) == 0 {
		return errors.New("empty header name")
	}
	for _, c := range name {
		if byteClass[c]&classToken == 0 {
			return fmt.Errorf("invalid character 0x%02x in header name %s", c, echo(name))
		}
	}
	for _, c := range value {
		if byteClass[c]&classText == 0 {
			return fmt.Errorf("invalid character 0x%02x in header %s value", c, echo(name))
		}
	}
	if isHopByHop(name) {
		return fmt.Errorf("header %s: %w", echo(name), ErrHopByHop)
	}
	return nil
}

// isHopByHop reports whether a token is a hop-by-hop header name, case-insensitively.
func isHopByHop(name []byte) bool {
	var buf [len("proxy-authorization")]byte
	if len(name) < 2 || len(name) > len(buf) {
		return false
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(name)]) {
	case "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
		"te", "trailer", "trailers", "transfer-encoding", "upgrade":
		return true
	}
	return false
}
