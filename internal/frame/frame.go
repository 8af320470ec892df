// Package frame is the binary protocol between the front and its workers: frame kinds, their
// encoding, and a coalescing writer. Both processes import it so they cannot drift apart. It holds
// no I/O policy: who sends what, and when, is the business of the front and the worker.
//
// A frame is a 10-byte header — payload length (u32 LE), kind (u8), flags (u8), stream id (u32 LE) —
// followed by the payload. Stream ids are chosen by the front, one per request; id 0 is the
// connection itself (READY, HEARTBEAT, SHUTDOWN).
package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the protocol version a worker announces in its READY frame. The front refuses a
// worker that speaks another version (a binary upgrade can briefly mix two builds).
const Version = 7

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 10

// MaxPayload bounds one frame's payload; larger bodies are split by the sender.
const MaxPayload = 1 << 22

// MaxData is the largest Data frame a worker sends; bigger chunks are split.
const MaxData = 256 << 10

// Kind identifies what a frame carries.
type Kind uint8

// Frames sent by the front to a worker.
const (
	// Request starts a stream: payload is u32 environ length, the packed environ (see package
	// wsgi), then the first body bytes. FlagEnd means those bytes are the whole body.
	Request Kind = 1 + iota
	// Body carries request body bytes the worker asked for; FlagEnd marks the last of them.
	Body
	// Credit grants the worker u32 more bytes of response body for the stream.
	Credit
	// Cancel tells the worker the client is gone: stop iterating and call close().
	Cancel
	// Interrupt asks the worker to raise an exception in the thread running the stream.
	Interrupt
	// Shutdown asks the worker to finish what it executes, finalize Python and exit.
	Shutdown
	// Recall asks the worker to hand back (Requeue) the requests no thread has taken.
	Recall
)

// Frames sent by a worker to the front.
const (
	// Ready announces a worker: u16 version, u32 threads, u32 pid, then a UTF-8 description
	// of its Python.
	Ready Kind = 64 + iota
	// WantBody asks for up to u32 more request body bytes (the first one also triggers
	// "100 Continue").
	WantBody
	// Head carries the response status and headers (see AppendHead) and an i64 total body
	// length, -1 when unknown.
	Head
	// Data carries response body bytes.
	Data
	// File carries i64 offset and i64 length; the file descriptor travels as SCM_RIGHTS with it.
	File
	// End finishes a stream; the worker's thread is free again. FlagAbort means the response
	// broke after its head was sent and the connection must be closed.
	End
	// Heartbeat tells the front the worker is alive.
	Heartbeat
	// DataShared carries response body bytes in a buffer of the worker's SharedChunks: u32
	// buffer index and u32 length. The front frees the buffer once it has written them.
	DataShared
	// Requeue hands back a request that no thread took (they were all held up): the front
	// dispatches it again, and the worker's count of taken requests includes it.
	Requeue
	// DataHeld carries response body bytes in the worker's arena (see SharedChunks): u32
	// hold, u32 offset and u32 length. The front clears the hold once it has written them.
	DataHeld
)

// Flags modify a frame.
const (
	FlagEnd   uint8 = 1 << 0
	FlagAbort uint8 = 1 << 1
)

