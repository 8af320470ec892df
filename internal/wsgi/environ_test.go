package wsgi

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gowsgi/internal/http1"
)

// newRequest builds a request the way http1 would for method, target and name/value header
// pairs: Path and RawQuery split from the target, Host from the first Host header, and the body
// framing from Content-Length and Transfer-Encoding.
func newRequest(method, target string, kv ...string) *http1.Request {
	req := &http1.Request{Method: method, Target: target, Proto: "HTTP/1.1", Minor: 1}
	req.Path, req.RawQuery, _ = strings.Cut(target, "?")
	hostSeen := false
	for i := 0; i+1 < len(kv); i += 2 {
		h := http1.Header{Name: kv[i], Value: kv[i+1]}
		req.Headers = append(req.Headers, h)
		switch strings.ToLower(h.Name) {
		case "host":
			if !hostSeen {
				req.Host, hostSeen = h.Value, true
			}
		case "content-length":
			req.ContentLength, _ = strconv.ParseInt(h.Value, 10, 64)
		case "transfer-encoding":
			if strings.EqualFold(h.Value, "chunked") {
				req.Chunked, req.ContentLength = true, -1
			}
		}
	}
	return req
}

var tcpConn = &ConnInfo{
	LocalHost: "10.0.0.1", LocalPort: "8000",
	RemoteHost: "192.0.2.7", RemotePort: "51234",
	Scheme: "http",
}

func environ(t testing.TB, req *http1.Request, ci *ConnInfo, opt *Options) map[string]string {
	t.Helper()
	m, err := DecodeEnviron(AppendEnviron(nil, req, ci, opt))
	if err != nil {
		t.Fatalf("DecodeEnviron: %v", err)
	}
	return m
}

func TestEnvironFull(t *testing.T) {
	req := newRequest("POST", "/a%20b/c?x=1&y=%20",
		"Host", "example.com:8080",
		"User-Agent", "curl/8",
		"Content-Type", "application/json",
		"Content-Length", "17",
		"X-Forwarded-For", "1.1.1.1",
		"x-forwarded-for", "2.2.2.2",
	)
	got := environ(t, req, tcpConn, nil)
	want := map[string]string{
		"REQUEST_METHOD":       "POST",
		"SCRIPT_NAME":          "",
		"PATH_INFO":            "/a b/c",
		"QUERY_STRING":         "x=1&y=%20",
		"RAW_URI":              "/a%20b/c?x=1&y=%20",
		"REQUEST_URI":          "/a%20b/c?x=1&y=%20",
		"SERVER_PROTOCOL":      "HTTP/1.1",
		"SERVER_NAME":          "example.com",
		"SERVER_PORT":          "8080",
		"REMOTE_ADDR":          "192.0.2.7",
		"REMOTE_PORT":          "51234",
		"CONTENT_TYPE":         "application/json",
		"CONTENT_LENGTH":       "17",
		"HTTP_HOST":            "example.com:8080",
		"HTTP_USER_AGENT":      "curl/8",
		"HTTP_X_FORWARDED_FOR": "1.1.1.1,2.2.2.2",
		"wsgi.url_scheme":      "http",
	}
	if !maps.Equal(got, want) {
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if w, ok := want[k]; !ok || w != got[k] {
				t.Errorf("%s: got %q, want %q (present %v)", k, got[k], w, ok)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if _, ok := got[k]; !ok {
				t.Errorf("%s: missing, want %q", k, want[k])
			}
		}
	}
}

