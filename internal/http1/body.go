package http1

import (
	"bufio"
	"bytes"
	"io"

	"gowsgi/internal/ascii"
)

// NewBodyReader returns a reader of req's body, which follows req's head in br.
//
// For a Content-Length body it yields exactly ContentLength bytes and reports
// io.ErrUnexpectedEOF if the stream ends first. For a chunked body it decodes the chunked
// coding strictly (RFC 9112 §7.1): hexadecimal sizes without sign, prefix or whitespace,
// chunk extensions checked against the RFC grammar, chunk lines of at most
// lim.MaxChunkLineBytes, CRLF after every chunk's data, and trailer fields validated like
// header fields (at most lim.MaxFields of at most lim.MaxFieldBytes each; framing, routing,
// authentication and connection fields are refused). A decoding error is an *Error with
// Status 400 and the connection must be closed; a stream that ends early, including after the
// last chunk but before the final CRLF, gives io.ErrUnexpectedEOF. Once the body has been read
// to io.EOF, br is positioned at the next request.
//
// The reader of a chunked body also has a method Trailers() []Header, which returns the
// trailer fields once the body has been read to io.EOF. Without a body the reader returns
// io.EOF at once.
func NewBodyReader(br *bufio.Reader, req *Request, lim Limits) io.Reader {
	switch {
	case req.Chunked:
		return &chunkedReader{br: br, lim: lim.withDefaults()}
	case req.ContentLength > 0:
		return &lengthReader{br: br, left: req.ContentLength}
	}
	return noBody{}
}

// noBody is the body of a request without one.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }

// lengthReader reads a Content-Length body.
type lengthReader struct {
	br   *bufio.Reader
	left int64
}

func (r *lengthReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.left -= int64(n)
	switch {
	case err == io.EOF && r.left > 0:
		err = io.ErrUnexpectedEOF
	case err == nil && r.left == 0:
		err = io.EOF
	}
	return n, err
}

// States of a chunkedReader.
const (
	csSize    = iota // expecting a chunk-size line
	csData           // inside chunk data
	csDataEnd        // expecting the CRLF after chunk data
	csTrailer        // expecting a trailer field or the final CRLF
	csDone           // the body has ended
)

// chunkedReader decodes a chunked body.
type chunkedReader struct {
	br       *bufio.Reader
	lim      Limits
	state    int
	left     int64 // data bytes left in the current chunk
	err      error // sticky: io.EOF after the body, or the error that ended it
	scratch  []byte
	trailers []Header
}

// Trailers returns the trailer fields of the body, in wire order, once the body has been read
// to io.EOF.
func (cr *chunkedReader) Trailers() []Header { return cr.trailers }

func (cr *chunkedReader) Read(p []byte) (n int, err error) {
	// Once some data is in p, stop before anything that would block.
	for cr.err == nil {
		switch cr.state {
		case csSize:
			if n > 0 && !cr.lineBuffered() {
				return n, nil
			}
			cr.err = cr.readSize()
		case csData:
			if len(p) == 0 || n > 0 && cr.br.Buffered() == 0 {
				return n, nil
			}
			q := p
			if int64(len(q)) > cr.left {
				q = q[:cr.left]
			}
			m, err := cr.br.Read(q)
			n += m
			p = p[m:]
			cr.left -= int64(m)
			if cr.left == 0 {
				cr.state = csDataEnd
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				cr.err = err
			}
		case csDataEnd:
			if n > 0 && cr.br.Buffered() < 2 {
				return n, nil
			}
			cr.err = cr.readDataEnd()
		case csTrailer:
			if n > 0 && !cr.lineBuffered() {
				return n, nil
			}
			cr.err = cr.readTrailer()
		case csDone:
			cr.err = io.EOF
		}
	}
	return n, cr.err
}

