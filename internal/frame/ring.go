package frame

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Ring carries a byte stream from a worker to the front through memory both map: the worker
// appends frames, the front reads them. Compared with the socket it saves the system call of
// each write and read: a write is a copy, plus a wake-up only when the front sleeps. Bytes
// published survive the worker: when it dies, the front reads what it appended and then the
// end. `make bench-hop` measured the hop both ways (docs/benchmarks.md).
//
// One process writes and one reads. Positions only grow; the data area's size is a power of
// two. Either side sleeps on an eventfd of its own, and only says so through the shared
// header, so wake-ups follow a Dekker pair: the sleeper stores its flag and then looks at the
// other side's position once more before blocking; the other side stores its position and
// then swaps the flag to 0, writing the eventfd if it was set. With sequentially consistent
// atomics one of them sees the other's store: no wake-up is lost, and a sleeper is woken
// once per sleep. A wake-up no longer needed leaves the eventfd set, and the next sleep
// returns at once and looks again.
type Ring struct {
	mem  []byte
	hdr  *ringHeader
	data []byte
	mask uint64

	readerWake int // eventfd the reader sleeps on
	writerWake int // eventfd the writer sleeps on when the ring is full

	// Front side: the eventfds as files (the reader's goes through Go's poller); the worker
	// side holds bare descriptors (ownFDs).
	readerFile, writerFile *os.File
	ownFDs                 bool
}

type ringHeader struct {
	magic uint32
	size  uint32
	_     [56]byte
	tail  atomic.Uint64 // bytes ever written: the writer's
	_     [56]byte
	head  atomic.Uint64 // bytes ever read: the reader's
	_     [56]byte

	readerSleeps atomic.Uint32
	writerSleeps atomic.Uint32
	closed       atomic.Uint32 // no more bytes will come: the writer is gone
}

const (
	ringMagic      = 0x676e6972 // "ring"
	ringHeaderSize = 4096       // a page: the data area starts page-aligned
)

// ErrRingClosed is returned by Append once the ring is closed.
var ErrRingClosed = errors.New("ring closed")

// NewRing creates a ring of size bytes (a power of two) for the front, which reads it, and
// returns it with the files to pass to the worker: the memory and copies of the two eventfds.
// The caller closes the three once the worker has them, and then calls Started.
func NewRing(size int) (r *Ring, mem, readerWake, writerWake *os.File, err error) {
	if size < 4096 || size > 1<<30 || size&(size-1) != 0 {
		return nil, nil, nil, nil, fmt.Errorf("ring of %d bytes: want a power of two from 4 KiB to 1 GiB", size)
	}
	f, err := SharedFile("gowsgi-ring")
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("ring: %w", err)
	}
	r = &Ring{readerWake: -1, writerWake: -1}
	fail := func(err error) (*Ring, *os.File, *os.File, *os.File, error) {
		f.Close()
		for _, c := range []*os.File{readerWake, writerWake, r.readerFile, r.writerFile} {
			if c != nil {
				c.Close()
			}
		}
		if r.mem != nil {
			_ = syscall.Munmap(r.mem)
		}
		return nil, nil, nil, nil, err
	}
	if err := f.Truncate(int64(ringHeaderSize + size)); err != nil {
		return fail(fmt.Errorf("ring: %w", err))
	}
	if r.readerWake, err = NewEventFD(true); err != nil {
		return fail(err)
	}
	r.readerFile = os.NewFile(uintptr(r.readerWake), "gowsgi-ring-reader") // pollable: non-blocking
	if r.writerWake, err = NewEventFD(false); err != nil {
		return fail(err)
	}
	r.writerFile = os.NewFile(uintptr(r.writerWake), "gowsgi-ring-writer")
	// The worker gets copies, so that os/exec never takes the descriptor of readerFile
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

// Started makes the reader's eventfd non-blocking again once the worker has its copy: the
// copy shares its open file description, which os/exec made blocking (os.File.Fd does), and
// the front's reader waits through Go's poller.
func (r *Ring) Started() error {
	if err := syscall.SetNonblock(r.readerWake, true); err != nil {
		return fmt.Errorf("ring: %w", err)
	}
	return nil
}

// MapRing maps, in the worker, the ring the front passed as the descriptors memFD, readerFD
// and writerFD; it closes memFD and keeps the eventfds until Close.
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
	if err := syscall.SetNonblock(writerFD, false); err != nil {
		_ = syscall.Munmap(r.mem)
		return nil, fmt.Errorf("ring: %w", err)
	}
	r.readerWake, r.writerWake, r.ownFDs = readerFD, writerFD, true
	return r, nil
}

func mapRing(fd, total int) (*Ring, error) {
	mem, err := syscall.Mmap(fd, 0, total, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: %w", err)
	}
	return &Ring{mem: mem, hdr: (*ringHeader)(unsafe.Pointer(&mem[0]))}, nil
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
				SleepOn(r.writerWake)
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

// Wake wakes the reader if it sleeps (writer side).
func (r *Ring) Wake() {
	if r.hdr.readerSleeps.Swap(0) == 1 {
		Kick(r.readerWake)
	}
}

// Read implements io.Reader: it takes what the ring holds, up to len(p) bytes, sleeping while
// it is empty (see waitReadable). It returns io.EOF once the ring is closed and
// drained. Only one goroutine may call it at a time.
func (r *Ring) Read(p []byte) (int, error) {
	h := r.hdr
	for {
		head := h.head.Load()
		avail := h.tail.Load() - head
		if avail == 0 {
			if h.closed.Load() == 1 {
				if h.tail.Load() != head {
					continue // published before the close we saw first
				}
				return 0, io.EOF
			}
			h.readerSleeps.Store(1)
			if h.tail.Load() != head || h.closed.Load() == 1 {
				h.readerSleeps.Store(0)
				continue
			}
			if err := r.waitReadable(); err != nil {
				return 0, fmt.Errorf("ring: wait: %w", err)
			}
			continue
		}
		n := min(avail, uint64(len(p)))
		at := head & r.mask
		k := copy(p[:n], r.data[at:])
		copy(p[k:n], r.data)
		h.head.Store(head + n)
		if h.writerSleeps.Swap(0) == 1 {
			Kick(r.writerWake)
		}
		return int(n), nil
	}
}

// waitReadable waits until the reader's eventfd is set and clears it: through Go's poller on
// the side that made the ring, in poll(2) on a side that mapped it (the eventfd is
// non-blocking for the poller, and both sides share its mode).
func (r *Ring) waitReadable() error {
	var eight [8]byte
	if r.readerFile != nil {
		_, err := r.readerFile.Read(eight[:])
		return err
	}
	for {
		if _, err := syscall.Read(r.readerWake, eight[:]); err != syscall.EAGAIN && err != syscall.EINTR {
			return err
		}
		PollReadable(-1, r.readerWake)
	}
}

// Close ends the stream: the reader drains what was published and then reads io.EOF; a
// writer waiting for room, and every later Append, fail. Either side may call it, more than
// once; the front calls it when the worker is gone.
func (r *Ring) Close() {
	r.hdr.closed.Store(1)
	r.hdr.readerSleeps.Store(0)
	Kick(r.readerWake)
	Kick(r.writerWake)
}

// Release unmaps the ring and closes the descriptors this side holds; the ring must not be
// used any more.
func (r *Ring) Release() {
	_ = syscall.Munmap(r.mem)
	if r.readerFile != nil {
		r.readerFile.Close()
		r.writerFile.Close()
	}
	if r.ownFDs {
		syscall.Close(r.readerWake)
		syscall.Close(r.writerWake)
	}
}