func TestEnviron(t *testing.T) {
	const absent = "\x00absent"
	for _, tc := range []struct {
		name string
		req  *http1.Request
		ci   *ConnInfo
		opt  *Options
		want map[string]string // absent: the key must not be there
	}{
		{
			name: "underscore header dropped",
			req:  newRequest("GET", "/", "Host", "h", "X_Forwarded_For", "6.6.6.6", "X-Forwarded-For", "1.1.1.1"),
			want: map[string]string{"HTTP_X_FORWARDED_FOR": "1.1.1.1"},
		},
		{
			name: "underscore-only header dropped",
			req:  newRequest("GET", "/", "Host", "h", "X_Real_IP", "6.6.6.6"),
			want: map[string]string{"HTTP_X_REAL_IP": absent},
		},
		{
			name: "header with other token characters dropped",
			req:  newRequest("GET", "/", "Host", "h", "X.Foo", "1", "X~Foo", "2", "X!", "3", "X-Ok9", "4"),
			want: map[string]string{"HTTP_X.FOO": absent, "HTTP_X~FOO": absent, "HTTP_X!": absent, "HTTP_X_OK9": "4"},
		},
		{
			name: "cookie join",
			req:  newRequest("GET", "/", "Host", "h", "Cookie", "a=1", "Accept", "*/*", "cookie", "b=2", "COOKIE", "c=3"),
			want: map[string]string{"HTTP_COOKIE": "a=1; b=2; c=3", "HTTP_ACCEPT": "*/*"},
		},
		{
			name: "repeated join in wire order, case-insensitive",
			req:  newRequest("GET", "/", "Host", "h", "Accept", "a", "X-A", "1", "accept", "b", "ACCEPT", "", "Accept", "c"),
			want: map[string]string{"HTTP_ACCEPT": "a,b,,c", "HTTP_X_A": "1"},
		},
		{
			name: "single header upper-cased",
			req:  newRequest("GET", "/", "Host", "h", "x-rEQuest-id", "Abc"),
			want: map[string]string{"HTTP_X_REQUEST_ID": "Abc"},
		},
		{
			name: "latin-1 header value bytes kept",
			req:  newRequest("GET", "/", "Host", "h", "X-Name", "caf\xe9"),
			want: map[string]string{"HTTP_X_NAME": "caf\xe9"},
		},
		{
			name: "percent-decoded path",
			req:  newRequest("GET", "/a%2Fb/%E9t%c3%a9/x+y%20z"),
			want: map[string]string{"PATH_INFO": "/a/b/\xe9t\xc3\xa9/x+y z", "RAW_URI": "/a%2Fb/%E9t%c3%a9/x+y%20z"},
		},
		{
			name: "invalid percent kept",
			req:  newRequest("GET", "/%zz/%4/%/%%41%"),
			want: map[string]string{"PATH_INFO": "/%zz/%4/%/%A%"},
		},
		{
			name: "percent-encoded NUL decoded",
			req:  newRequest("GET", "/a%00b"),
			want: map[string]string{"PATH_INFO": "/a\x00b"},
		},
		{
			name: "query kept raw",
			req:  newRequest("GET", "/p?q=a+b%20c&q=%zz"),
			want: map[string]string{"QUERY_STRING": "q=a+b%20c&q=%zz", "PATH_INFO": "/p", "REQUEST_URI": "/p?q=a+b%20c&q=%zz"},
		},
		{
			name: "empty query",
			req:  newRequest("GET", "/p"),
			want: map[string]string{"QUERY_STRING": ""},
		},
		{
			name: "asterisk-form",
			req:  newRequest("OPTIONS", "*", "Host", "h"),
			want: map[string]string{"PATH_INFO": "", "REQUEST_METHOD": "OPTIONS", "RAW_URI": "*"},
		},
		{
			name: "script name stripped",
			req:  newRequest("GET", "/app/x/y?z"),
			opt:  &Options{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/x/y"},
		},
		{
			name: "script name trailing slash ignored",
			req:  newRequest("GET", "/app/x"),
			opt:  &Options{ScriptName: "/app/"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/x"},
		},
		{
			name: "script name equals path",
			req:  newRequest("GET", "/app"),
			opt:  &Options{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": ""},
		},
		{
			name: "script name not at segment boundary",
			req:  newRequest("GET", "/application/x"),
			opt:  &Options{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/application/x"},
		},
		{
			name: "script name not a prefix",
			req:  newRequest("GET", "/other"),
			opt:  &Options{ScriptName: "/app"},
			want: map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/other"},
		},
		{
			name: "script name matched on decoded path",
			req:  newRequest("GET", "/my%20app%2Fx"),
			opt:  &Options{ScriptName: "/my app"},
			want: map[string]string{"SCRIPT_NAME": "/my app", "PATH_INFO": "/x"},
		},
		{
			name: "script name root",
			req:  newRequest("GET", "/x"),
			opt:  &Options{ScriptName: "/"},
			want: map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/x"},
		},
		{
			name: "host with port",
			req:  newRequest("GET", "/", "Host", "example.com:8443"),
			ci:   &ConnInfo{Scheme: "https"},
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "8443", "HTTP_HOST": "example.com:8443"},
		},
		{
			name: "host without port http",
			req:  newRequest("GET", "/", "Host", "example.com"),
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "80"},
		},
		{
			name: "host without port https",
			req:  newRequest("GET", "/", "Host", "example.com"),
			ci:   &ConnInfo{Scheme: "https", LocalPort: "8443"},
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "443", "wsgi.url_scheme": "https"},
		},
		{
			name: "host with empty port",
			req:  newRequest("GET", "/", "Host", "example.com:"),
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "80"},
		},
		{
			name: "ipv6 host with port",
			req:  newRequest("GET", "/", "Host", "[::1]:8000"),
			want: map[string]string{"SERVER_NAME": "[::1]", "SERVER_PORT": "8000", "HTTP_HOST": "[::1]:8000"},
		},
		{
			name: "ipv6 host without port",
			req:  newRequest("GET", "/", "Host", "[2001:db8::1]"),
			ci:   &ConnInfo{Scheme: "https"},
			want: map[string]string{"SERVER_NAME": "[2001:db8::1]", "SERVER_PORT": "443"},
		},
		{
			name: "no host: from listener",
			req:  newRequest("GET", "/"),
			want: map[string]string{"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": absent},
		},
		{
			name: "no host: ipv6 listener bracketed",
			req:  newRequest("GET", "/"),
			ci:   &ConnInfo{LocalHost: "::1", LocalPort: "9000", RemoteHost: "::1", RemotePort: "4242"},
			want: map[string]string{"SERVER_NAME": "[::1]", "SERVER_PORT": "9000", "REMOTE_ADDR": "::1", "REMOTE_PORT": "4242"},
		},
		{
			name: "empty host header",
			req:  newRequest("GET", "/", "Host", ""),
			want: map[string]string{"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": ""},
		},
		{
			name: "absolute-form authority overrides host header",
			req: func() *http1.Request {
				r := newRequest("GET", "http://real.example/x", "Host", "fake.example")
				r.Path, r.Host = "/x", "real.example"
				return r
			}(),
			want: map[string]string{"HTTP_HOST": "real.example", "SERVER_NAME": "real.example", "PATH_INFO": "/x", "RAW_URI": "http://real.example/x"},
		},
		{
			name: "unix socket",
			req:  newRequest("GET", "/"),
			ci:   &ConnInfo{LocalHost: "/run/app.sock", Unix: true, RemoteHost: "ignored", RemotePort: "1"},
			want: map[string]string{"SERVER_NAME": "/run/app.sock", "SERVER_PORT": "80", "REMOTE_ADDR": "", "REMOTE_PORT": absent},
		},
		{
			name: "unix socket with host",
			req:  newRequest("GET", "/", "Host", "example.com"),
			ci:   &ConnInfo{LocalHost: "/run/app.sock", Unix: true, Scheme: "https"},
			want: map[string]string{"SERVER_NAME": "example.com", "SERVER_PORT": "443", "REMOTE_ADDR": ""},
		},
		{
			name: "nil conn and options",
			req:  newRequest("GET", "/"),
			ci:   &ConnInfo{},
			want: map[string]string{"SERVER_NAME": "", "SERVER_PORT": "80", "REMOTE_ADDR": "", "REMOTE_PORT": absent, "wsgi.url_scheme": "http"},
		},
		{
			name: "content headers mapped",
			req:  newRequest("PUT", "/", "Host", "h", "content-type", "text/plain", "CONTENT-LENGTH", "5"),
			want: map[string]string{"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "5", "HTTP_CONTENT_TYPE": absent, "HTTP_CONTENT_LENGTH": absent},
		},
		{
			name: "zero content length",
			req:  newRequest("POST", "/", "Host", "h", "Content-Length", "0"),
			want: map[string]string{"CONTENT_LENGTH": "0", "CONTENT_TYPE": absent},
		},
		{
			name: "no content headers",
			req:  newRequest("GET", "/", "Host", "h"),
			want: map[string]string{"CONTENT_LENGTH": absent, "CONTENT_TYPE": absent},
		},
		{
			name: "repeated content-length uses parsed length",
			req:  newRequest("POST", "/", "Host", "h", "Content-Length", "7", "Content-Length", "7"),
			want: map[string]string{"CONTENT_LENGTH": "7"},
		},
		{
			name: "chunked has no content length",
			req:  newRequest("POST", "/", "Host", "h", "Content-Type", "a/b", "Transfer-Encoding", "chunked"),
			want: map[string]string{"CONTENT_LENGTH": absent, "HTTP_CONTENT_LENGTH": absent, "CONTENT_TYPE": "a/b", "HTTP_TRANSFER_ENCODING": "chunked"},
		},
		{
			name: "content-type with underscore dropped",
			req:  newRequest("POST", "/", "Host", "h", "Content_Type", "evil"),
			want: map[string]string{"CONTENT_TYPE": absent, "HTTP_CONTENT_TYPE": absent},
		},
		{
			name: "url scheme",
			req:  newRequest("GET", "/", "Host", "h"),
			ci:   &ConnInfo{Scheme: "https"},
			want: map[string]string{"wsgi.url_scheme": "https"},
		},
		{
			name: "http/1.0",
			req: func() *http1.Request {
				r := newRequest("GET", "/")
				r.Proto, r.Minor = "HTTP/1.0", 0
				return r
			}(),
			want: map[string]string{"SERVER_PROTOCOL": "HTTP/1.0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ci := tc.ci
			if ci == nil {
				ci = tcpConn
			}
			got := environ(t, tc.req, ci, tc.opt)
			for _, k := range slices.Sorted(maps.Keys(tc.want)) {
				want := tc.want[k]
				g, ok := got[k]
				switch {
				case want == absent && ok:
					t.Errorf("%s: got %q, want absent", k, g)
				case want != absent && !ok:
					t.Errorf("%s: got absent, want %q", k, want)
				case want != absent && g != want:
					t.Errorf("%s: got %q, want %q", k, g, want)
				}
			}
		})
	}
}

func TestEnvironNilConnAndOptions(t *testing.T) {
	got := environ(t, newRequest("GET", "/x", "Host", "h"), nil, nil)
	if got["wsgi.url_scheme"] != "http" || got["SCRIPT_NAME"] != "" || got["PATH_INFO"] != "/x" {
		t.Errorf("got %q", got)
	}
}

func TestEnvironAppendsToDst(t *testing.T) {
	prefix := []byte("prefix")
	b := AppendEnviron(append([]byte(nil), prefix...), newRequest("GET", "/"), tcpConn, nil)
	if string(b[:len(prefix)]) != string(prefix) {
		t.Fatalf("got prefix %q, want %q", b[:len(prefix)], prefix)
	}
	if _, err := DecodeEnviron(b[len(prefix):]); err != nil {
		t.Fatal(err)
	}
}

func TestEnvironManyRepeatedHeaders(t *testing.T) {
	// More headers than the folded bitmap covers, with repeats on both sides of it.
	var kv []string
	for i := range 300 {
		kv = append(kv, "X-H"+strconv.Itoa(i%7), strconv.Itoa(i))
	}
	got := environ(t, newRequest("GET", "/", kv...), tcpConn, nil)
	for h := range 7 {
		var vals []string
		for i := h; i < 300; i += 7 {
			vals = append(vals, strconv.Itoa(i))
		}
		k := "HTTP_X_H" + strconv.Itoa(h)
		if want := strings.Join(vals, ","); got[k] != want {
			t.Errorf("%s: got %q, want %q", k, got[k], want)
		}
	}
	kv = kv[:0]
	for i := range 300 {
		kv = append(kv, "X-U"+strconv.Itoa(i), "v")
	}
	kv = append(kv, "x-u299", "w", "X-U1", "w")
	got = environ(t, newRequest("GET", "/", kv...), tcpConn, nil)
	if got["HTTP_X_U299"] != "v,w" || got["HTTP_X_U1"] != "v,w" || got["HTTP_X_U0"] != "v" {
		t.Errorf("got %q %q %q", got["HTTP_X_U299"], got["HTTP_X_U1"], got["HTTP_X_U0"])
	}
}

func TestDecodeEnvironErrors(t *testing.T) {
	good := AppendEnviron(nil, newRequest("GET", "/", "Host", "h"), tcpConn, nil)
	for n := range len(good) {
		if _, err := DecodeEnviron(good[:n]); err == nil && n > 0 {
			// A cut exactly between entries is a valid, shorter environ.
			if err := EachEnviron(good[:n], func(k, v []byte) {}); err != nil {
				t.Errorf("cut at %d: DecodeEnviron ok but EachEnviron: %v", n, err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"one byte", "\x01"},
		{"short key", "\x05\x00abc"},
		{"missing value length", "\x01\x00a\x00\x00"},
		{"short value", "\x01\x00a\x05\x00\x00\x00abc"},
		{"huge value length", "\x01\x00a\xff\xff\xff\xffabc"},
		{"duplicate key", "\x01\x00a\x00\x00\x00\x00\x01\x00a\x00\x00\x00\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := DecodeEnviron([]byte(tc.in)); err == nil {
				t.Errorf("got %q, want error", m)
			}
		})
	}
	m, err := DecodeEnviron([]byte("\x01\x00a\x02\x00\x00\x00xy\x00\x00\x00\x00\x00\x00"))
	if err != nil || len(m) != 2 || m["a"] != "xy" || m[""] != "" {
		t.Errorf("got %q, %v; want {a: xy, \"\": \"\"}", m, err)
	}
}

// typicalGET is an 8-header browser GET.
func typicalGET() *http1.Request {
	return newRequest("GET", "/articles/2024/hello-world?page=2&sort=desc",
		"Host", "www.example.com",
		"User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
		"Accept-Language", "en-US,en;q=0.5",
		"Accept-Encoding", "gzip, deflate, br, zstd",
		"Connection", "keep-alive",
		"Cookie", "sessionid=abc123; csrftoken=xyz789",
		"Upgrade-Insecure-Requests", "1",
	)
}

func TestEnvironAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation may allocate")
	}
	repeated := newRequest("POST", "/app/api/v1/items%2Fx?q=1",
		"Host", "[::1]:8000",
		"Accept", "a", "accept", "b",
		"Cookie", "a=1", "Cookie", "b=2",
		"Content-Type", "application/json", "Content-Length", "42",
		"X_Bad", "dropped",
		"X-Request-Id", "abc", "Accept", "c",
	)
	for _, tc := range []struct {
		name string
		req  *http1.Request
		opt  *Options
	}{
		{"typical GET", typicalGET(), nil},
		{"repeated headers, script name, decoding", repeated, &Options{ScriptName: "/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, 0, 4096)
			got := testing.AllocsPerRun(1000, func() {
				buf = AppendEnviron(buf[:0], tc.req, tcpConn, tc.opt)
			})
			if want := 0.0; got != want {
				t.Errorf("got %v allocs per run, want %v", got, want)
			}
		})
	}
}

