package worker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gowsgi/internal/frame"
	"gowsgi/internal/pybridge"
)

// slot is one Python thread and its two pipes. While the app runs inside a cgo call, the thread
// cannot return to Go, so what it must say meanwhile — write() data, "I need more body" — goes
// through the up pipe to the slot's companion goroutine, and body bytes come back on the body
// pipe (shim.h describes the messages). The C ends are blocking and used with the GIL released.
type slot struct {
	w *worker

	upR   *os.File // companion reads; non-blocking, in Go's poller
	upW   int      // C writes
	bodyR int      // C reads
	bodyW *os.File // companion writes; non-blocking

	efd int // the thread sleeps on it while idle (runq)

	claimed []claim // share's: the shared buffers holding a chunk

	// runq's, under its mu: when the thread took its request, and its calls' running average.
	took, avgCall time.Duration

	// The companion enlarged the body pipe, the up pipe (see growPipe).
	bodyPipeGrown, upPipeGrown bool

	cur atomic.Pointer[task] // the task the thread is running, for the companion
	th  atomic.Pointer[pybridge.Thread]

	companion sync.WaitGroup
}

func pipe(goReads bool) (goEnd *os.File, cEnd int, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, -1, fmt.Errorf("pipe: %w", err)
	}
	g, c := p[1], p[0]
	if goReads {
		g, c = p[0], p[1]
	}
	if err := syscall.SetNonblock(g, true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, -1, fmt.Errorf("pipe: %w", err)
	}
	return os.NewFile(uintptr(g), "pipe"), c, nil
}

func newSlot(w *worker) (*slot, error) {
	upR, upW, err := pipe(true)
	if err != nil {
		return nil, err
	}
	bodyW, bodyR, err := pipe(false)
	if err != nil {
		upR.Close()
		syscall.Close(upW)
		return nil, err
	}
	efd, err := frame.NewEventFD(false)
	if err != nil {
		upR.Close()
		syscall.Close(upW)
		bodyW.Close()
		syscall.Close(bodyR)
		return nil, err
	}
	s := &slot{w: w, upR: upR, upW: upW, bodyR: bodyR, bodyW: bodyW, efd: efd}
	s.companion.Add(1)
	go s.companionLoop()
	return s, nil
}

// stop ends the companion once the thread is done with the pipes.
func (s *slot) stop() {
	syscall.Close(s.upW) // the companion sees EOF
	s.companion.Wait()
	s.upR.Close()
	s.bodyW.Close()
	syscall.Close(s.bodyR)
	syscall.Close(s.efd)
}

// run is the Python thread: it takes requests from the worker's queue itself and writes its
// frames itself, so no goroutine hand-off sits between the frame reader and Python
// (design.md §0).
func (s *slot) run(started chan<- error) {
	defer s.w.threads.Done()
	runtime.LockOSThread() // never unlocked: the thread state lives and dies with this thread
	th, err := pybridge.NewThread()
	started <- err
	if err != nil {
		return
	}
	s.th.Store(th)
	for {
		t, ok := s.w.queue.take(s)
		if !ok {
			return
		}
		s.serve(th, t)
		s.w.queue.finished(s)
	}
}

func (s *slot) serve(th *pybridge.Thread, t *task) {
	s.cur.Store(t)
	defer s.cur.Store(nil)
	defer s.w.forget(t.id)

	res := th.Call(uint64(t.id), t.env, t.body, t.bodyEnd, s.upW, s.bodyR)
	t.release() // Python has its own copies now
	if res.HeadSent {
		<-t.synced // everything write() sent is on its way, in order, before what follows
	}
	switch res.Kind {
	case pybridge.Error:
		s.finishError(t, res.Err)
	case pybridge.File:
		s.sendFile(t, res)
	default:
		s.stream(th, t, res)
	}
	// close() tells the app the response is done, and it may act on that: the response must
	// be in the ring by then, or a crash in another request could still lose it.
	_ = s.w.out.Sync() // a dead front ends the reader
	th.Close()
}

// finishError ends a stream whose app failed: a 500 when nothing was sent yet, else an abort.
func (s *slot) finishError(t *task, reason string) {
	t.mu.Lock()
	sent := t.headSent
	t.mu.Unlock()
	if sent {
		s.send(frame.AppendHeader(nil, frame.End, frame.FlagAbort, t.id, 0))
		return
	}
	s.send(appendError500(nil, t.id))
}

// send queues frames from the companion goroutine.
func (s *slot) send(b []byte) {
	// A write error means the front is gone; the read loop notices and the process exits.
	_ = s.w.out.Send(b)
}

