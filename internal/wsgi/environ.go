package wsgi

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"gowsgi/internal/http1"
)

// ConnInfo describes the connection a request arrived on.
type ConnInfo struct {
	// LocalHost and LocalPort are the listener address, split as net.SplitHostPort does (an IPv6
	// literal has no brackets). For a unix socket LocalHost is the socket path and LocalPort is
	// empty. They supply SERVER_NAME and SERVER_PORT when the request has no Host.
	LocalHost, LocalPort string
	// RemoteHost and RemotePort are the peer address, split the same way. They are ignored for
	// unix sockets.
	RemoteHost, RemotePort string
	// Scheme is "http" or "https"; empty means "http".
	Scheme string
	// Unix reports that the request came over a unix socket.
	Unix bool
}

// Options are the environ settings from the server config.
type Options struct {
	// ScriptName is the SCRIPT_NAME prefix the application is mounted at, such as "/app"
	// (gunicorn takes it from the SCRIPT_NAME environment variable). Trailing slashes are
	// ignored; "" (the default) mounts the application at the root.
	ScriptName string
}

// Precomputed key prefixes: the u16 little-endian length followed by the key.
var (
	keyRequestMethod  = envKey("REQUEST_METHOD")
	keyScriptName     = envKey("SCRIPT_NAME")
	keyPathInfo       = envKey("PATH_INFO")
	keyQueryString    = envKey("QUERY_STRING")
	keyRawURI         = envKey("RAW_URI")
	keyRequestURI     = envKey("REQUEST_URI")
	keyServerProtocol = envKey("SERVER_PROTOCOL")
	keyServerName     = envKey("SERVER_NAME")
	keyServerPort     = envKey("SERVER_PORT")
	keyRemoteAddr     = envKey("REMOTE_ADDR")
	keyRemotePort     = envKey("REMOTE_PORT")
	keyContentType    = envKey("CONTENT_TYPE")
	keyContentLength  = envKey("CONTENT_LENGTH")
	keyHTTPHost       = envKey("HTTP_HOST")
	keyURLScheme      = envKey("wsgi.url_scheme")
)

func envKey(k string) string {
	return string([]byte{byte(len(k)), byte(len(k) >> 8)}) + k
}

// headerKeyByte maps a header-name byte to its byte in the HTTP_ key: letters are upper-cased,
// digits kept and '-' becomes '_'. Every other byte maps to 0, which drops the header.
var headerKeyByte = func() (t [256]byte) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c)
		t[c+'a'-'A'] = byte(c)
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	t['-'] = '_'
	return t
}()

const (
	maxKeyLen   = 0xFFFF
	maxValueLen = 0xFFFFFFFF
)

var noConn ConnInfo

// maxTracked is how many headers AppendEnviron tracks on the stack; more allocate (gunicorn's
// default --limit-request-fields is 100).
const maxTracked = 128

// fewHeaders is the header count up to which names are compared directly (at most 28 pairs).
const fewHeaders = 8

// hashSeed makes header fingerprints unpredictable, so a client cannot craft colliding names.
var hashSeed = rand.Uint64()

