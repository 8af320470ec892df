package frame

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Ring carries a byte stream between the front and a worker through memory both map: one side
// appends frames, the other reads them. gowsgi has one each way per worker. Compared with the
// socket it saves the system call of each write and read: a write is a copy, plus a wake-up
// only when the reader sleeps. Bytes published survive the writer: when a worker dies, the
// front reads what it appended and then the end. `make bench-hop` measured the hop both ways
// (docs/benchmarks.md).
//
// One goroutine writes at a time (the frame.Writer serialises its writes) and one reads at a
// time; positions only grow; the data area's size is a power of two. Either side sleeps on an
// eventfd of its own and says so through the shared header, so wake-ups follow a Dekker pair:
// the sleeper stores its mark and then looks at the other side's position once more before
// blocking; the other side stores its position and then looks at the mark. With sequentially
// consistent atomics one of them sees the other's store, and no wake-up is lost.
//
// A worker may have several threads that sleep waiting for the front's frames (a leader and
// the reader, see worker.runq), so readers count themselves in readerSleeps, and the writer
// writes the reader's eventfd when the count is not zero and the eventfd is not already
// written (kicked): the eventfd stays set until a sleeper wakes, reads it, and clears kicked,
// so every sleeper sees it, the way every poller of a socket sees its data. The writer, alone,
// uses a plain flag. A wake-up no longer needed leaves an eventfd set, and the next sleep
// returns at once and looks again.
type Ring struct {
	mem  []byte
	hdr  *ringHeader
	data []byte
	mask uint64

	readerWake int // eventfd the readers sleep on
	writerWake int // eventfd the writer sleeps on when the ring is full

	// frontFile is, on the front, the eventfd the front sleeps on (the reader's of a ring to
	// the front, the writer's of a ring to a worker), read through Go's poller; nil on the side
	// that mapped the ring, which waits in poll(2) and owns bare descriptors.
	frontFile *os.File
	frontFD   int

	// Mapped side only: peer is a socket whose end (or any byte) means the other side is gone,
	// watched by the reader's sleeps (WatchPeer); -1 if none.
	peer     int
	peerGone atomic.Bool
}

type ringHeader struct {
	magic uint32
	size  uint32
	_     [56]byte
	tail  atomic.Uint64 // bytes ever written: the writer's
	_     [56]byte
	head  atomic.Uint64 // bytes ever read: the reader's
	_     [56]byte

	readerSleeps atomic.Uint32 // readers asleep or about to be
	kicked       atomic.Uint32 // the readers' eventfd was written since a sleeper last read it
	writerSleeps atomic.Uint32
	closed       atomic.Uint32 // no more bytes will come: the writer is gone
}

const (
	ringMagic      = 0x676e6972 // "ring"
	ringHeaderSize = 4096       // a page: the data area starts page-aligned
)

// ErrRingClosed is returned by Append once the ring is closed.
var ErrRingClosed = errors.New("ring closed")

// NewRing creates a ring of size bytes (a power of two) on the front, for frames to a worker
// (toWorker) or from one, and returns it with the files to pass to the worker: the memory and
// copies of the two eventfds. The caller closes the three once the worker has them, and then
// calls Started.
func NewRing(size int, toWorker bool) (r *Ring, mem, readerWake, writerWake *os.File, err error) {
	if size < 4096 || size > 1<<30 || size&(size-1) != 0 {
		return nil, nil, nil, nil, fmt.Errorf("ring of %d bytes: want a power of two from 4 KiB to 1 GiB", size)
	}
	f, err := SharedFile("gowsgi-ring")
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("ring: %w", err)
	}
	r = &Ring{readerWake: -1, writerWake: -1, frontFD: -1, peer: -1}
	fail := func(err error) (*Ring, *os.File, *os.File, *os.File, error) {
		f.Close()
		for _, c := range []*os.File{readerWake, writerWake} {
			if c != nil {
				c.Close()
			}
		}
		r.closeFDs()
		if r.mem != nil {
			_ = syscall.Munmap(r.mem)
		}
		return nil, nil, nil, nil, err
	}
	if err := f.Truncate(int64(ringHeaderSize + size)); err != nil {
		return fail(fmt.Errorf("ring: %w", err))
	}
	// Both non-blocking: the front's goes through the poller, and the worker drains its own
	// after poll(2) says it is set, possibly after another thread did.
	if r.readerWake, err = NewEventFD(true); err != nil {
		return fail(err)
	}
	if r.writerWake, err = NewEventFD(true); err != nil {
		return fail(err)
	}
	r.frontFD = r.readerWake
	if toWorker {
		r.frontFD = r.writerWake
	}
	r.frontFile = os.NewFile(uintptr(r.frontFD), "gowsgi-ring-wake") // pollable: non-blocking
	// The worker gets copies, so that os/exec never takes the descriptor of frontFile
	// (os.File.Fd would make it blocking for good; see Started).
	dup := func(fd int, name string) (*os.File, error) {
		d, err := syscall.Dup(fd)
		if err != nil {
			return nil, fmt.Errorf("ring: %w", err)
		}
		syscall.CloseOnExec(d)
		return os.NewFile(uintptr(d), name), nil
	}
	if readerWake, err = dup(r.readerWake, "gowsgi-ring-reader"); err != nil {
		return fail(err)
	}
	if writerWake, err = dup(r.writerWake, "gowsgi-ring-writer"); err != nil {
		return fail(err)
	}
	m, err := mapRing(int(f.Fd()), ringHeaderSize+size)
	if err != nil {
		return fail(err)
	}
	r.mem, r.hdr = m.mem, m.hdr
	r.hdr.magic, r.hdr.size = ringMagic, uint32(size)
	r.setLayout(size)
	return r, f, readerWake, writerWake, nil
}

