package tests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gowsgi/internal/testenv"
)

func TestWriteCallable(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	resp, body := get(t, s.URL+"/write")
	wantStatus(t, resp, body, 200)
	if want := "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n"; string(body) != want {
		t.Errorf("write() body %q, want %q", body, want)
	}
	resp, body = get(t, s.URL+"/write_and_iter")
	wantStatus(t, resp, body, 200)
	if want := "written;iter1;iter2"; string(body) != want {
		t.Errorf("write() then iterable: %q, want %q", body, want)
	}
}

// TestResponseFramingHTTP11: bodies without Content-Length are framed (Content-Length the
// server computed, or chunked) so that the connection stays usable for the next request.
func TestResponseFramingHTTP11(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	for _, tc := range []struct{ path, want string }{
		{"/single", "single chunk body\n"},
		{"/multi", "one;two;three\n"},
		{"/write", "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n"},
		{"/single", "single chunk body\n"},
	} {
		write(t, c, headRequest("GET", tc.path))
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Fatalf("%s on a kept-alive connection: %q %q, want 200 %q", tc.path, resp.Status, body, tc.want)
		}
		if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
			t.Errorf("%s: HTTP/1.1 response delimited by closing the connection", tc.path)
		}
		if resp.Close {
			t.Errorf("%s: server closed a keep-alive connection", tc.path)
		}
	}
}

// TestResponseFramingHTTP10: an HTTP/1.0 client cannot read chunked encoding.
func TestResponseFramingHTTP10(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, path := range []string{"/multi", "/write", "/single"} {
		c := dial(t, s)
		write(t, c, "GET "+path+" HTTP/1.0\r\n\r\n")
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%s: read: %v", path, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%s: %v in %q", path, err, raw)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: body: %v in %q", path, err, raw)
		}
		if len(resp.TransferEncoding) > 0 {
			t.Errorf("%s: chunked response to an HTTP/1.0 request:\n%q", path, raw)
		}
		if resp.StatusCode != 200 || len(body) == 0 || bytes.Contains(body, []byte("\r\n0\r\n")) {
			t.Errorf("%s: %q %q", path, resp.Status, body)
		}
	}
}

// TestHEAD: a HEAD response has headers and no body, also for a body the app produces
// without Content-Length, and the next pipelined request parses cleanly.
func TestHEAD(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	_, getBody := get(t, s.URL+"/head")
	for _, path := range []string{"/head", "/multi", "/write"} {
		c := dial(t, s)
		br := bufio.NewReader(c)
		write(t, c, headRequest("HEAD", path)+headRequest("GET", "/status?code=201"))
		resp, _ := readResponse(t, br, "HEAD")
		if resp.StatusCode != 200 {
			t.Errorf("HEAD %s: status %q", path, resp.Status)
		}
		if path == "/head" {
			if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(getBody)) {
				t.Errorf("HEAD /head: Content-Length %s, GET body has %d bytes", cl, len(getBody))
			}
		}
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 201 || string(body) != "201 Created\n" {
			t.Errorf("request after HEAD %s: %q %q (a body leaked into the HEAD response?)", path, resp.Status, body)
		}
	}
}

func TestPipelining(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	write(t, c, headRequest("GET", "/status?code=201")+
		"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabcdef"+
		headRequest("GET", "/sleep?s=0.2")+
		headRequest("GET", "/status?code=202"))
	for _, want := range []struct {
		method string
		code   int
		body   string
	}{
		{"GET", 201, "201 Created\n"},
		{"POST", 200, "abcdef"},
		{"GET", 200, "slept"},
		{"GET", 202, "202 Accepted\n"},
	} {
		resp, body := readResponse(t, br, want.method)
		if resp.StatusCode != want.code || string(body) != want.body {
			t.Fatalf("pipelined response: %q %q, want %d %q", resp.Status, body, want.code, want.body)
		}
	}
}

func TestStatusLinePassedThrough(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	write(t, c, headRequest("GET", "/status?code=418"))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "HTTP/1.1 418 I'm a Teapot\r\n" {
		t.Errorf("status line %q, want %q", line, "HTTP/1.1 418 I'm a Teapot\r\n")
	}
}