// stream sends the head and the chunks of an iterable body.
func (s *slot) stream(th *pybridge.Thread, t *task, res pybridge.Result) {
	var buf []byte
	if !res.HeadSent {
		code, head, err := checkHead(res.Head)
		if err != nil {
			s.w.log.Error(fmt.Sprintf("Invalid response from the application: %s", err))
			s.unhold(res)
			s.send(appendError500(nil, t.id))
			return
		}
		buf = frame.AppendHeadFrame(buf, t.id, code, res.Total, head)
		t.mu.Lock()
		t.headSent = true
		t.mu.Unlock()
	} else if s.failedWrite(t) {
		s.unhold(res)
		return
	}
	for {
		if len(res.Data) > 0 && !t.acquire(len(res.Data), s.efd) {
			s.unhold(res)
			break // cancelled: the client is gone
		}
		done := res.Kind == pybridge.Done
		if res.Hold >= 0 {
			// No copy: the front writes the client from the Python object (frame.SharedChunks).
			hold, off, n := res.Hold, res.HoldOff, len(res.Data)
			_ = s.w.out.SendData(func(dst []byte) []byte { // a dead front ends the reader
				return frame.AppendDataHeld(append(dst, buf...), t.id, hold, off, n)
			}, t.id, nil, done)
			s.w.sweep.kick()
		} else {
			// One copy, from the Python bytes into shared buffers, or into the ring for what
			// does not go there (see SendData); res.Data stays valid until the next call on th.
			rest := s.share(t, res.Data)
			_ = s.w.out.SendData(func(dst []byte) []byte { // a dead front ends the reader
				dst = append(dst, buf...)
				for _, c := range s.claimed {
					dst = frame.AppendDataShared(dst, t.id, c.i, c.n)
				}
				return dst
			}, t.id, rest, done)
		}
		buf = buf[:0]
		if done {
			return
		}
		if t.isCancelled() {
			break
		}
		res = th.Next()
		if res.Kind == pybridge.Error {
			s.send(frame.AppendHeader(buf, frame.End, frame.FlagAbort, t.id, 0))
			return
		}
	}
	s.send(frame.AppendHeader(buf, frame.End, frame.FlagAbort, t.id, 0))
}

// unhold lets go of res's hold on a chunk that will not be sent: the next phase call on any
// thread drops the reference.
func (s *slot) unhold(res pybridge.Result) {
	if res.Hold >= 0 {
		s.w.chunks.ReleaseHeld(res.Hold)
	}
}

// failedWrite finishes a stream whose write() head was invalid with a 500 and reports whether
// it did.
func (s *slot) failedWrite(t *task) bool {
	t.mu.Lock()
	failed, msg, sent := t.failed, t.failMsg, t.headSent
	t.mu.Unlock()
	if !failed {
		return false
	}
	s.w.log.Error(fmt.Sprintf("Invalid response from the application: %s", msg))
	if sent {
		s.send(frame.AppendHeader(nil, frame.End, frame.FlagAbort, t.id, 0))
	} else {
		s.send(appendError500(nil, t.id))
	}
	return true
}

func (s *slot) sendFile(t *task, res pybridge.Result) {
	defer syscall.Close(res.FD)
	code, head, err := checkHead(res.Head)
	if err != nil {
		s.w.log.Error(fmt.Sprintf("Invalid response from the application: %s", err))
		s.send(appendError500(nil, t.id))
		return
	}
	s.send(frame.AppendHeadFrame(nil, t.id, code, res.FileLen, head))
	if err := s.w.out.SendFD(frame.AppendFileFrame(nil, t.id, res.FileOff, res.FileLen), res.FD); err != nil {
		return // the front is gone
	}
	s.send(frame.AppendHeader(nil, frame.End, 0, t.id, 0))
}

// claim is a shared buffer holding n bytes of a chunk.
type claim struct{ i, n int }

// sharedMin is the least chunk that goes through the shared buffers: smaller ones cost little
// to copy into the ring, and coalesce there with the frames around them.
const sharedMin = 16 << 10

// sharedWait bounds how long a chunk waits for a shared buffer before it takes the ring. The
// front frees one every few tens of microseconds under a streaming load; a longer wait means
// slow clients hold them all, and a response must not wait on other clients for long.
const sharedWait = 2 * time.Millisecond

// claimShared claims a shared buffer for a chunk of t's body, waiting for one unless t
// already waited in vain; -1 sends the chunk through the ring.
func (s *slot) claimShared(t *task) int {
	if i := s.w.chunks.Claim(); i >= 0 || t.spill.Load() {
		return i
	}
	i := s.w.chunks.ClaimWait(sharedWait)
	if i < 0 {
		t.spill.Store(true)
	}
	return i
}

// share copies the leading pieces of a big chunk of t's body into free shared buffers,
// recording them in s.claimed, and returns the rest, which goes through the ring. Only the
// first piece waits for a buffer: a thread holding buffers it has not sent yet must not wait
// for others, which could be the ones a second such thread holds.
func (s *slot) share(t *task, p []byte) []byte {
	s.claimed = s.claimed[:0]
	if len(p) < sharedMin {
		return p
	}
	for len(p) > 0 {
		var i int
		if len(s.claimed) == 0 {
			i = s.claimShared(t)
		} else {
			i = s.w.chunks.Claim()
		}
		if i < 0 {
			break
		}
		n := copy(s.w.chunks.Buffer(i), p)
		s.claimed = append(s.claimed, claim{i, n})
		p = p[n:]
		if len(p) < sharedMin {
			break // a small tail: the ring
		}
	}
	return p
}

