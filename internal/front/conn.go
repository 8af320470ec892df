package front

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"gowsgi/internal/ascii"
	"gowsgi/internal/frame"
	"gowsgi/internal/http1"
	"gowsgi/internal/supervisor"
	"gowsgi/internal/wsgi"
)

// conn is one client connection, served by one goroutine: requests are read, dispatched and
// answered in order (pipelined requests wait in the read buffer).
type conn struct {
	s    *Server
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	ci   wsgi.ConnInfo
	idle atomic.Bool // waiting for the next request: safe to close when draining

	envBuf []byte
	reqBuf http1.RequestBuffer   // the Request being served lives here, until it is answered
	rd, wd deadline              // the armed read and write deadlines
	dw     deadlineWriter        // what the pooled response buffer writes to
	linger bool                  // close with a lingering close (see close)
	wait   *supervisor.WaitTimer // bounds the waits for a worker; nil until the first

	// head is the response head writeHead made, until the body's first bytes (or a flush)
	// take it: a big first chunk goes out with it in one writev (writeData).
	head []byte

	// Scratch of response.writeData, kept across the connection's requests.
	batch []supervisor.Event // data events written together
	iov   net.Buffers        // their bytes (and chunk framing), for one writev
	hdrs  []byte             // the chunk-size lines iov points into
}

// flushingReader flushes pending response bytes before the connection blocks on reading, so a
// response is never held back while we wait for the client, yet pipelined responses coalesce.
type flushingReader struct{ c *conn }

func (r flushingReader) Read(p []byte) (int, error) {
	if err := r.c.releaseWriter(); err != nil {
		return 0, err
	}
	return r.c.nc.Read(p)
}

// waitTimer returns the connection's timer for waits on a worker.
func (c *conn) waitTimer() *supervisor.WaitTimer {
	if c.wait == nil {
		c.wait = supervisor.NewWaitTimer()
	}
	return c.wait
}

// out returns the connection's response buffer, taking one from the server's pool when the
// connection has none: an idle connection holds no write buffer.
func (c *conn) out() *bufio.Writer {
	if c.bw == nil {
		c.bw = c.s.writers.Get().(*bufio.Writer)
		c.dw = deadlineWriter{c}
		c.bw.Reset(&c.dw) // a pointer: a struct in an interface would be allocated each time
	}
	return c.bw
}

// out returns the connection's response buffer with the pending head, if any, in it.
func (r *response) out() *bufio.Writer {
	bw := r.c.out()
	if len(r.c.head) > 0 {
		bw.Write(r.c.head) // a write error sticks in bw, and the flush reports it
		r.c.takeHead()
	}
	return bw
}

// takeHead empties the pending head once it is written, keeping its buffer unless it is big.
func (c *conn) takeHead() {
	c.head = c.head[:0]
	if cap(c.head) > maxHeadBuffer {
		c.head = nil
	}
}

// maxHeadBuffer bounds the head buffer a connection keeps for its next responses.
const maxHeadBuffer = 8 << 10

// releaseWriter flushes the response buffer and gives it back to the pool.
func (c *conn) releaseWriter() error {
	if c.bw == nil {
		return nil
	}
	err := c.bw.Flush()
	c.bw.Reset(nil)
	c.s.writers.Put(c.bw)
	c.bw = nil
	return err
}

// deadlineWriter sets a write deadline before each write to the client.
type deadlineWriter struct{ c *conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.wd.arm(time.Now(), w.c.s.cfg.WriteTimeout)
	return w.c.nc.Write(p)
}

// deadlineSlack is the fraction of a timeout by which an armed deadline may come early: a
// deadline is re-armed only when that would move it by more (deadline.arm).
const deadlineSlack = 64

// deadline is one direction of a connection's deadline. Arming one takes a lock of the
// runtime's timers, and a kept-alive connection would otherwise re-arm the same timeouts a few
// times per request, for nothing while requests follow each other within milliseconds.
type deadline struct {
	set     func(time.Time) error // the conn's SetReadDeadline or SetWriteDeadline
	timeout time.Duration         // armed: at+timeout; 0 when no deadline is armed
	at      time.Time
}

func newDeadline(set func(time.Time) error) deadline { return deadline{set: set} }