// Started makes the front's eventfd non-blocking again once the worker has its copy: the
// copy shares its open file description, which os/exec made blocking (os.File.Fd does), and
// the front waits through Go's poller.
func (r *Ring) Started() error {
	if err := syscall.SetNonblock(r.frontFD, true); err != nil {
		return fmt.Errorf("ring: %w", err)
	}
	return nil
}

// MapRing maps, in the worker, the ring the front passed as the descriptors memFD, readerFD
// and writerFD; it closes memFD and keeps the eventfds until Release.
func MapRing(memFD, readerFD, writerFD int) (*Ring, error) {
	defer syscall.Close(memFD)
	var st syscall.Stat_t
	if err := syscall.Fstat(memFD, &st); err != nil || st.Size <= ringHeaderSize {
		return nil, errors.New("ring: not a ring file")
	}
	r, err := mapRing(memFD, int(st.Size))
	if err != nil {
		return nil, err
	}
	size := int(r.hdr.size)
	if r.hdr.magic != ringMagic || size&(size-1) != 0 || ringHeaderSize+size != len(r.mem) {
		_ = syscall.Munmap(r.mem)
		return nil, fmt.Errorf("ring: bad header (%d bytes of data in %d)", size, len(r.mem))
	}
	r.setLayout(size)
	for _, fd := range []int{readerFD, writerFD} {
		if err := syscall.SetNonblock(fd, true); err != nil { // os/exec passed them blocking
			_ = syscall.Munmap(r.mem)
			return nil, fmt.Errorf("ring: %w", err)
		}
	}
	r.readerWake, r.writerWake = readerFD, writerFD
	return r, nil
}

// WatchPeer makes the reader's sleeps on the mapped side also watch the socket fd to the
// other side: once it is readable (closed, or anything arrives, which the other side never
// sends), the writer counts as gone, and reads end with io.EOF once the ring is drained.
func (r *Ring) WatchPeer(fd int) { r.peer = fd }

