package wsgi

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestValidateStatus(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		wantCode int
		wantErr  string // substring; "" means valid
	}{
		{name: "ok", in: "200 OK", wantCode: 200},
		{name: "multi-word reason", in: "404 Not Found", wantCode: 404},
		{name: "empty reason", in: "204 ", wantCode: 204},
		{name: "lowest", in: "100 Continue", wantCode: 100},
		{name: "highest", in: "999 Whatever", wantCode: 999},
		{name: "obs-text reason", in: "200 Tr\xe8s bien", wantCode: 200},
		{name: "tab and punctuation in reason", in: "418 I'm a\tteapot!~", wantCode: 418},
		{name: "trailing spaces", in: "200 OK  ", wantCode: 200},
		{name: "empty", in: "", wantErr: "three-digit code"},
		{name: "two digits", in: "20 OK", wantErr: "three-digit code"},
		{name: "letters", in: "abc OK", wantErr: "three-digit code"},
		{name: "leading space", in: " 200 OK", wantErr: "three-digit code"},
		{name: "below 100", in: "099 Low", wantErr: "below 100"},
		{name: "zero", in: "000 Zero", wantErr: "below 100"},
		{name: "four digits", in: "2000 OK", wantErr: "want a space"},
		{name: "no reason no space", in: "200", wantErr: "want a space"},
		{name: "no space", in: "200OK", wantErr: "want a space"},
		{name: "tab separator", in: "200\tOK", wantErr: "want a space"},
		{name: "CR", in: "200 OK\r", wantErr: "invalid character 0x0d"},
		{name: "LF injection", in: "200 OK\nSet-Cookie: x=1", wantErr: "invalid character 0x0a"},
		{name: "CRLF injection", in: "200 OK\r\nX: y", wantErr: "invalid character 0x0d"},
		{name: "NUL", in: "200 O\x00K", wantErr: "invalid character 0x00"},
		{name: "DEL", in: "200 O\x7fK", wantErr: "invalid character 0x7f"},
		{name: "other CTL", in: "200 \x1bOK", wantErr: "invalid character 0x1b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := ValidateStatus([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil || code != tc.wantCode {
					t.Errorf("got %d, %v; want %d, nil", code, err, tc.wantCode)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %d, %v; want error containing %q", code, err, tc.wantErr)
			}
			if code != 0 {
				t.Errorf("got code %d with an error, want 0", code)
			}
		})
	}
}

func TestValidateHeader(t *testing.T) {
	for _, tc := range []struct {
		name      string
		hname     string
		value     string
		wantErr   string // substring; "" means valid
		wantHopBy bool
	}{
		{name: "ok", hname: "Content-Type", value: "text/html; charset=utf-8"},
		{name: "empty value", hname: "X-Empty", value: ""},
		{name: "token punctuation", hname: "X!#$%&'*+-.^_`|~9", value: "v"},
		{name: "obs-text value", hname: "X-Name", value: "caf\xe9 \xff"},
		{name: "tab in value", hname: "X-Tab", value: "a\tb"},
		{name: "leading and trailing whitespace", hname: "X-Ws", value: " \tv \t"},
		{name: "set-cookie", hname: "Set-Cookie", value: "a=1; Path=/; HttpOnly"},
		{name: "empty name", hname: "", value: "v", wantErr: "empty header name"},
		{name: "space in name", hname: "X Foo", value: "v", wantErr: `invalid character 0x20 in header name "X Foo"`},
		{name: "colon in name", hname: "X-Foo:", value: "v", wantErr: "invalid character 0x3a"},
		{name: "separator in name", hname: "X(Foo)", value: "v", wantErr: "invalid character 0x28"},
		{name: "non-ASCII name", hname: "X-Caf\xe9", value: "v", wantErr: "invalid character 0xe9"},
		{name: "CR in name", hname: "X\rFoo", value: "v", wantErr: "invalid character 0x0d"},
		{name: "CR in value", hname: "X-Foo", value: "a\rb", wantErr: `invalid character 0x0d in header "X-Foo" value`},
		{name: "LF in value", hname: "X-Foo", value: "a\nSet-Cookie: evil", wantErr: `invalid character 0x0a in header "X-Foo" value`},
		{name: "NUL in value", hname: "X-Foo", value: "a\x00", wantErr: "invalid character 0x00"},
		{name: "DEL in value", hname: "X-Foo", value: "a\x7f", wantErr: "invalid character 0x7f"},
		{name: "other CTL in value", hname: "X-Foo", value: "\x01", wantErr: "invalid character 0x01"},
		{name: "connection", hname: "Connection", value: "close", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "keep-alive lower", hname: "keep-alive", value: "timeout=5", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "proxy-authenticate", hname: "Proxy-Authenticate", value: "Basic", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "proxy-authorization", hname: "PROXY-AUTHORIZATION", value: "x", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "te", hname: "TE", value: "trailers", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "trailer", hname: "Trailer", value: "X", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "trailers", hname: "Trailers", value: "X", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "transfer-encoding", hname: "Transfer-Encoding", value: "chunked", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "upgrade", hname: "Upgrade", value: "websocket", wantErr: "hop-by-hop", wantHopBy: true},
		{name: "hop-by-hop with bad value is a syntax error", hname: "Connection", value: "a\r\nb", wantErr: "invalid character 0x0d"},
		{name: "not hop-by-hop: proxy-connection", hname: "Proxy-Connection", value: "x"},
		{name: "not hop-by-hop: prefix", hname: "Connections", value: "x"},
		{name: "not hop-by-hop: t", hname: "T", value: "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateHeader([]byte(tc.hname), []byte(tc.value))
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want error containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrHopByHop); got != tc.wantHopBy {
				t.Errorf("errors.Is(err, ErrHopByHop): got %v, want %v", got, tc.wantHopBy)
			}
		})
	}
}