// arm makes the deadline now+d, unless the same timeout was armed less than d/deadlineSlack
// ago: that deadline stays, at most d/deadlineSlack earlier than asked.
func (dl *deadline) arm(now time.Time, d time.Duration) {
	if d == dl.timeout && now.Sub(dl.at) < d/deadlineSlack {
		return
	}
	_ = dl.set(now.Add(d)) // a closed conn fails the I/O itself
	dl.timeout, dl.at = d, now
}

// clear removes the deadline.
func (dl *deadline) clear() {
	_ = dl.set(time.Time{})
	dl.timeout = 0
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, rd: newDeadline(nc.SetReadDeadline), wd: newDeadline(nc.SetWriteDeadline)}
	// 4 KiB holds a typical request head; http1 copes with larger ones. Small matters here:
	// every idle keep-alive connection keeps its read buffer.
	c.br = bufio.NewReaderSize(flushingReader{c}, 4<<10)
	c.ci = connInfo(nc)
	return c
}

func connInfo(nc net.Conn) wsgi.ConnInfo {
	ci := wsgi.ConnInfo{Scheme: "http"}
	switch a := nc.LocalAddr().(type) {
	case *net.UnixAddr:
		ci.Unix = true
		ci.LocalHost = a.Name
	default:
		ci.LocalHost, ci.LocalPort, _ = net.SplitHostPort(a.String())
	}
	if !ci.Unix {
		ci.RemoteHost, ci.RemotePort, _ = net.SplitHostPort(nc.RemoteAddr().String())
	}
	return ci
}

func (c *conn) serve() {
	defer c.s.forget(c)
	defer c.close()
	defer c.releaseWriter() // nothing is left to say on a connection we end
	for {
		c.idle.Store(true)
		if c.s.isDraining() {
			return
		}
		c.rd.arm(time.Now(), c.s.cfg.KeepAlive)
		if _, err := c.br.Peek(1); err != nil {
			return // closed, idle too long, or drained
		}
		c.idle.Store(false)
		start := time.Now()
		if !headBuffered(c.br) { // else reading it cannot block
			c.rd.arm(start, c.s.cfg.HeaderTimeout)
		}
		req, err := c.reqBuf.Read(c.br, c.s.cfg.Limits)
		if err != nil {
			var he *http1.Error
			if errors.As(err, &he) {
				c.writeError(he.Status, he.Reason)
				c.logAccess(nil, start, he.Status, 0)
				c.linger = true // a body may follow the head we refused
			}
			return
		}
		if req.Upgrade && !upgradeIsASCII(req) {
			// Granian's CVE-2026-42544: a non-ASCII WebSocket header crashed a worker. We
			// serve WSGI only; refuse such a request outright.
			c.writeError(400, "non-ASCII Upgrade or Sec-WebSocket header")
			c.logAccess(req, start, 400, 0)
			return
		}
		ok := c.handle(req, start)
		c.reqBuf.Reset()
		if !ok {
			return
		}
	}
}

// bodyReader applies the body timeout to each read and remembers how the body ended.
type bodyReader struct {
	c    *conn
	r    io.Reader
	done bool  // io.EOF seen: the body was read to its end
	err  error // a read error other than io.EOF
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	b.c.rd.arm(time.Now(), b.c.s.cfg.BodyTimeout)
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.done = true
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// handle serves one request and reports whether the connection may carry another.
func (c *conn) handle(req *http1.Request, start time.Time) bool {
	hasBody := req.Chunked || req.ContentLength > 0
	body := &bodyReader{c: c, r: http1.NewBodyReader(c.br, req, c.s.cfg.Limits)}
	if !hasBody {
		body.done = true
	}

	// The first body bytes travel with the request, read before a Python thread is taken,
	// unless the client waits for "100 Continue", which only the app's first read may send.
	var prefix []byte
	bodyEnd := !hasBody
	if hasBody && !req.Expect100 {
		want := c.s.cfg.BodyPrefix
		if !req.Chunked && req.ContentLength < int64(want) {
			want = int(req.ContentLength)
		}
		buf := c.s.prefixes.Get(want)
		defer c.s.prefixes.Put(buf) // the request is over when handle returns
		n, err := io.ReadFull(body, buf)
		prefix = buf[:n]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if body.err != nil || !body.done {
				return c.failBody(req, start, body.err)
			}
			bodyEnd = true
		case err != nil:
			return c.failBody(req, start, err)
		default:
			// Filled the prefix; a Content-Length body may end exactly here.
			if !req.Chunked && int64(n) == req.ContentLength {
				body.done, bodyEnd = true, true
			}
		}
	}

	c.envBuf = wsgi.AppendEnviron(c.envBuf[:0], req, &c.ci, &c.s.cfg.Environ)
	r := response{c: c, req: req, body: body, start: start, prefix: prefix, bodyEnd: bodyEnd}
	keep := r.dispatch() && r.run()
	r.release()
	if !keep && !body.done && body.err == nil {
		c.linger = true // the client may still be sending the body
	}
	return keep
}