func BenchmarkAppendEnviron(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  *http1.Request
	}{
		{"typical-GET", typicalGET()},
		{"repeated-30", func() *http1.Request {
			var kv []string
			for i := range 30 {
				kv = append(kv, "X-Header-"+strconv.Itoa(i%10), "value-"+strconv.Itoa(i))
			}
			return newRequest("GET", "/a%20b?c", append([]string{"Host", "example.com"}, kv...)...)
		}()},
		{"distinct-100-long", func() *http1.Request {
			// Same-length names sharing a long prefix: the case direct comparison is slow on.
			var kv []string
			for i := range 100 {
				kv = append(kv, "X-"+strings.Repeat("a", 1000)+strconv.Itoa(100+i), "v")
			}
			return newRequest("GET", "/", kv...)
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 1<<18)
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendEnviron(buf[:0], bc.req, tcpConn, nil)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// refUnescape is an independent PATH_INFO decoder for the fuzz target.
func refUnescape(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				sb.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

func FuzzEnviron(f *testing.F) {
	f.Add("GET", "/a%2Fb?x=1", "Host: example.com:80\nCookie: a=1\ncookie: b=2\nX_Forwarded_For: 1\nX-Forwarded-For: 2", "/a", uint8(0))
	f.Add("POST", "/%E9%zz", "Content-Type: x\nContent-Length: 3\nTransfer-Encoding: chunked\nHost: [::1]:9", "", uint8(3))
	f.Add("OPTIONS", "*", "host:\nHOST: x\nx-a: 1\nX-A: 2\nx-\xe9: 3", "/", uint8(1))
	f.Add("GET", "/app/x", "A: 1\nb: 2\nA: 3\nCookie: c\nc-d: 4\nC-D: 5\ncookie: e\nX_Y: 6\nx-y: 7\nContent-Type: t\ncontent-type: u\nHost: h\na: 8", "/app/", uint8(2))
	f.Fuzz(func(t *testing.T, method, target, headers, scriptName string, flags uint8) {
		req := &http1.Request{Method: method, Target: target, Proto: "HTTP/1.1", Minor: 1}
		req.Path, req.RawQuery, _ = strings.Cut(target, "?")
		hostSeen := false
		if headers != "" {
			for line := range strings.SplitSeq(headers, "\n") {
				name, value, _ := strings.Cut(line, ":")
				value = strings.Trim(value, " \t")
				req.Headers = append(req.Headers, http1.Header{Name: name, Value: value})
				switch strings.ToLower(name) {
				case "host":
					if !hostSeen {
						req.Host, hostSeen = value, true
					}
				case "content-length":
					req.ContentLength, _ = strconv.ParseInt(value, 10, 64)
				case "transfer-encoding":
					req.Chunked = true
				}
			}
		}
		ci := &ConnInfo{LocalHost: "::1", LocalPort: "80", RemoteHost: "r", RemotePort: "1", Scheme: "http", Unix: flags&1 != 0}
		if flags&2 != 0 {
			ci.Scheme = "https"
		}
		prefix := []byte("pre")
		b := AppendEnviron(append([]byte(nil), prefix...), req, ci, &Options{ScriptName: scriptName})
		if string(b[:len(prefix)]) != string(prefix) {
			t.Fatalf("prefix clobbered: %q", b[:len(prefix)])
		}
		b = b[len(prefix):]

		// Every key appears once; HTTP_ keys are [A-Z0-9_]+.
		seen := map[string]bool{}
		err := EachEnviron(b, func(k, v []byte) {
			if seen[string(k)] {
				t.Errorf("key %q appears twice", k)
			}
			seen[string(k)] = true
			if rest, ok := strings.CutPrefix(string(k), "HTTP_"); ok {
				if rest == "" || strings.Trim(rest, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
					t.Errorf("bad key %q", k)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeEnviron(b)
		if err != nil {
			t.Fatal(err)
		}
		// Round trip: re-encoding the decoded map decodes to the same map.
		var re []byte
		for _, k := range slices.Sorted(maps.Keys(m)) {
			re = append(re, byte(len(k)), byte(len(k)>>8))
			re = append(re, k...)
			re = appendU32(re, len(m[k]))
			re = append(re, m[k]...)
		}
		if len(re) != len(b) {
			t.Errorf("re-encoded length %d, want %d", len(re), len(b))
		}
		if m2, err := DecodeEnviron(re); err != nil || !maps.Equal(m, m2) {
			t.Errorf("round trip: %v", err)
		}

		for k, want := range map[string]string{
			"REQUEST_METHOD": method, "QUERY_STRING": req.RawQuery, "RAW_URI": target,
			"REQUEST_URI": target, "wsgi.url_scheme": ci.Scheme,
		} {
			if m[k] != want {
				t.Errorf("%s: got %q, want %q", k, m[k], want)
			}
		}
		wantPath := refUnescape(req.Path)
		if req.Path == "*" {
			wantPath = "" // asterisk-form: PATH_INFO is empty
		}
		if got, want := m["SCRIPT_NAME"]+m["PATH_INFO"], wantPath; got != want {
			t.Errorf("SCRIPT_NAME+PATH_INFO: got %q, want %q", got, want)
		}
		if sn := m["SCRIPT_NAME"]; sn != "" && sn != strings.TrimRight(scriptName, "/") {
			t.Errorf("SCRIPT_NAME: got %q, want %q or empty", sn, scriptName)
		}

		// Reference model for the HTTP_ keys.
		want := map[string]string{}
		for _, h := range req.Headers {
			l := strings.ToLower(h.Name)
			if h.Name == "" || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" ||
				l == "host" || l == "content-length" {
				continue
			}
			k := "HTTP_" + strings.ReplaceAll(strings.ToUpper(l), "-", "_")
			if l == "content-type" {
				k = "CONTENT_TYPE"
			}
			if v, ok := want[k]; ok {
				sep := ","
				if l == "cookie" {
					sep = "; "
				}
				want[k] = v + sep + h.Value
			} else {
				want[k] = h.Value
			}
		}
		if hostSeen {
			want["HTTP_HOST"] = req.Host
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s: got %q, want %q", k, m[k], v)
			}
		}
		for k := range m {
			if _, ok := want[k]; strings.HasPrefix(k, "HTTP_") && !ok {
				t.Errorf("unexpected %s = %q", k, m[k])
			}
		}
		if _, ok := m["CONTENT_LENGTH"]; ok && req.Chunked {
			t.Errorf("CONTENT_LENGTH %q for a chunked request", m["CONTENT_LENGTH"])
		}
	})
}