func (k Kind) String() string {
	switch k {
	case Request:
		return "REQUEST"
	case Body:
		return "BODY"
	case Credit:
		return "CREDIT"
	case Cancel:
		return "CANCEL"
	case Interrupt:
		return "INTERRUPT"
	case Shutdown:
		return "SHUTDOWN"
	case Recall:
		return "RECALL"
	case Ready:
		return "READY"
	case WantBody:
		return "WANT_BODY"
	case Head:
		return "HEAD"
	case Data:
		return "DATA"
	case File:
		return "FILE"
	case End:
		return "END"
	case Heartbeat:
		return "HEARTBEAT"
	case DataShared:
		return "DATA_SHARED"
	case Requeue:
		return "REQUEUE"
	case DataHeld:
		return "DATA_HELD"
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// Frame is one decoded frame. Payload aliases the reader's buffer and is valid only until the
// next call to Reader.Next, unless it came from Reader.Alloc.
type Frame struct {
	Kind    Kind
	Flags   uint8
	Stream  uint32
	Payload []byte
}

// AppendHeader appends a frame header to dst.
func AppendHeader(dst []byte, k Kind, flags uint8, stream uint32, payloadLen int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(payloadLen))
	dst = append(dst, byte(k), flags)
	return binary.LittleEndian.AppendUint32(dst, stream)
}

// Append appends a whole frame to dst.
func Append(dst []byte, k Kind, flags uint8, stream uint32, payload []byte) []byte {
	dst = AppendHeader(dst, k, flags, stream, len(payload))
	return append(dst, payload...)
}

// AppendData appends p as Data frames of stream, split at MaxData.
func AppendData(dst []byte, stream uint32, p []byte) []byte {
	for len(p) > 0 {
		n := min(len(p), MaxData)
		dst = Append(dst, Data, 0, stream, p[:n])
		p = p[n:]
	}
	return dst
}

// AppendU32 appends a frame whose payload is one u32, as Credit and WantBody use.
func AppendU32(dst []byte, k Kind, stream uint32, v uint32) []byte {
	dst = AppendHeader(dst, k, 0, stream, 4)
	return binary.LittleEndian.AppendUint32(dst, v)
}

// ErrTooLarge reports a frame whose declared payload exceeds MaxPayload.
var ErrTooLarge = errors.New("frame: payload too large")

// Reader decodes frames from a buffered stream or from a Ring. It is not safe for concurrent
// use.
type Reader struct {
	in   io.Reader     // br or ring
	br   *bufio.Reader // nil when reading a ring
	ring *Ring
	buf  []byte
	hdr  [HeaderSize]byte // here rather than on the stack, where io.ReadFull would move it to the heap

	// Alloc, when set, may return a buffer of length n for the payload of a frame of kind k;
	// the payload is then read straight into it and belongs to the caller, saving a copy of
	// big body chunks. Returning nil uses the Reader's own buffer.
	Alloc func(k Kind, n int) []byte
}

// NewReader returns a Reader over br.
func NewReader(br *bufio.Reader) *Reader { return &Reader{in: br, br: br} }

// NewRingReader returns a Reader over r. It needs no buffer of its own: the ring's bytes are
// in memory already, and each is copied once, into the frame's payload. A bufio.Reader in
// between copied every byte twice and held 256 KiB of its own per ring.
func NewRingReader(r *Ring) *Reader { return &Reader{in: r, ring: r} }

// Next reads the next frame. It returns io.EOF at a clean end between frames and
// io.ErrUnexpectedEOF inside one.
func (r *Reader) Next() (Frame, error) {
	h := &r.hdr
	if _, err := io.ReadFull(r.in, h[:]); err != nil {
		return Frame{}, err
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("read frame %s: %w (%d bytes)", Kind(h[4]), ErrTooLarge, n)
	}
	f := Frame{Kind: Kind(h[4]), Flags: h[5], Stream: binary.LittleEndian.Uint32(h[6:10])}
	if n == 0 {
		return f, nil
	}
	if r.Alloc != nil {
		f.Payload = r.Alloc(f.Kind, int(n))
	}
	if f.Payload == nil {
		if cap(r.buf) < int(n) {
			r.buf = make([]byte, n, max(int(n), 64<<10))
		}
		f.Payload = r.buf[:n]
	}
	if _, err := io.ReadFull(r.in, f.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

// HasFrame reports whether a whole frame is already buffered (or published, in a ring), so
// that Next will not block. It never reads from the underlying stream itself.
func (r *Reader) HasFrame() bool {
	var h []byte
	var buffered int
	if r.ring != nil {
		buffered = r.ring.Buffered()
		if buffered < HeaderSize {
			return false
		}
		h = r.hdr[:]
		r.ring.Peek(h)
	} else {
		buffered = r.br.Buffered()
		if buffered < HeaderSize {
			return false
		}
		var err error
		if h, err = r.br.Peek(HeaderSize); err != nil {
			return false
		}
	}
	return buffered >= HeaderSize+int(binary.LittleEndian.Uint32(h[0:4]))
}

// U32 decodes a payload that is one u32.
func (f Frame) U32() (uint32, error) {
	if len(f.Payload) != 4 {
		return 0, fmt.Errorf("frame %s: payload of %d bytes, want 4", f.Kind, len(f.Payload))
	}
	return binary.LittleEndian.Uint32(f.Payload), nil
}

// BufPool recycles payload buffers for Reader.Alloc: a payload read into one is owned by
// whoever holds it, who gives it back with Put once done, so big or frequent payloads neither
// allocate nor get copied out of the reader's buffer. The zero value is ready to use.
type BufPool struct {
	// MinCap is the least capacity of a new buffer, so that one fits the next payloads of
	// about the same size; 0 makes buffers exactly as big as the payload that needed them.
	MinCap int

	pool sync.Pool // *[]byte
}

// Get returns a buffer of length n.
func (p *BufPool) Get(n int) []byte {
	bp, _ := p.pool.Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		b := make([]byte, 0, max(n, p.MinCap))
		bp = &b
	}
	return (*bp)[:n]
}

// Put gives back a buffer from Get; it must not be used afterwards.
func (p *BufPool) Put(b []byte) {
	b = b[:0]
	p.pool.Put(&b)
}