func TestStatusNoContent(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, code := range []int{204, 304} {
		c := dial(t, s)
		br := bufio.NewReader(c)
		write(t, c, headRequest("GET", "/status?code="+strconv.Itoa(code))+headRequest("GET", "/status?code=201"))
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != code || len(body) != 0 || len(resp.TransferEncoding) > 0 {
			t.Errorf("%d: %q, body %q, transfer-encoding %v", code, resp.Status, body, resp.TransferEncoding)
		}
		resp, _ = readResponse(t, br, "GET")
		if resp.StatusCode != 201 {
			t.Errorf("request after %d: %q", code, resp.Status)
		}
	}
}

// TestContentLengthShort: the app promises 10 bytes and sends 5. The server must not leave
// the client waiting for the rest: it answers 500 if it notices before sending the head, or
// closes the connection after the 5 bytes.
func TestContentLengthShort(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	write(t, c, headRequest("GET", "/cl_short"))
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode == 500 {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server neither finished nor closed the response after %q (Content-Length 10)", body)
	}
	if err == nil || len(body) >= 10 {
		t.Errorf("status %q, body %q, err %v: want the connection closed short of 10 bytes", resp.Status, body, err)
	}
	stillServes(t, s)
}

// TestContentLengthLong: the app promises 5 bytes and sends 10. The client gets exactly 5
// (or a 500), and the surplus must never be read as the start of the next response.
func TestContentLengthLong(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	write(t, c, headRequest("GET", "/cl_long")+headRequest("GET", "/status?code=201"))
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 500 && string(body) != "01234" {
		t.Fatalf("first response %q %q, want 200 \"01234\" (or a 500)", resp.Status, body)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	switch {
	case err == nil:
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 201 || string(b) != "201 Created\n" {
			t.Errorf("second response %q %q, want 201", resp.Status, b)
		}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err):
		// The server closed the connection after the truncated response: fine.
	default:
		t.Errorf("second response unreadable (surplus bytes leaked into the stream?): %v", err)
	}
	stillServes(t, s)
}

func isConnReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

func TestAppExceptionBeforeStart(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	for _, path := range []string{"/exc_before", "/exc_after_start"} {
		resp, body := get(t, s.URL+path)
		wantStatus(t, resp, body, 500)
		if bytes.Contains(body, []byte("Traceback")) {
			t.Errorf("%s: 500 body leaks the traceback: %q", path, body)
		}
	}
	if !eventually(5*time.Second, func() bool { return strings.Contains(s.Stderr(), "rawapp: /exc_before raises") }) {
		t.Errorf("error log lacks the app's exception")
	}
	stillServes(t, s)
}

// TestAppExceptionMidStream: once the head is out, an exception can only abort the
// response: the client must see an incomplete body, not a clean end. close() is called.
func TestAppExceptionMidStream(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	_, closed0 := closedCount(t, s)
	resp, err := client.Get(s.URL + "/exc_mid_stream")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "chunk 0\n") {
		t.Errorf("status %q body %q, want 200 starting with the first chunk", resp.Status, body)
	}
	if err == nil {
		t.Errorf("body %q ended cleanly; want the response aborted", body)
	}
	if !eventually(5*time.Second, func() bool { _, c := closedCount(t, s); return c == closed0+1 }) {
		t.Errorf("close() not called on the failing iterable")
	}
	stillServes(t, s)
}

func TestExcInfoReplacesStatus(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	resp, body := get(t, s.URL+"/exc_info_replace")
	wantStatus(t, resp, body, 500)
	if string(body) != "replaced by exc_info\n" {
		t.Errorf("body %q, want the app's replacement body", body)
	}
}

// TestExcInfoAfterBody: start_response with exc_info after the head went out must re-raise;
// the response is then aborted.
func TestExcInfoAfterBody(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	resp, err := client.Get(s.URL + "/exc_info_after_body")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "first chunk\n" || err == nil {
		t.Errorf("status %q body %q err %v; want 200, \"first chunk\\n\", then an aborted response", resp.Status, body, err)
	}
	if strings.Contains(string(body), "did not raise") {
		t.Errorf("start_response with exc_info did not re-raise after the head was sent")
	}
	stillServes(t, s)
}