// Lingering close bounds: how long, and how many bytes, a closing connection keeps reading.
const (
	lingerTimeout = time.Second
	lingerBytes   = 1 << 20
)

// close ends the connection. When the client may still be sending a request body we did not
// read, closing at once would make the kernel answer its data with a reset, which can destroy
// the response before the client reads it; so the write side is shut first, and what comes
// in is read and dropped until the client closes too, within lingerTimeout and lingerBytes
// (what nginx calls lingering close).
func (c *conn) close() {
	if hc, ok := c.nc.(interface{ CloseWrite() error }); ok && c.linger && hc.CloseWrite() == nil {
		c.rd.arm(time.Now(), lingerTimeout)
		_, _ = io.CopyN(io.Discard, c.nc, lingerBytes) // ends at EOF, the deadline or the limit
	}
	_ = c.nc.Close() // nothing to do about an error on a connection we are done with
	if c.wait != nil {
		c.wait.Stop() // it would keep the connection until it fires
	}
}

// maxDispatch bounds how often one request is sent again after its worker died before
// starting it.
const maxDispatch = 3

// dispatch waits for a free Python thread and sends the request to it.
func (r *response) dispatch() bool {
	r.release() // the stream the request was sent on before, which gave it back
	r.attempts++
	st, err := r.c.s.sup.Open(context.Background(), len(r.c.envBuf)+len(r.prefix))
	if err != nil {
		r.c.writeError(503, "")
		r.c.logAccess(r.req, r.start, 503, 0)
		return false
	}
	r.st = st
	if err := st.SendRequest(r.c.envBuf, r.prefix, r.bodyEnd); err != nil {
		// The worker is gone; the stream fails (or is retried) like any other.
		r.c.s.log.Debug(fmt.Sprintf("send request: %v", err))
	}
	return true
}

// release gives back the stream the response was using, done with: run took its last event
// or abandoned it.
func (r *response) release() {
	if r.st != nil {
		r.st.Release()
		r.st = nil
	}
}

// failBody answers a request whose body could not be read before dispatch.
func (c *conn) failBody(req *http1.Request, start time.Time, err error) bool {
	var he *http1.Error
	if errors.As(err, &he) {
		c.writeError(he.Status, he.Reason)
		c.logAccess(req, start, he.Status, 0)
		c.linger = true // the rest of a malformed body may still be on its way
	}
	return false
}

