package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// SharedChunks is a set of fixed-size buffers in memory shared by the front and one worker,
// through which big response body chunks travel instead of the socket. A worker thread copies
// a chunk from the Python object into a free buffer and sends a DataShared frame naming it;
// the front writes the client straight from the buffer and frees it. Each chunk then costs one
// copy on each side (the worker's, and the kernel's into the client's socket) instead of three
// and the socket's buffering; a pinned 1 MiB stream measured the difference (see
// docs/benchmarks.md).
//
// Buffer states live in the shared memory: the worker claims a free buffer with a
// compare-and-swap, the front frees it with a store once the bytes are written. The worker's
// threads share all the buffers. A thread that finds none free may wait a bounded time for
// one (ClaimWait), on a futex word in the shared memory that the front wakes when it frees a
// buffer while someone waits; past that time, the chunk goes through the ring. Producers
// outrun a socket, so every buffer is in use under a streaming load: without the wait, a
// thread that started a response while the last one's tail still held the buffers sent its
// chunks through the ring, which then filled, and the threads queued on its writer (pinned
// 1 MiB stream: 13-21 % of chunks; see docs/benchmarks.md).
//
// The front keeps the mapping until the worker is gone and every buffer it lent to a
// connection is back: a connection may still be writing from one when the worker dies.
type SharedChunks struct {
	mem   []byte
	state []atomic.Uint32 // per buffer: 0 free, 1 claimed by the worker
	// waiting is 1 while a worker thread may sleep in ClaimWait: the futex word the front
	// clears and wakes on when it frees a buffer.
	waiting *atomic.Uint32
	data    []byte
	count   int
	size    int

	// Front side only.
	lent []atomic.Bool // buffers named by a DataShared frame and not yet freed
	refs atomic.Int64  // 1 for the owner + lent buffers; unmapped at 0
	once sync.Once
}

// Layout: u32 count and u32 size, the u32 futex word at chunksWaiting, the states from
// chunksStates, the buffers from the next page boundary.
const (
	chunksWaiting = 8
	chunksStates  = 64
)

// NewSharedChunks creates count buffers of size bytes and returns them with the file to pass
// to the worker (see MapSharedChunks); the caller closes the file once the worker has it.
func NewSharedChunks(count, size int) (*SharedChunks, *os.File, error) {
	if count <= 0 || size <= 0 || size > MaxPayload {
		return nil, nil, fmt.Errorf("shared chunks: %d buffers of %d bytes", count, size)
	}
	f, err := SharedFile("gowsgi-chunks")
	if err != nil {
		return nil, nil, fmt.Errorf("shared chunks: %w", err)
	}
	total := chunksDataOffset(count) + count*size
	if err := f.Truncate(int64(total)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("shared chunks: %w", err)
	}
	c, err := mapChunks(int(f.Fd()), total)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	binary.LittleEndian.PutUint32(c.mem[0:], uint32(count))
	binary.LittleEndian.PutUint32(c.mem[4:], uint32(size))
	c.setLayout(count, size)
	c.lent = make([]atomic.Bool, count)
	c.refs.Store(1)
	return c, f, nil
}

// MapSharedChunks maps the buffers the front passed as fd, which it then closes.
func MapSharedChunks(fd int) (*SharedChunks, error) {
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Size < chunksStates {
		return nil, errors.New("shared chunks: not a chunks file")
	}
	c, err := mapChunks(fd, int(st.Size))
	if err != nil {
		return nil, err
	}
	count, size := int(binary.LittleEndian.Uint32(c.mem[0:])), int(binary.LittleEndian.Uint32(c.mem[4:]))
	if count <= 0 || size <= 0 || chunksDataOffset(count)+count*size != len(c.mem) {
		_ = syscall.Munmap(c.mem)
		return nil, fmt.Errorf("shared chunks: layout of %d buffers of %d bytes does not fit %d bytes", count, size, len(c.mem))
	}
	c.setLayout(count, size)
	return c, nil
}

func chunksDataOffset(count int) int {
	const page = 4096
	return (chunksStates + 4*count + page - 1) / page * page
}

func mapChunks(fd, total int) (*SharedChunks, error) {
	mem, err := syscall.Mmap(fd, 0, total, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shared chunks: %w", err)
	}
	return &SharedChunks{mem: mem}, nil
}