func TestDoubleStartResponse(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	resp, body := get(t, s.URL+"/double_start")
	wantStatus(t, resp, body, 200)
	if !strings.HasSuffix(string(body), "raised: yes\n") {
		t.Errorf("body %q: a second start_response without exc_info must raise", body)
	}
}

// TestBadHeaders: invalid status lines and headers from the app become a 500; nothing of
// them reaches the client (no header injection). Uses raw_application: the validator would
// stop these before the server sees them.
func TestBadHeaders(t *testing.T) {
	t.Parallel()
	s := startApp(t, "rawapp:raw_application")
	for _, kind := range []string{"crlf", "nul", "nonlatin", "nonstr", "badstatus", "space_in_name"} {
		c := dial(t, s)
		write(t, c, headRequest("GET", "/bad_header?kind="+kind, "Connection: close"))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		raw, _ := io.ReadAll(io.LimitReader(c, 1<<16)) // ends when the server closes or the deadline passes
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: "GET"})
		if err != nil {
			t.Errorf("%s: unparsable response %q: %v", kind, raw, err)
			continue
		}
		if resp.StatusCode != 500 {
			t.Errorf("%s: status %q, want 500; response %q", kind, resp.Status, raw)
		}
		if bytes.Contains(raw, []byte("Injected")) || bytes.Contains(raw, []byte("must not send")) {
			t.Errorf("%s: the app's bad header or body reached the client: %q", kind, raw)
		}
		c.Close()
	}
	stillServes(t, s)
}

func TestFileWrapper(t *testing.T) {
	t.Parallel()
	for _, app := range []string{"rawapp:raw_application", "rawapp:application"} {
		t.Run(app, func(t *testing.T) {
			t.Parallel()
			s := startApp(t, app)
			for _, size := range []int{0, 1, 8192, 3_000_001} {
				resp, body := get(t, s.URL+"/file?size="+strconv.Itoa(size))
				wantStatus(t, resp, body, 200)
				if len(body) != size || sha(body) != resp.Header.Get("X-Sha256") {
					t.Errorf("size %d: got %d bytes, sha %s, want %s", size, len(body), sha(body), resp.Header.Get("X-Sha256"))
				}
				if w := resp.Header.Get("X-File-Wrapper"); w != "server" {
					t.Errorf("X-File-Wrapper %q: environ has no wsgi.file_wrapper", w)
				}
			}
		})
	}
}

// TestFileWrapperNoLeak: the file the app hands to wsgi.file_wrapper is closed after the
// response (the worker's fd count returns to where it was).
func TestFileWrapperNoLeak(t *testing.T) {
	t.Parallel()
	s := startApp(t, "rawapp:raw_application")
	get(t, s.URL+"/file?size=10")
	before := openFDs(t, s.Pid)
	for i := 0; i < 20; i++ {
		resp, body := get(t, s.URL+"/file?size=100000")
		wantStatus(t, resp, body, 200)
	}
	var after int
	if !eventually(5*time.Second, func() bool { after = openFDs(t, s.Pid); return after <= before+2 }) {
		t.Errorf("open fds of the server's processes went from %d to %d after 20 file responses", before, after)
	}
}

// openFDs counts the open descriptors of pid and its descendants.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	pids := []int{pid}
	kids, err := testenv.Descendants(pid)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range append(pids, kids...) {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/fd")
		if err == nil {
			n += len(ents)
		}
	}
	return n
}