func mapRing(fd, total int) (*Ring, error) {
	mem, err := syscall.Mmap(fd, 0, total, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	return &Ring{mem: mem, hdr: (*ringHeader)(unsafe.Pointer(&mem[0])), frontFD: -1, peer: -1}, nil
}

func (r *Ring) setLayout(size int) {
	r.data = r.mem[ringHeaderSize : ringHeaderSize+size]
	r.mask = uint64(size - 1)
}

// Append publishes p, without waking the reader (see Wake), unless the ring is full: then it
// wakes the reader and waits for room. Only one goroutine may call it at a time (the worker's
// frame.Writer serialises its writes). It fails once the ring is closed.
func (r *Ring) Append(p []byte) error {
	h := r.hdr
	size := uint64(len(r.data))
	for len(p) > 0 {
		if h.closed.Load() == 1 {
			return ErrRingClosed
		}
		tail := h.tail.Load()
		free := size - (tail - h.head.Load())
		if free == 0 {
			r.Wake() // the reader makes room only if it runs
			h.writerSleeps.Store(1)
			if h.head.Load() == tail-size && h.closed.Load() == 0 {
				if err := r.sleep(r.writerWake); err != nil {
					h.writerSleeps.Store(0)
					return fmt.Errorf("ring: wait for room: %w", err)
				}
			}
			h.writerSleeps.Store(0)
			continue
		}
		n := min(free, uint64(len(p)))
		at := tail & r.mask
		k := copy(r.data[at:], p[:n])
		copy(r.data, p[k:n])
		h.tail.Store(tail + n)
		p = p[n:]
	}
	return nil
}

// Wake wakes the readers that sleep, unless they were woken already (writer side).
func (r *Ring) Wake() {
	h := r.hdr
	if h.readerSleeps.Load() != 0 && h.kicked.CompareAndSwap(0, 1) {
		Kick(r.readerWake)
	}
}

// Read implements io.Reader: it takes what the ring holds, up to len(p) bytes, sleeping while
// it is empty. It returns io.EOF once the ring is closed and drained, or the peer is gone
// (WatchPeer). Only one goroutine may call it at a time.
func (r *Ring) Read(p []byte) (int, error) {
	h := r.hdr
	for {
		head := h.head.Load()
		avail := h.tail.Load() - head
		if avail == 0 {
			if h.closed.Load() == 1 || r.peerGone.Load() {
				if h.tail.Load() != head {
					continue // published before the close we saw first
				}
				return 0, io.EOF
			}
			if _, err := r.wait(-1); err != nil {
				return 0, fmt.Errorf("ring: wait: %w", err)
			}
			continue
		}
		n := min(avail, uint64(len(p)))
		at := head & r.mask
		k := copy(p[:n], r.data[at:])
		copy(p[k:n], r.data)
		h.head.Store(head + n)
		// Loaded first: a swap is a locked instruction, and Next reads twice per frame. The
		// writer stores its mark before it looks at head, so one of us sees the other.
		if h.writerSleeps.Load() == 1 && h.writerSleeps.Swap(0) == 1 {
			Kick(r.writerWake)
		}
		if h.kicked.Load() == 1 && h.tail.Load() == head+n {
			r.clearKick() // read up to what the wake-up announced
		}
		return int(n), nil
	}
}

// Buffered returns how many published bytes wait to be read.
func (r *Ring) Buffered() int {
	h := r.hdr
	return int(h.tail.Load() - h.head.Load())
}

// Peek copies the next len(p) bytes into p without reading them; it reports false, and
// copies nothing, when fewer are published. Only the reader may call it.
func (r *Ring) Peek(p []byte) bool {
	h := r.hdr
	head := h.head.Load()
	if h.tail.Load()-head < uint64(len(p)) {
		return false
	}
	k := copy(p, r.data[head&r.mask:])
	copy(p[k:], r.data)
	return true
}

// Readable reports whether a Read would not sleep: the ring holds bytes, or it ended.
func (r *Ring) Readable() bool {
	h := r.hdr
	return h.tail.Load() != h.head.Load() || h.closed.Load() == 1 || r.peerGone.Load()
}

// WaitReadable waits, on the mapped side, until the ring is Readable or one of also (at most
// two descriptors) is readable, for at most d (d < 0: no limit), and reports whether the ring
// is. Any number of threads may wait at once; a signal ends the wait early.
func (r *Ring) WaitReadable(d time.Duration, also ...int) bool {
	if r.Readable() {
		return true
	}
	ok, _ := r.wait(d, also...)
	return ok
}

// wait is a reader's sleep: it counts itself among the sleepers, looks once more, and sleeps
// until it is woken, the peer goes, one of also is readable or d passes; it reports whether
// the ring is then Readable.
func (r *Ring) wait(d time.Duration, also ...int) (bool, error) {
	h := r.hdr
	h.readerSleeps.Add(1)
	if r.Readable() {
		h.readerSleeps.Add(^uint32(0))
		return true, nil
	}
	if r.frontFD == r.readerWake { // the front's reader: Go's poller
		if err := r.sleep(r.readerWake); err != nil {
			return false, err // released under us: the header may be gone
		}
		h.readerSleeps.Add(^uint32(0))
		return r.Readable(), nil
	}
	fds := [4]int{r.readerWake, r.peer}
	n := 2 + copy(fds[2:], also)
	ready := Poll(d, fds[:n]...)
	h.readerSleeps.Add(^uint32(0))
	if ready&2 != 0 {
		r.peerGone.Store(true)
	}
	if ready&1 != 0 && !r.Readable() {
		r.clearKick() // a wake-up whose frames another thread read
	}
	return r.Readable(), nil
}

// clearKick reads the readers' eventfd and clears kicked, once the frames it announced are
// read. The eventfd stays set until then, so that every sleeper sees it, the way every poller
// of a socket sees its data until someone reads it. A writer that published meanwhile may
// have seen kicked still set and not written the eventfd: its frames get a wake-up here.
func (r *Ring) clearKick() {
	h := r.hdr
	Drain(r.readerWake)
	h.kicked.Store(0)
	if h.tail.Load() != h.head.Load() && h.readerSleeps.Load() != 0 && h.kicked.CompareAndSwap(0, 1) {
		Kick(r.readerWake)
	}
}

// sleep waits until the eventfd fd is set and clears it: through Go's poller for the front's
// own eventfd, in poll(2) otherwise. Clearing the readers' eventfd clears kicked.
func (r *Ring) sleep(fd int) error {
	if fd == r.frontFD {
		var eight [8]byte
		if _, err := r.frontFile.Read(eight[:]); err != nil {
			return err
		}
	} else {
		for Poll(-1, fd)&1 == 0 {
		}
		Drain(fd)
	}
	if fd == r.readerWake {
		r.hdr.kicked.Store(0)
	}
	return nil
}

// Close ends the stream: the reader drains what was published and then reads io.EOF; a
// writer waiting for room, and every later Append, fail. Either side may call it, more than
// once; the front calls it when the worker is gone.
func (r *Ring) Close() {
	r.hdr.closed.Store(1)
	Kick(r.readerWake)
	Kick(r.writerWake)
}

// Release unmaps the ring and closes the descriptors this side holds; the ring must not be
// used any more.
func (r *Ring) Release() {
	_ = syscall.Munmap(r.mem)
	r.closeFDs()
}

func (r *Ring) closeFDs() {
	for _, fd := range []int{r.readerWake, r.writerWake} {
		switch {
		case fd < 0:
		case fd == r.frontFD:
			r.frontFile.Close()
		default:
			syscall.Close(fd)
		}
	}
}
