package frame

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// Writer coalesces frames from many goroutines into few appends to a Ring the other side
// reads, and sends descriptors (only a worker sends any) through the socket. A write is then
// a copy and, if the reader sleeps, a wake-up, instead of a system call. It is safe for
// concurrent use and works in one of two modes:
//
//   - With a flusher (NewRingFlusher, the front): senders append to a pending buffer and one
//     flusher goroutine moves whatever has piled up into the ring, so the worker is woken once
//     for all the requests the front's goroutines had ready (a wake-up per send measured up to
//     1.5 µs more per echo request). Waking a goroutine is cheap in a process whose goroutines
//     are not locked to threads.
//   - Direct (NewRingWriter, the workers): the sender writes from its own thread, unless
//     another sender is writing, in which case that one writes the frames too once it is done
//     ("flat combining"). Workers send from Python threads locked to OS threads, where every
//     goroutine wake-up is a thread switch.
type Writer struct {
	ring *Ring
	file *os.File // direct mode: a blocking unix stream socket for descriptors

	// wmu serialises writes, so a frame sent with a descriptor cannot overtake frames
	// appended before it; it guards scratch.
	wmu     sync.Mutex
	scratch []byte // the frames SendData and SendTail write ahead of their data

	// mu guards the fields that follow.
	mu      sync.Mutex
	pending []byte
	writing bool   // a sender took pending and is writing it into the ring
	spare   []byte // a written buffer kept for reuse, so streaming allocates nothing
	err     error  // first write error; every later send returns it
	closed  bool

	// Flusher mode only.
	wake    chan struct{} // a send is pending; never closed, so late senders cannot panic
	quit    chan struct{} // closed by Close
	done    chan struct{}
	unwoken atomic.Bool // SendTail wrote into the ring; the flusher wakes its reader
}