// companionLoop serves the thread's up pipe: write() output and requests for more body.
func (s *slot) companionLoop() {
	defer s.companion.Done()
	r := bufio.NewReaderSize(s.upR, 64<<10)
	var hdr [4]byte
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return
		}
		t := s.cur.Load()
		switch kind {
		case pybridge.UpSync:
			if t != nil {
				t.synced <- struct{}{}
			}
			continue
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		switch kind {
		case pybridge.UpWant:
			s.feedBody(t, int(n))
		case pybridge.UpHead:
			head := make([]byte, n)
			if _, err := io.ReadFull(r, head); err != nil {
				return
			}
			s.writeHead(t, head)
		case pybridge.UpData:
			if err := s.forwardData(t, r, int64(n)); err != nil {
				return
			}
		default:
			s.w.log.Error("worker: corrupt up pipe", "byte", kind)
			return
		}
	}
}

// feedBody answers one read of wsgi.input: ask the front for at most n bytes and pass what
// comes back to the thread.
func (s *slot) feedBody(t *task, n int) {
	if t == nil {
		s.replyBody(nil, true)
		return
	}
	if !s.bodyPipeGrown {
		s.bodyPipeGrown = true
		growPipe(s.bodyW, pipeSize)
	}
	if !t.bodyPending() {
		s.send(frame.AppendU32(nil, frame.WantBody, t.id, uint32(n)))
	}
	// At the end of the body p is empty, which the thread reads as EOF.
	p, ok := t.takeBody(n)
	s.replyBody(p, ok)
}

// pipeSize is the capacity a thread's body pipe gets once it carries a request body past the
// bytes that came with the request, and its up pipe once it carries write() output. The front
// sends up to 256 KiB of body per read (bodyAhead), which crossed the default 64 KiB pipe in
// four rounds of write and read, each a thread switch: a 100 MB upload took 0.32-0.37 s and
// 0.27-0.29 s with 512 KiB. Only threads that use a pipe grow it: pipe capacity counts
// against the user's pipe-user-pages-soft limit.
const pipeSize = 512 << 10

// growPipe enlarges the pipe f is an end of; where the kernel refuses (the user's limit), the
// default capacity only costs more rounds.
func growPipe(f *os.File, size int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		const fSetPipeSz = 1031 // F_SETPIPE_SZ, not in package syscall
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, uintptr(size))
	})
}

// replyBody answers the thread's body read: p (empty at the end of the body), or an abort
// when !ok.
func (s *slot) replyBody(p []byte, ok bool) {
	var hdr [4]byte
	v := uint32(len(p))
	if !ok {
		v = pybridge.BodyAbort
	}
	binary.LittleEndian.PutUint32(hdr[:], v)
	// The thread is blocked reading this pipe, so these writes cannot wait long.
	if _, err := s.bodyW.Write(hdr[:]); err != nil {
		s.w.log.Error("worker: body pipe", "err", err)
		return
	}
	if _, err := s.bodyW.Write(p); err != nil {
		s.w.log.Error("worker: body pipe", "err", err)
	}
}

func (s *slot) writeHead(t *task, packed []byte) {
	if t == nil {
		return
	}
	code, head, err := checkHead(packed)
	if err != nil {
		t.mu.Lock()
		t.failed, t.failMsg = true, err.Error()
		t.mu.Unlock()
		return
	}
	s.send(frame.AppendHeadFrame(nil, t.id, code, -1, head))
	t.mu.Lock()
	t.headSent = true
	t.mu.Unlock()
}

// forwardData passes n bytes of write() output to the front, within the stream's credit, or
// discards them when the stream failed or was cancelled (the thread must never block forever).
func (s *slot) forwardData(t *task, r *bufio.Reader, n int64) error {
	if !s.upPipeGrown {
		s.upPipeGrown = true
		growPipe(s.upR, pipeSize)
	}
	for n > 0 {
		// A big piece goes into a shared buffer straight from the pipe; the rest is read
		// into a frame.
		k := min(n, frame.MaxData)
		i := -1
		if k >= sharedMin {
			i = s.claimShared(t) // the earlier pieces are sent: it holds no buffer
		}
		var buf []byte
		if i >= 0 {
			k = min(k, int64(s.w.chunks.Size()))
			buf = s.w.chunks.Buffer(i)[:k]
		} else {
			buf = make([]byte, k)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			if i >= 0 {
				s.w.chunks.Release(i)
			}
			return err
		}
		n -= k
		if !s.mayForward(t, len(buf)) {
			if i >= 0 {
				s.w.chunks.Release(i)
			}
			continue
		}
		_ = s.w.out.SendFunc(func(dst []byte) []byte { // a dead front ends the reader
			if i >= 0 {
				return frame.AppendDataShared(dst, t.id, i, len(buf))
			}
			return frame.Append(dst, frame.Data, 0, t.id, buf)
		})
	}
	return nil
}

// mayForward reports whether n bytes of write() output go to the front: the task is live, its
// head went out, and it has credit (waited for).
func (s *slot) mayForward(t *task, n int) bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	skip := t.failed || !t.headSent
	t.mu.Unlock()
	return !skip && t.acquire(n, -1)
}