func TestValidateEchoLimit(t *testing.T) {
	long := bytes.Repeat([]byte("\x01"), 10000)
	for _, err := range []error{
		ValidateHeader(long, nil),
		ValidateHeader(append([]byte("X"), long...), []byte("\n")),
		ValidateHeader(bytes.Repeat([]byte("A"), 10000), []byte("\x00")),
		func() error { _, err := ValidateStatus(append([]byte("200 "), long...)); return err }(),
		func() error { _, err := ValidateStatus(long); return err }(),
	} {
		// At most 64 input bytes, each quoted as up to 4 characters, plus the message.
		if err == nil || len(err.Error()) > 64*4+100 {
			t.Errorf("got %d-byte error %.80q..., want a bounded error", len(err.Error()), err)
		}
	}
}

func TestValidateAllocs(t *testing.T) {
	name, value, status := []byte("Content-Type"), []byte("text/html; charset=utf-8"), []byte("200 OK")
	got := testing.AllocsPerRun(100, func() {
		if ValidateHeader(name, value) != nil {
			t.Fatal("header rejected")
		}
		if _, err := ValidateStatus(status); err != nil {
			t.Fatal(err)
		}
	})
	if got != 0 {
		t.Errorf("got %v allocs per run, want 0", got)
	}
}

func BenchmarkValidateHeader(b *testing.B) {
	name, value := []byte("Content-Type"), []byte("text/html; charset=utf-8")
	for b.Loop() {
		_ = ValidateHeader(name, value)
	}
}

func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }

func FuzzValidateStatus(f *testing.F) {
	for _, s := range []string{"200 OK", "204 ", "099 x", "2000", "200 OK\r\n", "999 \xff", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		code, err := ValidateStatus(s)
		if err != nil {
			if code != 0 {
				t.Errorf("code %d with error %v", code, err)
			}
			if len(err.Error()) > 64*4+100 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if code < 100 || code > 999 || len(s) < 4 || s[3] != ' ' {
			t.Fatalf("accepted %q with code %d", s, code)
		}
		if n, err := strconv.Atoi(string(s[:3])); err != nil || n != code {
			t.Errorf("code %d, want %q", code, s[:3])
		}
		for _, c := range s {
			if isCTL(c) && c != '\t' {
				t.Fatalf("accepted %q with control byte 0x%02x", s, c)
			}
		}
	})
}

func FuzzValidateHeader(f *testing.F) {
	f.Add([]byte("Content-Type"), []byte("text/plain"))
	f.Add([]byte("X-Foo"), []byte("a\r\nb"))
	f.Add([]byte("Connection"), []byte("close"))
	f.Add([]byte("X\x00"), []byte("\xe9"))
	f.Fuzz(func(t *testing.T, name, value []byte) {
		err := ValidateHeader(name, value)
		if err != nil && !errors.Is(err, ErrHopByHop) {
			if len(err.Error()) > 64*4+100 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			return
		}
		// Accepted, or well-formed but hop-by-hop: never CR, LF, NUL or another control byte.
		if len(name) == 0 {
			t.Fatal("accepted an empty name")
		}
		for _, c := range name {
			if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
				t.Fatalf("accepted name %q with byte 0x%02x", name, c)
			}
		}
		for _, c := range value {
			if isCTL(c) && c != '\t' {
				t.Fatalf("accepted value %q with byte 0x%02x", value, c)
			}
		}
		hop := false
		switch strings.ToLower(string(name)) {
		case "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
			"te", "trailer", "trailers", "transfer-encoding", "upgrade":
			hop = true
		}
		if got := errors.Is(err, ErrHopByHop); got != hop {
			t.Errorf("%q: hop-by-hop got %v, want %v", name, got, hop)
		}
	})
}