// AppendEnviron appends the packed WSGI environ of req to dst and returns the extended buffer.
//
// The packed format, which the worker decodes in C, is a sequence of entries, each
//
//	u16 little-endian key length, key bytes, u32 little-endian value length, value bytes
//
// until the end of the buffer. Keys are ASCII and appear at most once. Values are raw bytes that
// the worker decodes as latin-1, one character per byte (PEP 3333 native strings).
//
// The entries are:
//
//   - REQUEST_METHOD, SERVER_PROTOCOL (req.Proto), QUERY_STRING (raw, "" when absent), and
//     RAW_URI and REQUEST_URI (both the raw request-target).
//   - PATH_INFO: req.Path with every valid %XX decoded to its raw byte (so %2F becomes '/' and
//     %E9 the latin-1 'é'); '%' not followed by two hex digits is kept literally and '+' is not
//     decoded. SCRIPT_NAME: when opt.ScriptName (less trailing slashes) is a prefix of the decoded
//     path ending at a segment boundary, it is SCRIPT_NAME and is stripped from PATH_INFO;
//     otherwise SCRIPT_NAME is "" and PATH_INFO is the whole path, so SCRIPT_NAME+PATH_INFO is
//     always the decoded path. For an asterisk-form target (OPTIONS *) PATH_INFO is "", since
//     PEP 3333 (and wsgiref.validate) wants it empty or starting with '/'; RAW_URI keeps "*".
//   - SERVER_NAME and SERVER_PORT from req.Host, split at the port colon (an IPv6 literal keeps
//     its brackets, as RFC 3875 spells SERVER_NAME); without a port, or with an empty one, the
//     port is 80 for http and 443 for https. Without a Host they come from ci.LocalHost (IPv6
//     bracketed; the socket path for unix sockets) and ci.LocalPort (or the scheme default).
//   - REMOTE_ADDR and REMOTE_PORT from ci. For a unix socket, as gunicorn does, REMOTE_ADDR is
//     "" and REMOTE_PORT is omitted; REMOTE_PORT is also omitted when ci.RemotePort is empty.
//   - CONTENT_TYPE from the Content-Type header, when sent. CONTENT_LENGTH, the decimal
//     req.ContentLength, only when a Content-Length header was sent and the body is not chunked.
//     Neither ever appears as HTTP_CONTENT_TYPE or HTTP_CONTENT_LENGTH.
//   - HTTP_HOST from req.Host (the authority of an absolute-form target overrides the Host
//     header, per RFC 9112), when the request has a Host header or an authority.
//   - HTTP_<NAME> for every other header, NAME upper-cased with '-' changed to '_'. A header
//     whose name holds anything but ASCII letters, digits and '-' is dropped, so X_Forwarded_For
//     cannot spoof X-Forwarded-For (gunicorn #2799) and every key stays [A-Z0-9_]. Repeated
//     headers (names compared case-insensitively) are joined in wire order with "," and no
//     space, except Cookie, which is joined with "; ".
//   - wsgi.url_scheme: ci.Scheme, or "http" when empty.
//
// A nil ci or opt is treated as the zero value. AppendEnviron writes each entry once, straight
// into dst, and does not allocate when dst has room and the request has at most 128 headers,
// repeated headers included. Finding repeats costs integer compares plus one full name
// comparison per actual repeat, so crafted names cannot make it quadratic in bytes.
func AppendEnviron(dst []byte, req *http1.Request, ci *ConnInfo, opt *Options) []byte {
	if ci == nil {
		ci = &noConn
	}
	scheme := ci.Scheme
	if scheme == "" {
		scheme = "http"
	}
	var scriptName string
	if opt != nil {
		scriptName = strings.TrimRight(opt.ScriptName, "/")
	}

	b := appendPair(dst, keyRequestMethod, req.Method)

	// PATH_INFO: decode straight into b, strip SCRIPT_NAME in place, then patch the length.
	b = append(b, keyPathInfo...)
	lenAt := len(b)
	b = append(b, 0, 0, 0, 0)
	start := len(b)
	if req.Path != "*" { // OPTIONS *: PATH_INFO stays empty, as PEP 3333 needs "" or "/..."
		b = appendUnescaped(b, req.Path)
	}
	if scriptName != "" {
		dec := b[start:]
		n := len(scriptName)
		if len(dec) >= n && string(dec[:n]) == scriptName && (len(dec) == n || dec[n] == '/') {
			b = b[:start+copy(dec, dec[n:])]
		} else {
			scriptName = ""
		}
	}
	putU32(b[lenAt:], len(b)-start)
	b = appendPair(b, keyScriptName, scriptName)

	b = appendPair(b, keyQueryString, req.RawQuery)
	b = appendPair(b, keyRawURI, req.Target)
	b = appendPair(b, keyRequestURI, req.Target)
	b = appendPair(b, keyServerProtocol, req.Proto)

	// SERVER_NAME, SERVER_PORT.
	if req.Host != "" {
		name, port := splitHostPort(req.Host)
		b = appendPair(b, keyServerName, name)
		b = appendPair(b, keyServerPort, orDefaultPort(port, scheme))
	} else {
		name := ci.LocalHost
		if !ci.Unix && name != "" && name[0] != '[' && strings.IndexByte(name, ':') >= 0 {
			b = append(b, keyServerName...)
			b = appendU32(b, len(name)+2)
			b = append(b, '[')
			b = append(b, name...)
			b = append(b, ']')
		} else {
			b = appendPair(b, keyServerName, name)
		}
		b = appendPair(b, keyServerPort, orDefaultPort(ci.LocalPort, scheme))
	}

	// REMOTE_ADDR, REMOTE_PORT.
	if ci.Unix {
		b = appendPair(b, keyRemoteAddr, "")
	} else {
		b = appendPair(b, keyRemoteAddr, ci.RemoteHost)
		if ci.RemotePort != "" {
			b = appendPair(b, keyRemotePort, ci.RemotePort)
		}
	}

	// Headers. Each name's fingerprint (a seeded hash of its case-folded bytes) is computed
	// once, so finding repeats costs integer compares and a full comparison only on a
	// fingerprint match; crafted names sharing long prefixes cannot make it quadratic in bytes.
	// The first header of a name chains its repeats through link: link[i] is the next index
	// (0 for none) for a first header, and -1-next for a repeat, which the loop then skips.
	hs := req.Headers
	var fpBuf [maxTracked]uint32
	var linkBuf [maxTracked]int32
	fp, link := fpBuf[:], linkBuf[:]
	if len(hs) > maxTracked {
		fp, link = make([]uint32, len(hs)), make([]int32, len(hs))
	}
	fp, link = fp[:len(hs)], link[:len(hs)]
	if len(hs) <= fewHeaders {
		// Few enough that comparing names directly is bounded: the length is the fingerprint.
		for i := range hs {
			fp[i] = uint32(len(hs[i].Name))
		}
	} else {
		for i := range hs {
			fp[i] = fingerprint(hs[i].Name)
		}
	}
	hasHost, hasContentLength := false, false
headers:
	for i := range hs {
		if link[i] < 0 {
			continue
		}
		name := hs[i].Name
		sep := ","
		keyAt := len(b)
		switch {
		case len(name) == 4 && equalFold(name, "host"):
			hasHost = true
			continue
		case len(name) == 14 && equalFold(name, "content-length"):
			hasContentLength = true
			continue
		case len(name) == 12 && equalFold(name, "content-type"):
			b = append(b, keyContentType...)
		default:
			if name == "" || len(name) > maxKeyLen-len("HTTP_") {
				continue
			}
			if len(name) == 6 && equalFold(name, "cookie") {
				sep = "; "
			}
			kl := len("HTTP_") + len(name)
			b = append(b, byte(kl), byte(kl>>8), 'H', 'T', 'T', 'P', '_')
			n := len(b)
			b = slices.Grow(b, len(name))[:n+len(name)]
			if !headerKey(b[n:], name) {
				b = b[:keyAt]
				continue headers
			}
		}

		// Value, joined with the later headers of the same name.
		total, prev, f := len(hs[i].Value), i, fp[i]
		for j := i + 1; j < len(hs); j++ {
			if fp[j] == f && link[j] >= 0 && equalFold(hs[j].Name, name) {
				if prev == i {
					link[i] = int32(j)
				} else {
					link[prev] = -1 - int32(j)
				}
				link[j], prev = -1, j
				total += len(sep) + len(hs[j].Value)
			}
		}
		if uint64(total) > maxValueLen {
			b = b[:keyAt]
			continue
		}
		b = appendU32(b, total)
		b = append(b, hs[i].Value...)
		for j := link[i]; j > 0; j = -1 - link[j] {
			b = append(b, sep...)
			b = append(b, hs[j].Value...)
		}
	}

	if hasHost || req.Host != "" {
		b = appendPair(b, keyHTTPHost, req.Host)
	}
	if hasContentLength && !req.Chunked && req.ContentLength >= 0 {
		b = append(b, keyContentLength...)
		lenAt := len(b)
		b = append(b, 0, 0, 0, 0)
		b = strconv.AppendInt(b, req.ContentLength, 10)
		putU32(b[lenAt:], len(b)-lenAt-4)
	}
	return appendPair(b, keyURLScheme, scheme)
}