// NewRingFlusher returns a Writer whose flusher writes the frames into r and wakes its reader;
// Close stops it. It sends no descriptors.
func NewRingFlusher(r *Ring) *Writer {
	w := &Writer{ring: r, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go w.flushLoop()
	return w
}

// NewRingWriter returns a direct Writer whose frames go into r; sock, a unix stream socket in
// blocking mode, carries the descriptors of SendFD.
func NewRingWriter(r *Ring, sock *os.File) *Writer {
	return &Writer{ring: r, file: sock}
}

// direct reports whether senders write themselves (no flusher).
func (w *Writer) direct() bool { return w.wake == nil }

// maxKeep bounds the buffers a Writer keeps for reuse.
const maxKeep = 4 << 20

// ErrClosed is returned by sends after Close.
var ErrClosed = errors.New("frame writer closed")

// Send sends already-encoded frames.
func (w *Writer) Send(frames []byte) error {
	return w.SendFunc(func(dst []byte) []byte { return append(dst, frames...) })
}

// SendFunc lets fn append frames directly into the pending buffer, saving a copy.
func (w *Writer) SendFunc(fn func(dst []byte) []byte) error {
	if err := w.appendFrames(fn); err != nil {
		return err
	}
	if w.direct() {
		return w.combine()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// SendNow sends frames like Send, then syncs (Sync): on a direct Writer it returns only once
// they are in the ring, so the caller may then publish what the reader must learn only after
// them.
func (w *Writer) SendNow(frames []byte) error {
	if err := w.Send(frames); err != nil {
		return err
	}
	return w.Sync()
}

// Sync returns once the frames sent before it are in the ring. A direct Writer's send may
// leave its frames to another sender that is writing (combine) and return before they are in:
// a worker thread syncs before its app learns that the response is done (close()), since a
// crash after that must not lose the response. A flusher Writer returns at once.
func (w *Writer) Sync() error {
	if !w.direct() {
		return nil
	}
	w.mu.Lock()
	done := len(w.pending) == 0 && !w.writing && w.err == nil // what was sent before is in the ring
	w.mu.Unlock()
	if done {
		return nil
	}
	return w.writeInOrder(func() error { return nil })
}

// combine writes the pending frames unless another sender holds wmu; that sender looks for
// more pending frames after letting go of wmu, so none are left behind.
func (w *Writer) combine() error {
	for w.wmu.TryLock() {
		err := w.flushLocked()
		w.wmu.Unlock()
		if err != nil {
			return err
		}
		w.mu.Lock()
		more := len(w.pending) > 0
		w.mu.Unlock()
		if !more {
			return nil
		}
	}
	return nil
}

// bigData is the least payload SendData writes from the caller's memory into the ring.
const bigData = 16 << 10

// SendData sends the frames fn appends, then data as Data frames of stream and, if end, the
// stream's End frame, in order with the other sends. A direct Writer copies a big data from
// the caller's memory into the ring once: through the pending buffer it was copied twice,
// and the buffer grew to hold the chunks of several threads (a streamed response sends some
// 64 KiB chunks this way when its thread's shared buffers are all lent), which the worker
// then kept.
func (w *Writer) SendData(fn func(dst []byte) []byte, stream uint32, data []byte, end bool) error {
	if !w.direct() || len(data) < bigData {
		return w.SendFunc(func(dst []byte) []byte {
			dst = AppendData(fn(dst), stream, data)
			if end {
				dst = AppendHeader(dst, End, 0, stream, 0)
			}
			return dst
		})
	}
	w.mu.Lock()
	err := w.refused()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.writeInOrder(func() error { return w.appendData(fn, stream, data, end) })
}

// SendTail sends the frame fn appends followed by tail, which that frame's header counts, in
// order with the other sends; fn runs once the frame's place among them is settled, as
// SendFunc's does. A flusher Writer copies a big tail from the caller's memory into the ring
// itself, after what was sent before: through the pending buffer a request's 16 KiB body was
// copied twice, and the first copy was 4 % of the front's CPU under echo load (perf). The
// flusher still wakes the reader, once for all that piled up.
func (w *Writer) SendTail(fn func(dst []byte) []byte, tail []byte) error {
	if w.direct() || len(tail) < bigData {
		return w.SendFunc(func(dst []byte) []byte { return append(fn(dst), tail...) })
	}
	w.wmu.Lock()
	err := w.writeTail(fn, tail)
	w.wmu.Unlock()
	select {
	case w.wake <- struct{}{}: // frames sent meanwhile, and the reader's wake-up
	default:
	}
	return err
}

// writeTail is SendTail's write into the ring; w.wmu must be held.
func (w *Writer) writeTail(fn func(dst []byte) []byte, tail []byte) error {
	for {
		if err := w.flushLocked(); err != nil {
			return err
		}
		w.mu.Lock()
		if err := w.refused(); err != nil {
			w.mu.Unlock()
			return err
		}
		if len(w.pending) == 0 {
			// What was sent before is in the ring, and what is sent from here on waits for
			// wmu: the frame's place is here.
			w.scratch = fn(w.scratch[:0])
			w.mu.Unlock()
			break
		}
		w.mu.Unlock() // another sender appended after the flush
	}
	err := w.ring.Append(w.scratch)
	if err == nil {
		err = w.ring.Append(tail)
	}
	if w.ring.Buffered() > len(w.ring.data)/2 {
		// Waiting for the batch only holds back writers that need the room the reader
		// makes: 64 KiB bodies, three of which fill the budget of the ring to a worker,
		// went 8 % slower with the wake-up left to the flusher.
		w.ring.Wake()
	} else {
		w.unwoken.Store(true)
	}
	if err != nil {
		err = fmt.Errorf("write frames: %w", err)
		w.fail(err)
	}
	return err
}

// wakeAfterTail wakes the ring's reader for what SendTail wrote, if it has not been woken.
func (w *Writer) wakeAfterTail() {
	if w.unwoken.Swap(false) {
		w.ring.Wake()
	}
}

// writeInOrder runs write under wmu, after what is pending (sent before), and then writes
// what other senders appended meanwhile.
func (w *Writer) writeInOrder(write func() error) error {
	w.wmu.Lock()
	err := w.flushLocked()
	if err == nil {
		err = write()
	}
	w.wmu.Unlock()
	if err != nil {
		return err
	}
	return w.combine()
}

// appendData is SendData's write into the ring; w.wmu must be held.
func (w *Writer) appendData(fn func(dst []byte) []byte, stream uint32, data []byte, end bool) error {
	w.scratch = fn(w.scratch[:0])
	err := w.ring.Append(w.scratch)
	var hdr [HeaderSize]byte
	for p := data; err == nil && len(p) > 0; {
		n := min(len(p), MaxData)
		if err = w.ring.Append(AppendHeader(hdr[:0], Data, 0, stream, n)); err == nil {
			err = w.ring.Append(p[:n])
		}
		p = p[n:]
	}
	if err == nil && end {
		err = w.ring.Append(AppendHeader(hdr[:0], End, 0, stream, 0))
	}
	w.ring.Wake()
	if err != nil {
		err = fmt.Errorf("write frames: %w", err)
		w.fail(err)
	}
	return err
}

// refused returns why sends fail: the first write error, or ErrClosed; w.mu must be held.
func (w *Writer) refused() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	return nil
}

func (w *Writer) appendFrames(fn func(dst []byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.refused(); err != nil {
		return err
	}
	if w.pending == nil {
		w.pending, w.spare = w.spare, nil
	}
	w.pending = fn(w.pending)
	return nil
}

// SendFD writes frames at once, after everything sent before, with fd sent ahead of them as
// SCM_RIGHTS (direct mode only). The caller keeps ownership of fd.
func (w *Writer) SendFD(frames []byte, fd int) error {
	if w.file == nil {
		return errors.New("send frame with descriptor: no socket")
	}
	return w.writeInOrder(func() error {
		// The descriptor goes alone through the socket, with one byte, and the frames into
		// the ring after it, so the front has the descriptor once it reads the File frame.
		err := w.sendRights(fd)
		if err == nil {
			err = w.ring.Append(frames)
			w.ring.Wake()
		}
		if err != nil {
			err = fmt.Errorf("send frame with descriptor: %w", err)
			w.fail(err)
		}
		return err
	})
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// flushLocked writes the pending buffer; w.wmu must be held.
func (w *Writer) flushLocked() error {
	w.mu.Lock()
	buf := w.pending
	err := w.err
	if err != nil || len(buf) == 0 {
		// Leave an empty buffer where it is: taking it would drop it, and the next
		// sender would allocate a new one.
		w.mu.Unlock()
		return err
	}
	w.pending = nil
	w.writing = true
	w.mu.Unlock()
	err = w.ring.Append(buf)
	w.ring.Wake()
	if err != nil {
		w.mu.Lock()
		w.writing = false
		w.mu.Unlock()
		err = fmt.Errorf("write frames: %w", err)
		w.fail(err)
		return err
	}
	// Keep the buffer for reuse: allocating (and faulting in) a fresh one for every batch of
	// streamed chunks costs more than the copy.
	w.mu.Lock()
	w.writing = false
	if cap(buf) <= maxKeep {
		if w.pending == nil {
			w.pending = buf[:0]
		} else if w.spare == nil {
			w.spare = buf[:0]
		}
	}
	w.mu.Unlock()
	return nil
}

// sendRights sends fd through the socket, attached to one byte.
func (w *Writer) sendRights(fd int) error {
	for {
		// A signal (the Go runtime preempts with SIGURG) may abort the send before it starts.
		_, err := syscall.SendmsgN(int(w.file.Fd()), []byte{0}, syscall.UnixRights(fd), nil, 0)
		if err != syscall.EINTR {
			return err
		}
	}
}

func (w *Writer) flushLoop() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
		case <-w.quit:
			w.wmu.Lock()
			_ = w.flushLocked() // the error is kept in w.err for Err
			w.wmu.Unlock()
			w.wakeAfterTail()
			return
		}
		// Let senders that are runnable append before the write, so that one write carries
		// many frames even on a single core (a channel send runs this goroutine at once).
		runtime.Gosched()
		w.wmu.Lock()
		err := w.flushLocked()
		w.wmu.Unlock()
		w.wakeAfterTail()
		if err != nil {
			return
		}
	}
}

// Close flushes what is pending and stops the flusher, waiting for it. It does not close the
// socket.
func (w *Writer) Close() error {
	w.mu.Lock()
	was := w.closed
	w.closed = true
	w.mu.Unlock()
	if w.direct() {
		w.wmu.Lock()
		_ = w.flushLocked() // the error is kept in w.err
		w.wmu.Unlock()
		return w.Err()
	}
	if was {
		<-w.done
		return w.Err()
	}
	close(w.quit)
	<-w.done
	return w.Err()
}

// Err returns the first write error.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// FDReader reads a unix stream socket and collects the descriptors that arrive as SCM_RIGHTS,
// so that a File frame can take the descriptor that travelled with it. It is not safe for
// concurrent use.
type FDReader struct {
	conn *net.UnixConn
	oob  []byte
	fds  []int
}

// NewFDReader returns an FDReader over conn.
func NewFDReader(conn *net.UnixConn) *FDReader {
	return &FDReader{conn: conn, oob: make([]byte, syscall.CmsgSpace(4*8))}
}

// Read implements io.Reader.
func (r *FDReader) Read(p []byte) (int, error) {
	n, oobn, _, _, err := r.conn.ReadMsgUnix(p, r.oob)
	if n < 0 {
		n = 0 // ReadMsgUnix reports -1 with its error; io.Reader must not
	}
	if oobn > 0 {
		msgs, perr := syscall.ParseSocketControlMessage(r.oob[:oobn])
		if perr == nil {
			for _, m := range msgs {
				fds, ferr := syscall.ParseUnixRights(&m)
				if ferr == nil {
					r.fds = append(r.fds, fds...)
				}
			}
		}
	}
	return n, err
}

// TakeFD returns the oldest received descriptor not yet taken, or -1.
func (r *FDReader) TakeFD() int {
	if len(r.fds) == 0 {
		return -1
	}
	fd := r.fds[0]
	r.fds = r.fds[1:]
	return fd
}

// CloseFDs closes every descriptor received and not taken.
func (r *FDReader) CloseFDs() {
	for _, fd := range r.fds {
		syscall.Close(fd)
	}
	r.fds = nil
}
