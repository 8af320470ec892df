package frame

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// SharedCounter is a uint64 in memory shared by the front and one worker process: the worker
// counts in it the requests its Python threads have taken, in the order the front sent them.
// When the worker dies, the requests the front sent beyond that count never reached the app
// and may be dispatched again, while the others may have run and must not be. Shared memory
// says so without a frame per request, so the front is not woken to hear it.
type SharedCounter struct {
	mem []byte
}

const counterSize = 8

// NewSharedCounter creates a counter and returns it with the file to pass to the worker (see
// MapSharedCounter); the caller closes the file once the worker has it.
func NewSharedCounter() (*SharedCounter, *os.File, error) {
	f, err := SharedFile("gowsgi-counter")
	if err != nil {
		return nil, nil, fmt.Errorf("shared counter: %w", err)
	}
	c, err := mapCounter(int(f.Fd()), true)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return c, f, nil
}

// SharedFile returns an anonymous file in memory that can be mapped here and handed to another
// process: a memfd, or where memfd_create is missing or refused, an unlinked file on /dev/shm
// (whose mount may be small: a container's default is 64 MiB, and a write past it is a
// SIGBUS). name shows in /proc/PID/maps.
func SharedFile(name string) (*os.File, error) {
	if fd, err := memfdCreate(name); err == nil {
		return os.NewFile(uintptr(fd), name), nil
	}
	return tmpfsFile(name)
}

// tmpfsFile is SharedFile's fallback: an unlinked file on /dev/shm, or the temporary
// directory if there is none.
func tmpfsFile(name string) (*os.File, error) {
	dir := "/dev/shm"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, name+"-")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// memfdCreate is memfd_create(name, MFD_CLOEXEC), which package syscall does not wrap.
func memfdCreate(name string) (int, error) {
	nr := sysMemfdCreate // a variable: the constant is -1 where the call is unknown
	if nr < 0 {
		return -1, syscall.ENOSYS
	}
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	const mfdCloexec = 1
	fd, _, errno := syscall.Syscall(uintptr(nr), uintptr(unsafe.Pointer(p)), mfdCloexec, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// MapSharedCounter maps the counter the front passed as fd, which it then closes.
func MapSharedCounter(fd int) (*SharedCounter, error) {
	defer syscall.Close(fd)
	return mapCounter(fd, false)
}

func mapCounter(fd int, create bool) (*SharedCounter, error) {
	if create {
		if err := syscall.Ftruncate(fd, counterSize); err != nil {
			return nil, fmt.Errorf("shared counter: %w", err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Size < counterSize {
		return nil, errors.New("shared counter: not a counter file")
	}
	mem, err := syscall.Mmap(fd, 0, counterSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shared counter: %w", err)
	}
	return &SharedCounter{mem: mem}, nil
}

func (c *SharedCounter) word() *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&c.mem[0])) // page-aligned
}

// Load returns the count.
func (c *SharedCounter) Load() uint64 { return c.word().Load() }

// Store sets the count.
func (c *SharedCounter) Store(v uint64) { c.word().Store(v) }

// Close unmaps the counter.
func (c *SharedCounter) Close() error {
	return syscall.Munmap(c.mem)
}