// fingerprint hashes the ASCII-case-folded name with the per-process seed. Folding sets bit
// 0x20 of every byte, which is exact for the letters, digits and '-' of kept names; other
// names may share a fingerprint with a different name, which only costs a full comparison.
func fingerprint(s string) uint32 {
	const prime = 0x9E3779B97F4A7C15
	h := hashSeed ^ uint64(len(s))
	if len(s) < 8 {
		var w uint64
		for k := range len(s) {
			w |= uint64(s[k]) << (8 * k)
		}
		return uint32(((h ^ (w | fold8)) * prime) >> 32)
	}
	// Whole words, the last one overlapping the one before when len(s) is not a multiple of 8.
	for t := s; ; t = t[8:] {
		if len(t) < 8 {
			t = s[len(s)-8:]
		}
		h = bits.RotateLeft64((h^(load64(t)|fold8))*prime, 29)
		if len(t) <= 8 {
			break
		}
	}
	return uint32((h * prime) >> 32)
}

const fold8 = 0x2020202020202020

func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// headerKey writes the HTTP_ key bytes of name into out (len(out) == len(name)): letters
// upper-cased, '-' changed to '_'. It reports false if name has any other byte than ASCII
// letters, digits and '-'. (A table lookup per byte measured faster than eight-byte SWAR for
// typical header names.)
func headerKey(out []byte, name string) bool {
	out = out[:len(name)]
	for k := range len(name) {
		c := headerKeyByte[name[k]]
		if c == 0 {
			return false
		}
		out[k] = c
	}
	return true
}