func TestUploadCGIFieldStorage(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	data := randomBytes(t, 1<<20)
	ctype, body := multipartBody(t, map[string]string{"title": "hello world", "empty": ""}, "upload", "data.bin", data)
	resp, rbody := post(t, s.URL+"/upload", ctype, body)
	wantStatus(t, resp, rbody, 200)
	var r struct {
		Names  []string
		Fields map[string]string
		Files  map[string]struct {
			Filename, Sha256 string
			Size             int
		}
	}
	decodeJSON(t, rbody, &r)
	if strings.Join(r.Names, ",") != "empty,title,upload" || r.Fields["title"] != "hello world" {
		t.Errorf("names %v fields %v", r.Names, r.Fields)
	}
	f := r.Files["upload"]
	if f.Filename != "data.bin" || f.Size != len(data) || f.Sha256 != sha(data) {
		t.Errorf("file %+v, want data.bin, %d bytes, sha %s", f, len(data), sha(data))
	}
}

// TestStreamingFlush: each chunk the app yields goes to the client at once; the first must
// not wait for the second (yielded a second later).
func TestStreamingFlush(t *testing.T) {
	s := startRaw(t)
	start := time.Now()
	resp, err := client.Get(s.URL + "/stream?n=3&delay=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("chunk 0\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	if d := time.Since(start); d >= 900*time.Millisecond {
		t.Errorf("first chunk after %v, want < 0.9s (held back until the next one?)", d)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(buf)+string(rest) != "chunk 0\nchunk 1\nchunk 2\n" {
		t.Errorf("body %q + %q, err %v", buf, rest, err)
	}
}

func TestCloseCalled(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	created0, closed0 := closedCount(t, s)
	for i := 0; i < 3; i++ {
		resp, body := get(t, s.URL+"/stream?n=2")
		wantStatus(t, resp, body, 200)
	}
	if !eventually(5*time.Second, func() bool {
		created, closed := closedCount(t, s)
		return created == created0+3 && closed == closed0+3
	}) {
		created, closed := closedCount(t, s)
		t.Errorf("after 3 streams: created %d closed %d (from %d, %d); close() must be called on every iterable", created, closed, created0, closed0)
	}
}

// TestCloseOnClientDisconnect: when the client goes away mid-stream, the app stops being
// iterated and its close() is called.
func TestCloseOnClientDisconnect(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	created0, closed0 := closedCount(t, s)
	c := dial(t, s)
	write(t, c, headRequest("GET", "/stream?n=200&delay=0.05"))
	br := bufio.NewReader(c)
	tp := textproto.NewReader(br)
	if line, err := tp.ReadLine(); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("status line %q, %v", line, err)
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err != nil { // the first chunk (or its size line)
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	if !eventually(5*time.Second, func() bool {
		created, closed := closedCount(t, s)
		return created == created0+1 && closed == closed0+1
	}) {
		created, closed := closedCount(t, s)
		t.Errorf("5s after the client left: created %d closed %d (from %d, %d); want close() called", created, closed, created0, closed0)
	}
	// 200 chunks 50 ms apart take 10 s: close() within 5 s shows the iteration was cancelled.
	t.Logf("close() seen %v after the disconnect", time.Since(start))
}

// TestBigChunksFraming: big body chunks are written to the client several at a time with one
// writev, chunked or with a Content-Length; the framing must hold byte for byte, and the
// connection must stay usable for the next request.
func TestBigChunksFraming(t *testing.T) {
	t.Parallel()
	s := startRaw(t)
	c := dial(t, s)
	br := bufio.NewReader(c)
	for _, target := range []string{"/big?mb=4&cl=0", "/big?mb=4", "/big?mb=1&cl=0"} {
		write(t, c, headRequest("GET", target))
		resp, body := readResponse(t, br, "GET")
		wantStatus(t, resp, body, 200)
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		if strings.Contains(target, "cl=0") != chunked {
			t.Errorf("%s: Transfer-Encoding %q", target, resp.TransferEncoding)
		}
		mb := 4
		if strings.Contains(target, "mb=1") {
			mb = 1
		}
		if len(body) != mb<<20 || strings.Trim(string(body), "x") != "" {
			t.Fatalf("%s: %d bytes, want %d bytes of x", target, len(body), mb<<20)
		}
	}
}

// TestSharedChunksHeldUp: clients that stop reading keep the shared buffers their finished
// responses sit in, and a thread waits for a free buffer only so long: then its chunks take
// the ring, and another client's response arrives whole and in order instead of waiting on
// theirs. With one thread the worker has 8 buffers; each stalled client (a tiny receive
// buffer) leaves about half of its 512 KiB response in them. The bodies go through write(),
// whose chunks take the buffers: an iterable's are lent from the arena instead.
func TestSharedChunksHeldUp(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "--threads", "1")
	small := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	for range 4 {
		l, err := small.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		write(t, l, headRequest("GET", "/big?vary=1&write=1&kb=512"))
	}
	time.Sleep(300 * time.Millisecond) // the thread produces their bodies, which stall

	c := dial(t, s)
	br := bufio.NewReader(c)
	start := time.Now()
	write(t, c, headRequest("GET", "/big?vary=1&write=1&mb=2"))
	resp, body := readResponse(t, br, "GET")
	wantStatus(t, resp, body, 200)
	if len(body) != 2<<20 {
		t.Fatalf("%d bytes, want %d", len(body), 2<<20)
	}
	for i := 0; i < len(body); i += 64 << 10 {
		if want := byte(i >> 16); bytes.Count(body[i:i+64<<10], []byte{want}) != 64<<10 {
			t.Fatalf("chunk %d is not 64 KiB of %d", i>>16, want)
		}
	}
	t.Logf("2 MiB beside 4 stalled clients in %v", time.Since(start))
}

// TestSharedChunks streams distinct 64 KiB chunks, which travel from the worker to the front
// in shared memory: every byte must arrive in order, including while clients leave mid-stream,
// a worker dies mid-stream and a reload retires a worker mid-stream. Every buffer lent to a connection must come back: the front
// unmaps a dead worker's buffers once the last one is freed, so in the end it maps exactly
// the live worker's.
func TestSharedChunks(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "--threads", "2")
	// check asks for mb MiB (query adds to the target) and checks every chunk is in order.
	check := func(c net.Conn, query string, mb int) {
		t.Helper()
		br := bufio.NewReader(c)
		write(t, c, headRequest("GET", "/big?vary=1&mb="+strconv.Itoa(mb)+query))
		resp, body := readResponse(t, br, "GET")
		wantStatus(t, resp, body, 200)
		if len(body) != mb<<20 {
			t.Fatalf("%s: %d bytes, want %d", query, len(body), mb<<20)
		}
		for i := 0; i < len(body); i += 64 << 10 {
			want := byte((i >> 16) % 251)
			if b := body[i : i+64<<10]; bytes.Count(b, []byte{want}) != len(b) {
				t.Fatalf("%s: chunk %d is not 64 KiB of %d", query, i>>16, want)
			}
		}
	}
	mappings := func() int {
		maps, err := os.ReadFile("/proc/" + strconv.Itoa(s.Pid) + "/maps")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(maps), "gowsgi-chunks")
	}
	if n := mappings(); n != 1 {
		t.Fatalf("the front maps %d sets of shared chunks for its one worker", n)
	}

	c := dial(t, s)
	check(c, "", 8)
	check(c, "&write=1", 8) // write() output takes the shared buffers too
	// Clients that leave mid-stream: their connections drop the chunks still queued.
	for i := 0; i < 16; i++ {
		l := dial(t, s)
		write(t, l, headRequest("GET", "/big?vary=1&mb=16"))
		if _, err := io.ReadFull(l, make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	check(c, "", 4)

	// stall starts n clients on an mb MiB stream, reads the head and 128 KiB of each, and
	// leaves them stalled; rest reads the remainder of one and checks its chunks are in order.
	type stalledClient struct {
		c    net.Conn
		body io.Reader
	}
	const ahead = 128 << 10
	stall := func(n, mb int) []stalledClient {
		t.Helper()
		out := make([]stalledClient, n)
		for i := range out {
			l := dial(t, s)
			write(t, l, headRequest("GET", "/big?vary=1&mb="+strconv.Itoa(mb)))
			resp, err := http.ReadResponse(bufio.NewReader(l), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, ahead)); err != nil {
				t.Fatal(err)
			}
			out[i] = stalledClient{l, resp.Body}
		}
		return out
	}
	rest := func(l stalledClient, what string) ([]byte, error) {
		t.Helper()
		defer l.c.Close()
		l.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(l.body)
		for i := 0; i+64<<10 <= len(got); i += 64 << 10 {
			if want := byte(((i + ahead) >> 16) % 251); bytes.Count(got[i:i+64<<10], []byte{want}) != 64<<10 {
				t.Fatalf("%s: chunk at %d is not 64 KiB of %d", what, i+ahead, want)
			}
		}
		return got, err
	}

	// Clients stalled mid-stream while their worker dies: their connections still hold
	// buffers of the dead worker and write from them once the clients read again.
	stalled := stall(2, 16)
	workers, err := testenv.Descendants(s.Pid)
	if err != nil || len(workers) != 1 {
		t.Fatalf("workers under %d: %v, %v", s.Pid, workers, err)
	}
	time.Sleep(200 * time.Millisecond) // the worker fills the buffers the connections may take
	syscall.Kill(workers[0], syscall.SIGKILL)
	for _, l := range stalled {
		// The response breaks off (the worker died); what did arrive is in order.
		if got, _ := rest(l, "stalled client of a killed worker"); len(got) >= 16<<20-ahead {
			t.Errorf("stalled client got the whole body (%d bytes) from a worker killed mid-stream", len(got))
		}
	}
	c.Close()
	c = dial(t, s)
	check(c, "", 4) // the replacement worker serves
	if !eventually(10*time.Second, func() bool { return mappings() == 1 }) {
		t.Fatalf("the front still maps %d sets of shared chunks: a buffer was never freed", mappings())
	}

	// A reload while clients are stalled mid-stream: the retiring worker finishes their
	// streams, which arrive whole and in order, and its buffers go once they are written.
	stalled = stall(2, 4)
	s.Signal(syscall.SIGHUP)
	time.Sleep(time.Second) // the new worker boots and takes over; the old one keeps streaming
	for _, l := range stalled {
		if got, err := rest(l, "stalled client across a reload"); err != nil || len(got) != 4<<20-ahead {
			t.Fatalf("stalled client across a reload: %d bytes, %v; want the remaining %d", len(got), err, 4<<20-ahead)
		}
	}
	check(c, "", 1)
	if !eventually(10*time.Second, func() bool { return mappings() == 1 }) {
		t.Fatalf("after a reload the front still maps %d sets of shared chunks", mappings())
	}
}

// TestIdleWorkerDropsLentChunks: a big body chunk goes to the front straight from the Python
// object, which the worker keeps until the front has written it; then the worker drops it
// even when no other request comes, rather than keeping a whole big body while it idles. The
// worker's shared resident memory holds the 32 MiB object while the client has read only
// part of it, and loses it within seconds once the client has read it all.
func TestIdleWorkerDropsLentChunks(t *testing.T) {
	t.Parallel()
	s := startRaw(t, "-w", "1", "--threads", "2")
	stillServesPath(t, s.URL+"/single")
	workers, err := testenv.Descendants(s.Pid)
	if err != nil || len(workers) != 1 {
		t.Fatalf("workers %v, %v; want one", workers, err)
	}
	shmem := func() int64 {
		n, err := testenv.RSSShmem(workers[0])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const size = 32 << 20
	before := shmem()
	c := dial(t, s)
	write(t, c, headRequest("GET", "/big?one=1&mb=32"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	lent := shmem()
	time.Sleep(400 * time.Millisecond) // a slow client: the sweeper finds the chunk still lent
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size-1<<20 {
		t.Fatalf("read %d more bytes (%v), want %d", n, err, size-1<<20)
	}
	after := shmem()
	for deadline := time.Now().Add(10 * time.Second); after-before > size/4 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		after = shmem()
	}
	t.Logf("the worker's RssShmem: %d MiB before, %d while lent, %d after", before>>20, lent>>20, after>>20)
	if lent-before < size*7/8 {
		t.Fatalf("the body was not lent from the worker's shared arena: %d MiB more while it was read", (lent-before)>>20)
	}
	if after-before > size/4 {
		t.Errorf("the idle worker still keeps %d MiB more than before the response", (after-before)>>20)
	}
}