// lineBuffered reports whether a whole line is already in br's buffer.
func (cr *chunkedReader) lineBuffered() bool {
	b, _ := cr.br.Peek(cr.br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine reads one line of at most max bytes including its CRLF and returns it without the
// CRLF. The result is valid until the next read from br.
func (cr *chunkedReader) readLine(max int, tooLong string) ([]byte, error) {
	line, err := cr.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull { // longer than br's buffer: gather it, up to max
		cr.scratch = append(cr.scratch[:0], line...)
		for err == bufio.ErrBufferFull && len(cr.scratch) < max {
			line, err = cr.br.ReadSlice('\n')
			cr.scratch = append(cr.scratch, line...)
		}
		line = cr.scratch
	}
	if len(line) > max || err == bufio.ErrBufferFull {
		return nil, badRequest(tooLong)
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, badRequest("chunked line not terminated by CRLF")
	}
	return line[:n-2], nil
}

func (cr *chunkedReader) readSize() error {
	line, err := cr.readLine(cr.lim.MaxChunkLineBytes, "chunk size line too long")
	if err != nil {
		return err
	}
	size, err := parseChunkLine(line)
	if err != nil {
		return err
	}
	cr.left = size
	if size == 0 {
		cr.state = csTrailer
	} else {
		cr.state = csData
	}
	return nil
}

func (cr *chunkedReader) readDataEnd() error {
	b, err := cr.br.Peek(2)
	if len(b) == 2 {
		if b[0] != '\r' || b[1] != '\n' {
			return badRequest("chunk data not followed by CRLF")
		}
		_, _ = cr.br.Discard(2)
		cr.state = csSize
		return nil
	}
	if len(b) == 1 && b[0] != '\r' {
		return badRequest("chunk data not followed by CRLF")
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (cr *chunkedReader) readTrailer() error {
	line, err := cr.readLine(cr.lim.MaxFieldBytes, "trailer field too long")
	if err != nil {
		return err
	}
	if len(line) == 0 {
		cr.state = csDone
		return nil
	}
	if len(cr.trailers) >= cr.lim.MaxFields {
		return badRequest("too many trailer fields")
	}
	if line[0] == ' ' || line[0] == '\t' {
		return badRequest("obsolete line folding in trailer")
	}
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return badRequest("trailer field without colon")
	}
	if !isToken(line[:c]) {
		return badRequest("invalid trailer field name")
	}
	s := string(line)
	name := s[:c]
	value, ok := fieldValue(s[c+1:])
	if !ok {
		return badRequest("invalid character in trailer field value")
	}
	if forbiddenTrailer(name) {
		return badRequest("forbidden trailer field " + name)
	}
	cr.trailers = append(cr.trailers, Header{Name: name, Value: value})
	return nil
}

// forbiddenTrailers lists the fields a trailer may not carry (RFC 9110 §6.5.1): message
// framing, routing, connection control, request modifiers and authentication, which a
// recipient could otherwise be tricked into applying after the head was checked.
var forbiddenTrailers = []string{
	"transfer-encoding", "content-length", "host", "trailer", "te", "connection", "keep-alive",
	"proxy-connection", "upgrade", "expect", "max-forwards", "range", "if-match",
	"if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "authorization",
	"proxy-authorization", "cookie", "content-encoding", "content-range", "cache-control",
	"pragma",
}

func forbiddenTrailer(name string) bool {
	for _, f := range forbiddenTrailers {
		if ascii.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// parseChunkLine parses chunk-size [ chunk-ext ] (RFC 9112 §7.1.1):
//
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-val = token / quoted-string
//
// Whitespace after the size is allowed only before a ';'.
func parseChunkLine(line []byte) (int64, error) {
	var size int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if size > (1<<63-1)>>4 {
			return 0, badRequest("chunk size too large")
		}
		size = size<<4 | d
	}
	if i == 0 {
		return 0, badRequest("invalid chunk size")
	}
	if err := checkChunkExt(line[i:]); err != nil {
		return 0, err
	}
	return size, nil
}

func skipWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func checkChunkExt(ext []byte) error {
	for len(ext) > 0 {
		ext = skipWS(ext)
		if len(ext) == 0 || ext[0] != ';' {
			return badRequest("invalid chunk size or extension")
		}
		ext = skipWS(ext[1:])
		n := tokenLen(ext)
		if n == 0 {
			return badRequest("invalid chunk extension name")
		}
		ext = ext[n:]
		rest := skipWS(ext)
		if len(rest) == 0 || rest[0] != '=' {
			continue
		}
		ext = skipWS(rest[1:])
		if len(ext) > 0 && ext[0] == '"' {
			n = quotedLen(ext)
		} else {
			n = tokenLen(ext)
		}
		if n == 0 {
			return badRequest("invalid chunk extension value")
		}
		ext = ext[n:]
	}
	return nil
}

// quotedLen returns the length of the quoted-string at the start of b (which begins with '"'),
// or 0 if it is not one.
func quotedLen(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
			if i+1 >= len(b) || chars[b[i+1]]&cValue == 0 {
				return 0
			}
			i++
		case chars[c]&cQdtext == 0:
			return 0
		}
	}
	return 0
}
