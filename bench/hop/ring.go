package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"gowsgi/internal/frame"
)

// ring is one direction of a byte stream in memory shared by two processes: one producer
// process appends, one consumer process takes. Positions only grow; the data area's size is a
// power of two, so a position modulo the size is where its byte lives.
//
// The consumer sleeps on an eventfd, and only the consumer knows when it does, so the two
// sides follow a Dekker pair: the consumer stores sleeping = 1 and then looks at tail once
// more before blocking; the producer stores tail and then swaps sleeping to 0, writing the
// eventfd if it was 1. With Go's sequentially consistent atomics one of them sees the other's
// store, so no wake-up is lost, and a consumer is woken once per sleep however many writes
// arrive meanwhile. A wake-up the consumer no longer needs leaves the eventfd set; its next
// sleep then returns at once and looks again.
type ring struct {
	hdr  *ringHeader
	data []byte
	mask uint64

	efd int // the consumer's eventfd; both processes hold it

	// wait blocks until efd is readable and reads it (consumer only). The two processes block
	// differently: the front parks a goroutine on Go's poller, the worker's thread blocks in
	// read(2), as gowsgi's do.
	wait func() error
}

// ringHeader lives at the start of each direction's pages. The producer's and the consumer's
// words sit on their own cache lines so that neither side's stores evict the other's.
type ringHeader struct {
	tail     atomic.Uint64 // bytes ever written: the producer's
	_        [56]byte
	head     atomic.Uint64 // bytes ever read: the consumer's
	_        [56]byte
	sleeping atomic.Uint32 // the consumer is blocking, or about to block, on efd
	closed   atomic.Uint32 // the producer will write no more
}

const ringHeaderSize = 4096 // a page, so each data area starts page-aligned

// errRingFull is returned by write when the consumer is too far behind. The benchmark sizes
// its rings for the requests it keeps in flight, so this never happens in a run.
var errRingFull = errors.New("ring full")

// sharedRings maps two rings of size bytes each (a power of two) from the file f: the first
// carries requests to the worker, the second responses to the front.
func sharedRings(f *os.File, size int, create bool) (toWorker, toFront *ring, mem []byte, err error) {
	if size <= 0 || size&(size-1) != 0 {
		return nil, nil, nil, fmt.Errorf("ring size %d is not a power of two", size)
	}
	total := 2 * (ringHeaderSize + size)
	if create {
		if err := f.Truncate(int64(total)); err != nil {
			return nil, nil, nil, fmt.Errorf("size shared rings: %w", err)
		}
	}
	mem, err = syscall.Mmap(int(f.Fd()), 0, total, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("map shared rings: %w", err)
	}
	at := func(off int) *ring {
		return &ring{
			hdr:  (*ringHeader)(unsafe.Pointer(&mem[off])),
			data: mem[off+ringHeaderSize : off+ringHeaderSize+size],
			mask: uint64(size - 1),
		}
	}
	return at(0), at(ringHeaderSize + size), mem, nil
}

// newRingFile returns the memory both processes map.
func newRingFile() (*os.File, error) {
	f, err := frame.SharedFile("gowsgi-hop")
	if err != nil {
		return nil, fmt.Errorf("shared rings: %w", err)
	}
	return f, nil
}

// Write appends p whole and wakes the consumer if it sleeps. Only one goroutine of the
// producer process may call it at a time.
func (r *ring) Write(p []byte) (int, error) {
	if err := r.append(p); err != nil {
		return 0, err
	}
	return len(p), r.wake()
}

// append publishes p whole without waking the consumer: a consumer that is awake takes it,
// a sleeping one at the next wake.
func (r *ring) append(p []byte) error {
	tail := r.hdr.tail.Load()
	if tail-r.hdr.head.Load()+uint64(len(p)) > uint64(len(r.data)) {
		return errRingFull
	}
	at := tail & r.mask
	n := copy(r.data[at:], p)
	copy(r.data, p[n:])
	r.hdr.tail.Store(tail + uint64(len(p)))
	return nil
}

// wake wakes the consumer if it sleeps.
func (r *ring) wake() error {
	if r.hdr.sleeping.Swap(0) == 1 {
		return r.kick()
	}
	return nil
}

func (r *ring) kick() error {
	one := uint64(1)
	if _, err := syscall.Write(r.efd, (*[8]byte)(unsafe.Pointer(&one))[:]); err != nil && err != syscall.EAGAIN {
		return fmt.Errorf("wake ring consumer: %w", err)
	}
	return nil
}

// Read takes what is in the ring, up to len(p) bytes, sleeping while it is empty. Only one
// goroutine of the consumer process may call it at a time.
func (r *ring) Read(p []byte) (int, error) {
	for {
		head := r.hdr.head.Load()
		avail := r.hdr.tail.Load() - head
		if avail == 0 {
			if r.hdr.closed.Load() == 1 {
				if r.hdr.tail.Load() != head {
					continue // written before the close, which we saw first
				}
				return 0, io.EOF
			}
			r.hdr.sleeping.Store(1)
			if r.hdr.tail.Load() != head || r.hdr.closed.Load() == 1 {
				r.hdr.sleeping.Store(0)
				continue
			}
			if err := r.wait(); err != nil {
				return 0, err
			}
			continue
		}
		n := int(min(avail, uint64(len(p))))
		at := head & r.mask
		k := copy(p[:n], r.data[at:])
		copy(p[k:n], r.data)
		r.hdr.head.Store(head + uint64(n))
		return n, nil
	}
}

// Close tells the consumer no more bytes will come (producer side).
func (r *ring) Close() error {
	r.hdr.closed.Store(1)
	r.hdr.sleeping.Store(0)
	return r.kick()
}
