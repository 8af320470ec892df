package http1

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// encodeChunked encodes payload in chunks of at most size bytes (size <= 0 means one chunk),
// adding ext to every chunk-size line and the given trailer lines before the final CRLF.
func encodeChunked(payload []byte, size int, trailers []string, ext ...string) []byte {
	if size <= 0 {
		size = len(payload) + 1
	}
	var b bytes.Buffer
	for len(payload) > 0 {
		n := min(size, len(payload))
		b.WriteString(strconv.FormatInt(int64(n), 16))
		for _, e := range ext {
			b.WriteString(e)
		}
		b.WriteString("\r\n")
		b.Write(payload[:n])
		b.WriteString("\r\n")
		payload = payload[n:]
	}
	b.WriteString("0\r\n")
	for _, t := range trailers {
		b.WriteString(t + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func chunkedRequest() *Request { return &Request{Chunked: true, ContentLength: -1} }

func TestChunked(t *testing.T) {
	cases := []struct {
		name, raw, body string
		want            int
	}{
		{"simple", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
		{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", 0},
		{"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", 0},
		{"lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789", 0},
		{"extensions", "5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n", "hello world", 0},
		{"quoted extension", "5;foo=\"bar baz\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
		{"quoted pair", "5;foo=\"a\\\"b\\\\\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
		{"BWS around ext", "5 ;\tfoo = bar\r\nhello\r\n0\r\n\r\n", "hello", 0},
		{"trailers", "5\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n", "hello", 0},
		{"empty body", "0\r\n\r\n", "", 0},
		{"max size digits", "7fffffffffffffff\r\nabc", "abc", unexpected},
		{"size overflow", "8000000000000000\r\n", "", 400},
		{"size overflow leading zeros ok", "00000000000000000000001\r\na\r\n0\r\n\r\n", "a", 0},
		{"trailing ws after ext", "5;a \r\nhello\r\n0\r\n\r\n", "", 400},
		{"ext without semicolon", "5 a\r\nhello\r\n0\r\n\r\n", "", 400},
		{"ext with equals but no value", "5;a=\r\nhello\r\n0\r\n\r\n", "", 400},
		{"ext quoted with bare CR", "5;a=\"b\rc\"\r\nhello\r\n0\r\n\r\n", "", 400},
		{"ext quoted with obs-text", "5;a=\"\xff\"\r\nhello\r\n0\r\n\r\n", "hello", 0},
		{"ext token with obs-text", "5;a=\xff\r\nhello\r\n0\r\n\r\n", "", 400},
		{"missing final CRLF", "5\r\nhello\r\n0\r\n", "hello", unexpected},
		{"nothing at all", "", "", unexpected},
		{"data then EOF", "5\r\nhel", "hel", unexpected},
		{"data then CR EOF", "5\r\nhello\r", "hello", unexpected},
		{"data then bad CRLF", "5\r\nhello\rX", "hello", 400},
		{"data then LF", "5\r\nhello\n0\r\n\r\n", "hello", 400},
		{"trailer without colon", "0\r\nfoo\r\n\r\n", "", 400},
		{"trailer forbidden TE", "0\r\nTransfer-Encoding: chunked\r\n\r\n", "", 400},
		{"trailer forbidden Trailer", "0\r\nTrailer: x\r\n\r\n", "", 400},
		{"trailer bad name", "0\r\nX Y: z\r\n\r\n", "", 400},
		{"trailer space before colon", "0\r\nX-Y : z\r\n\r\n", "", 400},
		{"trailer CTL", "0\r\nX-Y: a\x01\r\n\r\n", "", 400},
		{"trailer truncated", "0\r\nX-Y: a\r\n", "", unexpected},
	}
	for _, tc := range cases {
		for _, size := range bufSizes {
			for _, wrap := range []func(io.Reader) io.Reader{
				func(r io.Reader) io.Reader { return r },
				iotest.OneByteReader,
				iotest.HalfReader,
			} {
				br := bufio.NewReaderSize(wrap(strings.NewReader(tc.raw)), size)
				got, err := io.ReadAll(NewBodyReader(br, chunkedRequest(), Limits{}))
				o := outcome{body: string(got), err: err, status: statusOf(err)}
				if !wantMatches(o, tc.want) || o.body != tc.body {
					t.Errorf("%s (buf %d): got %q, %v; want %q, %d", tc.name, size, got, err, tc.body, tc.want)
				}
			}
		}
	}
}

func TestChunkedTrailers(t *testing.T) {
	raw := "5\r\nhello\r\n0\r\nVary: *\r\nX-Checksum:\tabc \r\n\r\nGET /next"
	br := bufio.NewReader(strings.NewReader(raw))
	r := NewBodyReader(br, chunkedRequest(), Limits{})
	if b, err := io.ReadAll(r); err != nil || string(b) != "hello" {
		t.Fatal(string(b), err)
	}
	tr, ok := r.(interface{ Trailers() []Header })
	if !ok {
		t.Fatal("chunked reader has no Trailers method")
	}
	want := []Header{{"Vary", "*"}, {"X-Checksum", "abc"}}
	if got := tr.Trailers(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("trailers %q, want %q", got, want)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "GET /next" {
		t.Fatalf("reader left %q behind", rest)
	}

	// Trailer limits.
	many := "0\r\n" + strings.Repeat("X: y\r\n", 4) + "\r\n"
	_, err := io.ReadAll(NewBodyReader(bufio.NewReader(strings.NewReader(many)), chunkedRequest(), Limits{MaxFields: 3}))
	if statusOf(err) != 400 {
		t.Errorf("4 trailers with MaxFields 3: %v", err)
	}
	long := "0\r\nX: " + strings.Repeat("y", 100) + "\r\n\r\n"
	_, err = io.ReadAll(NewBodyReader(bufio.NewReader(strings.NewReader(long)), chunkedRequest(), Limits{MaxFieldBytes: 50}))
	if statusOf(err) != 400 {
		t.Errorf("long trailer: %v", err)
	}
}

func TestChunkLineLimit(t *testing.T) {
	line := func(n int) string { // a chunk-size line of n bytes including CRLF
		return "1;a=" + strings.Repeat("b", n-len("1;a=\r\n")) + "\r\nx\r\n0\r\n\r\n"
	}
	for _, size := range bufSizes {
		for _, tc := range []struct {
			lim, n int
			ok     bool
		}{{0, 4096, true}, {0, 4097, false}, {100, 100, true}, {100, 101, false}, {100000, 100000, true}} {
			br := bufio.NewReaderSize(strings.NewReader(line(tc.n)), size)
			_, err := io.ReadAll(NewBodyReader(br, chunkedRequest(), Limits{MaxChunkLineBytes: tc.lim}))
			if (err == nil) != tc.ok || err != nil && statusOf(err) != 400 {
				t.Errorf("buf %d limit %d line %d: %v", size, tc.lim, tc.n, err)
			}
		}
	}
}

func TestChunkedRoundTrip(t *testing.T) {
	payload := make([]byte, 100000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	for _, chunk := range []int{1, 7, 4096, 65536, 0} {
		enc := encodeChunked(payload, chunk, []string{"X-T: 1"}, ";e=\"v\"")
		for _, size := range bufSizes {
			br := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(enc)), size)
			got, err := io.ReadAll(NewBodyReader(br, chunkedRequest(), Limits{}))
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("chunk %d buf %d: %d bytes, %v", chunk, size, len(got), err)
			}
		}
	}
}

func TestContentLengthBody(t *testing.T) {
	raw := "hello worldGET"
	for _, size := range bufSizes {
		br := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(raw)), size)
		r := NewBodyReader(br, &Request{ContentLength: 11}, Limits{})
		got, err := io.ReadAll(r)
		if err != nil || string(got) != "hello world" {
			t.Fatal(string(got), err)
		}
		if n, err := r.Read(make([]byte, 4)); n != 0 || err != io.EOF {
			t.Fatal(n, err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "GET" {
			t.Fatalf("left %q", rest)
		}
	}
	r := NewBodyReader(bufio.NewReader(strings.NewReader("abc")), &Request{ContentLength: 5}, Limits{})
	if got, err := io.ReadAll(r); err != io.ErrUnexpectedEOF || string(got) != "abc" {
		t.Fatal(string(got), err)
	}
	r = NewBodyReader(bufio.NewReader(strings.NewReader("abc")), &Request{}, Limits{})
	if got, err := io.ReadAll(r); err != nil || len(got) != 0 {
		t.Fatal(string(got), err)
	}
}