// writeError sends a complete error response and marks the connection for closing.
func (c *conn) writeError(code int, reason string) {
	text := statusText(code)
	msg := text + "\n"
	if reason != "" && code < 500 {
		msg = text + ": " + reason + "\n"
	}
	fmt.Fprintf(c.out(), "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, text, len(msg), msg)
	_ = c.out().Flush() // the connection closes next either way
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// response drives one stream: it feeds the request body the app asks for and writes the
// response the worker sends.
type response struct {
	c     *conn
	req   *http1.Request
	st    *supervisor.Stream
	body  *bodyReader
	start time.Time

	prefix   []byte // the body bytes sent with the request, kept for a retry
	bodyEnd  bool
	attempts int

	headSent  bool
	code      int
	noBody    bool  // HEAD, 1xx, 204, 304: nothing after the head
	chunked   bool  // Transfer-Encoding: chunked
	ended     bool  // the last chunk of a chunked body is written (writeData)
	remaining int64 // body bytes still allowed by Content-Length; -1 unbounded
	written   int64
	keepAlive bool
	sent100   bool
	clientErr bool // a write to the client failed
	ungranted int  // body bytes written since the last credit grant
	cancelled bool
}

func (r *response) run() bool {
	for {
		e := r.st.NextTimeout(r.c.s.cfg.Timeout, r.c.waitTimer())
		switch e.Kind {
		case supervisor.EventTimeout:
			return r.timedOut()
		case supervisor.EventRetry:
			if r.attempts < maxDispatch {
				r.c.s.log.Warn(fmt.Sprintf("Worker %d died before starting %s %s; sending it to another", r.st.Worker(), r.req.Method, r.req.Target))
				if !r.dispatch() {
					return false
				}
				continue
			}
			return r.failed()
		case supervisor.EventRequeue:
			// Every thread of its worker was held up: the next free one in any worker takes
			// it. Not a failed attempt; a request whose client is gone is not sent again.
			r.attempts--
			if r.cancelled || !r.dispatch() {
				return false
			}
			continue
		case supervisor.EventWantBody:
			r.feedBody(e.N)
		case supervisor.EventHead:
			r.writeHead(&e.Head)
		case supervisor.EventData:
			var last bool
			r.c.batch, last = r.st.MoreData(append(r.c.batch[:0], e))
			r.writeData(r.c.batch, last)
			for i := range r.c.batch {
				r.st.Recycle(&r.c.batch[i])
			}
			if !r.clientErr && !r.st.Pending() {
				r.flush()
			}
		case supervisor.EventFile:
			r.sendFile(e)
		case supervisor.EventEnd:
			return r.finish(e.Abort)
		case supervisor.EventFailed:
			return r.failed()
		}
	}
}

// failed answers a request whose worker died under it.
func (r *response) failed() bool { return r.abort(502) }

// abort ends a response the worker will not complete: an error response with code when
// nothing was sent yet, else what was sent is flushed and the connection closes (it always
// returns false).
func (r *response) abort(code int) bool {
	if !r.headSent {
		r.c.writeError(code, "")
		r.c.logAccess(r.req, r.start, code, 0)
		return false
	}
	r.flush()
	r.c.logAccess(r.req, r.start, r.code, r.written)
	return false
}

// timedOut answers a request whose app stayed silent past the timeout: 504, or a closed
// connection if the head is out. The worker interrupts the thread; its answer is dropped.
func (r *response) timedOut() bool {
	r.c.s.log.Error(fmt.Sprintf("Request timed out after %v: %s %s (worker %d); interrupting its thread",
		r.c.s.cfg.Timeout, r.req.Method, r.req.Target, r.st.Worker()))
	r.st.Interrupt()
	r.st.Abandon()
	return r.abort(504)
}

func (r *response) cancel() {
	if !r.cancelled {
		r.cancelled = true
		r.st.Cancel()
	}
}

func (r *response) flush() {
	if err := r.out().Flush(); err != nil {
		r.clientErr = true
		r.cancel()
	}
}

// bodyAhead bounds the request body bytes sent to the worker for one of the app's reads.
// A 100 MB upload to an app reading 64 KiB at a time took 0.48-0.56 s when each read cost a
// round trip to the front and 0.38-0.42 s with 256 KiB (1 MiB measured the same), with 5
// times less CPU in the front.
const bodyAhead = 256 << 10

// feedBody sends the worker more request body bytes for the app's read of n.
func (r *response) feedBody(n int) {
	if r.req.Expect100 && !r.sent100 && !r.headSent && !r.body.done {
		r.sent100 = true
		if _, err := r.c.out().WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err == nil {
			r.flush()
		}
	}
	// The app asked for n bytes (at most 1 MiB); what the client has already sent, up to
	// bodyAhead, goes too and waits in the worker for the app's next reads: an upload then
	// costs one round trip to the front per bodyAhead rather than per read.
	buf := r.c.s.bodies.Get(max(min(n, 1<<20), bodyAhead))
	defer r.c.s.bodies.Put(buf)
	k, err := io.ReadAtLeast(r.body, buf, 1)
	switch {
	case err == nil:
		_ = r.st.SendBody(buf[:k], r.body.done) // a dead worker fails the stream
	case err == io.EOF:
		_ = r.st.SendBody(nil, true)
	default:
		// The client went away or sent a broken body: the app's read fails.
		r.keepAlive = false
		r.cancel()
	}
}

var crlf = []byte("\r\n")

func (r *response) writeHead(h *frame.ResponseHead) {
	if r.headSent {
		return
	}
	r.headSent = true
	r.code = h.Code
	b := r.c.head[:0]
	r.noBody = r.req.Method == "HEAD" || h.Code < 200 || h.Code == 204 || h.Code == 304
	r.remaining = -1
	b = append(b, "HTTP/1.1 "...)
	b = append(b, h.Status...)
	b = append(b, crlf...)
	hasDate := false
	for _, f := range h.Fields {
		if ascii.EqualFold(f.Name, "content-length") {
			if r.remaining >= 0 {
				continue // a repeated Content-Length would make the response ambiguous
			}
			n, err := strconv.ParseInt(string(bytes.TrimSpace(f.Value)), 10, 64)
			if err != nil {
				continue // the worker validated it; never trust it blindly
			}
			r.remaining = n
		} else if ascii.EqualFold(f.Name, "date") {
			hasDate = true
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, crlf...)
	}
	if !hasDate {
		b = append(b, "Date: "...)
		b = append(b, r.c.s.httpDate()...)
		b = append(b, crlf...)
	}
	r.keepAlive = r.req.KeepAlive && !r.c.s.isDraining()
	if r.remaining < 0 && h.Length >= 0 && !(r.noBody && r.req.Method != "HEAD") {
		r.remaining = h.Length
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, h.Length, 10)
		b = append(b, crlf...)
	}
	if r.remaining < 0 && !r.noBody {
		if r.req.Minor >= 1 {
			r.chunked = true
			b = append(b, "Transfer-Encoding: chunked\r\n"...)
		} else {
			r.keepAlive = false // the body ends when the connection does
		}
	}
	if r.req.Expect100 && !r.sent100 && !r.body.done {
		r.keepAlive = false // the client may or may not send the body it announced
	}
	if !r.keepAlive {
		b = append(b, "Connection: close\r\n"...)
	} else if r.req.Minor == 0 {
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	r.c.head = append(b, crlf...)
}

// writevMin is the size from which a batch of body chunks bypasses the connection's buffer
// and goes out with one writev: the buffer would split each big chunk into two writes and
// copy part of it, and every write to a loopback or LAN peer costs a wake-up on its side.
const writevMin = 32 << 10

// lastChunk ends a chunked body.
var lastChunk = []byte("0\r\n\r\n")

// writeData writes the body chunks of a batch of data events; last says the response ends
// with them, and a chunked body's last chunk goes in the same write: on its own it cost a
// system call and a wake-up of the client for each big response.
func (r *response) writeData(batch []supervisor.Event, last bool) {
	total := 0
	for _, e := range batch {
		total += len(e.Data)
	}
	// The worker spent credit on every byte it sent, whether or not the client gets it.
	defer r.grant(total)
	if r.noBody || r.clientErr {
		return
	}
	r.c.iov = r.c.iov[:0]
	if need := len(batch) * maxChunkLine; cap(r.c.hdrs) < need {
		r.c.hdrs = make([]byte, 0, need) // never grows below: the iov points into it
	}
	hdrs := r.c.hdrs[:0]
	size := 0
	for _, e := range batch {
		p := e.Data
		if r.remaining >= 0 {
			if int64(len(p)) > r.remaining {
				p = p[:r.remaining] // longer than promised: cut
			}
			r.remaining -= int64(len(p))
		}
		if len(p) == 0 {
			continue
		}
		if r.chunked {
			n := len(hdrs)
			hdrs = append(strconv.AppendInt(hdrs, int64(len(p)), 16), '\r', '\n')
			r.c.iov = append(r.c.iov, hdrs[n:], p, crlf)
		} else {
			r.c.iov = append(r.c.iov, p)
		}
		size += len(p)
	}
	if size == 0 {
		return // an empty batch: finish ends the body
	}
	if last && r.chunked {
		r.c.iov = append(r.c.iov, lastChunk)
		r.ended = true
	}
	var err error
	if size < writevMin {
		bw := r.out()
		for _, p := range r.c.iov {
			_, err = bw.Write(p) // a write error sticks: the last one reports it
		}
	} else if err = r.c.out().Flush(); err == nil { // earlier small chunks, or a response before
		// The head goes in the same writev as the chunks: written on its own it cost a
		// system call and a wake-up of the client for each big response.
		if len(r.c.head) > 0 {
			r.c.iov = append(r.c.iov, nil)
			copy(r.c.iov[1:], r.c.iov)
			r.c.iov[0] = r.c.head
		}
		iov := r.c.iov // WriteTo consumes its receiver
		r.c.wd.arm(time.Now(), r.c.s.cfg.WriteTimeout)
		_, err = iov.WriteTo(r.c.nc)
		r.c.takeHead()
	}
	if err != nil {
		r.clientErr = true
		r.cancel()
		return
	}
	r.written += int64(size)
}

// maxChunkLine is the longest chunk-size line: 16 hex digits and CRLF.
const maxChunkLine = 18

// creditBatch is how many response bytes the front writes before it grants the worker more
// credit: small responses (well inside the worker's initial credit) cost no credit frames.
const creditBatch = 256 << 10

func (r *response) grant(n int) {
	r.ungranted += n
	if r.ungranted >= creditBatch && !r.cancelled {
		r.st.Credit(r.ungranted)
		r.ungranted = 0
	}
}

func (r *response) sendFile(e supervisor.Event) {
	defer e.File.Close()
	n := e.Length
	if r.remaining >= 0 {
		n = min(n, r.remaining)
		r.remaining -= n
	}
	if r.noBody || r.clientErr || n <= 0 {
		return
	}
	if r.chunked {
		// Length is known for files, so this only happens when the app's header was
		// dropped; stay correct rather than fast.
		r.writeData(nil, false)
	}
	r.flush()
	if r.clientErr {
		return
	}
	if _, err := e.File.Seek(e.Offset, io.SeekStart); err != nil {
		r.clientErr = true
		r.cancel()
		return
	}
	r.c.wd.clear()
	// io.Copy to a *net.TCPConn from an *os.File under a LimitedReader uses sendfile(2).
	w, err := io.Copy(r.c.nc, io.LimitReader(e.File, n))
	r.written += w
	if err != nil || w < n {
		r.clientErr = true
		r.cancel()
	}
}

// finish completes the response after the worker's End and reports whether the connection
// may carry another request.
func (r *response) finish(abort bool) bool {
	defer func() { r.c.logAccess(r.req, r.start, r.code, r.written) }()
	if !r.headSent {
		// Cannot happen with a well-behaved worker; never leave the client hanging.
		r.c.writeError(502, "")
		r.code = 502
		return false
	}
	if abort || r.clientErr {
		r.flush()
		return false
	}
	bw := r.out() // a head with no body after it
	if r.chunked && !r.ended {
		bw.Write(lastChunk)
	}
	if r.remaining > 0 && !r.noBody {
		// Shorter than its Content-Length: the client must see the connection end.
		r.flush()
		return false
	}
	if !r.keepAlive {
		r.flush()
		return false
	}
	if !r.body.done {
		// The app left body unread: skip it so the next request parses, within reason.
		_, err := io.CopyN(io.Discard, r.body, 1<<20)
		if err != io.EOF {
			r.flush()
			return false
		}
	}
	return true
}

// cachedDate is a Date header value and the second it was made for.
type cachedDate struct {
	sec int64
	s   string
}

// httpDate returns the Date header value, formatted at most once a second.
func (s *Server) httpDate() string {
	now := time.Now()
	if d := s.date.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &cachedDate{sec: now.Unix(), s: now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")}
	s.date.Store(d)
	return d.s
}

// headBuffered reports whether a whole request head is in br already.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// upgradeIsASCII reports whether the Upgrade and Sec-WebSocket-* headers of req are ASCII.
func upgradeIsASCII(req *http1.Request) bool {
	for _, h := range req.Headers {
		n := h.Name
		if !ascii.EqualFold(n, "upgrade") && !(len(n) > 14 && ascii.EqualFold(n[:14], "sec-websocket-")) {
			continue
		}
		for i := 0; i < len(h.Value); i++ {
			if h.Value[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}