// splitHostPort splits a Host value into SERVER_NAME and port. An IPv6 literal keeps its
// brackets. A bare name with more than one colon is taken whole as the name.
func splitHostPort(host string) (name, port string) {
	if host[0] == '[' {
		i := strings.IndexByte(host, ']')
		if i < 0 {
			return host, ""
		}
		name, rest := host[:i+1], host[i+1:]
		if len(rest) > 0 && rest[0] == ':' {
			port = rest[1:]
		}
		return name, port
	}
	i := strings.IndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i+1:], ':') >= 0 {
		return host, ""
	}
	return host[:i], host[i+1:]
}

func orDefaultPort(port, scheme string) string {
	if port != "" {
		return port
	}
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// appendUnescaped appends s with every %XX decoded to its byte; other '%' are kept.
func appendUnescaped(b []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			return append(b, s...)
		}
		b = append(b, s[:i]...)
		if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			s = s[i+3:]
		} else {
			b = append(b, '%')
			s = s[i+1:]
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// equalFold reports whether a and b are equal under ASCII case folding.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if lx := x | 0x20; lx != y|0x20 || lx < 'a' || lx > 'z' {
			return false
		}
	}
	return true
}

// appendPair appends an entry whose key prefix (length and key) is precomputed.
func appendPair(b []byte, key, value string) []byte {
	b = append(b, key...)
	b = appendU32(b, len(value))
	return append(b, value...)
}

func appendU32(b []byte, n int) []byte {
	return append(b, byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
}

func putU32(b []byte, n int) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
}

// EachEnviron calls fn for every entry of a packed environ, in order. The slices alias b and
// are only valid during the call. It returns an error, after calling fn for the complete entries
// before it, if b ends inside an entry.
func EachEnviron(b []byte, fn func(k, v []byte)) error {
	off := 0
	for off < len(b) {
		if len(b)-off < 2 {
			return fmt.Errorf("packed environ truncated at offset %d: want a 2-byte key length, have %d bytes", off, len(b)-off)
		}
		kl := int(b[off]) | int(b[off+1])<<8
		if len(b)-off-2 < kl+4 {
			return fmt.Errorf("packed environ truncated at offset %d: want a %d-byte key and a value length, have %d bytes", off, kl, len(b)-off-2)
		}
		k := b[off+2 : off+2+kl]
		off += 2 + kl
		vl := uint64(b[off]) | uint64(b[off+1])<<8 | uint64(b[off+2])<<16 | uint64(b[off+3])<<24
		off += 4
		if uint64(len(b)-off) < vl {
			return fmt.Errorf("packed environ truncated at offset %d: value of %q wants %d bytes, have %d", off, k, vl, len(b)-off)
		}
		v := b[off : off+int(vl)]
		off += int(vl)
		fn(k, v)
	}
	return nil
}

// DecodeEnviron decodes a packed environ into a map, for tests and debugging. Values are
// returned as their raw bytes (the worker would decode them as latin-1). It returns an error if
// b is truncated or a key appears twice.
func DecodeEnviron(b []byte) (map[string]string, error) {
	m := make(map[string]string)
	var dup string
	err := EachEnviron(b, func(k, v []byte) {
		if _, ok := m[string(k)]; ok && dup == "" {
			dup = string(k)
		}
		m[string(k)] = string(v)
	})
	if err != nil {
		return nil, err
	}
	if dup != "" {
		return nil, fmt.Errorf("packed environ has key %q twice", dup)
	}
	return m, nil
}