func (c *SharedChunks) setLayout(count, size int) {
	c.count, c.size = count, size
	c.waiting = (*atomic.Uint32)(unsafe.Pointer(&c.mem[chunksWaiting]))
	c.state = unsafe.Slice((*atomic.Uint32)(unsafe.Pointer(&c.mem[chunksStates])), count)
	c.data = c.mem[chunksDataOffset(count):]
}

// Count returns the number of buffers.
func (c *SharedChunks) Count() int { return c.count }

// Size returns the bytes each buffer holds.
func (c *SharedChunks) Size() int { return c.size }

// Claim (worker) claims a free buffer and returns its index, or -1 when all of them are in
// use. The lowest free one is taken: under a light load the same few buffers serve every
// chunk, and stay in the caches and out of the resident set.
func (c *SharedChunks) Claim() int {
	for i := range c.state {
		if c.state[i].Load() == 0 && c.state[i].CompareAndSwap(0, 1) {
			return i
		}
	}
	return -1
}

// ClaimWait (worker) claims a free buffer like Claim, waiting up to d for the front to free
// one; -1 means none was freed in time.
func (c *SharedChunks) ClaimWait(d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		// The flag is raised before the states are read, and the front frees before it
		// reads the flag: one of the two sees the other, so no free goes unnoticed.
		c.waiting.Store(1)
		if i := c.Claim(); i >= 0 {
			return i
		}
		left := time.Until(deadline)
		if left <= 0 {
			return -1
		}
		futexWait(c.waiting, 1, left)
	}
}

// wake wakes the threads waiting in ClaimWait, if any, after a buffer was freed.
func (c *SharedChunks) wake() {
	if c.waiting.Load() != 0 && c.waiting.CompareAndSwap(1, 0) {
		futexWake(c.waiting)
	}
}

// Buffer (worker) returns buffer i to fill.
func (c *SharedChunks) Buffer(i int) []byte {
	return c.data[i*c.size : (i+1)*c.size : (i+1)*c.size]
}

// Release (worker) gives back a buffer it claimed and will not name in a frame after all.
func (c *SharedChunks) Release(i int) {
	c.state[i].Store(0)
	c.wake()
}

// Lend (front) returns the first n bytes of buffer i, which a DataShared frame named; they
// stay valid until Free(i). A frame naming a buffer out of range, too long, or already lent
// is a protocol error.
func (c *SharedChunks) Lend(i, n int) ([]byte, error) {
	if i < 0 || i >= c.count || n < 0 || n > c.size {
		return nil, fmt.Errorf("shared chunk %d of %d bytes: out of %d buffers of %d bytes", i, n, c.count, c.size)
	}
	if !c.lent[i].CompareAndSwap(false, true) {
		return nil, fmt.Errorf("shared chunk %d named twice", i)
	}
	c.refs.Add(1)
	off := i * c.size
	return c.data[off : off+n : off+n], nil
}

// Free (front) gives buffer i back to the worker once its bytes are written or dropped. Only
// the first Free of a Lend counts: a second one must not drop a hold someone else has.
func (c *SharedChunks) Free(i int) {
	if !c.lent[i].CompareAndSwap(true, false) {
		return
	}
	c.state[i].Store(0)
	c.wake()
	c.unref()
}

// Close (front) drops the owner's hold: the memory is unmapped once every lent buffer is
// freed too. The worker never unmaps; its memory goes with the process.
func (c *SharedChunks) Close() {
	c.once.Do(c.unref)
}

func (c *SharedChunks) unref() {
	if c.refs.Add(-1) == 0 {
		_ = syscall.Munmap(c.mem) // nothing can use it any more; it cannot fail on a mapping of ours
	}
}

// The futex calls are not private: the word is in memory another process maps.
const (
	futexWaitOp = 0 // FUTEX_WAIT
	futexWakeOp = 1 // FUTEX_WAKE
)

// futexWait sleeps while *w == v, at most d (or until a wake, or a signal).
func futexWait(w *atomic.Uint32, v uint32, d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWaitOp, uintptr(v),
		uintptr(unsafe.Pointer(&ts)), 0, 0) // every outcome sends the caller back to its check
}

// futexWake wakes every sleeper on w.
func futexWake(w *atomic.Uint32) {
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWakeOp, uintptr(math.MaxInt32),
		0, 0, 0) // it cannot fail on a mapped, aligned word
}
