package frame

import (
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// Wake-ups between threads and processes that sleep in system calls rather than on Go's
// scheduler: the Ring's sleepers, and the worker's Python threads and frame reader.

// NewEventFD returns a close-on-exec eventfd, non-blocking if asked: a blocking one to sleep
// on in read(2), a non-blocking one for a poller.
func NewEventFD(nonblock bool) (int, error) {
	flags := syscall.O_CLOEXEC
	if nonblock {
		flags |= syscall.O_NONBLOCK
	}
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, uintptr(flags), 0)
	if errno != 0 {
		return -1, fmt.Errorf("eventfd: %w", errno)
	}
	return int(fd), nil
}

// Kick wakes whoever sleeps on the eventfd fd.
func Kick(fd int) {
	one := [8]byte{1}
	for {
		// Only an overflow of the counter could fail, and a sleeper is woken once per sleep.
		if _, err := syscall.Write(fd, one[:]); err != syscall.EINTR {
			return
		}
	}
}

type pollFD struct {
	fd      int32
	events  int16
	revents int16
}

// SleepOn blocks the thread until the blocking eventfd fd is kicked, and clears it. The read is a plain
// blocking system call made from the locked thread itself, so the kernel wakes this very
// thread.
func SleepOn(fd int) {
	var buf [8]byte
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8)
		if errno != syscall.EINTR {
			return
		}
	}
}

// PollReadable waits until fd or one of also (at most two) is readable, or in error, which the
// next read reports, for at most d (d < 0: no limit; 0: only looks), and reports whether fd is.
// A negative descriptor is not watched. A signal ends the wait early.
func PollReadable(d time.Duration, fd int, also ...int) bool {
	fds := [3]int{fd}
	n := 1 + copy(fds[1:], also)
	return Poll(d, fds[:n]...)&1 != 0
}

// Poll waits until one of fds (at most four) is readable, or in error, which the next read
// reports, for at most d (d < 0: no limit; 0: only looks), and returns which are: bit i for
// fds[i]. A negative descriptor is not watched. A signal ends the wait early, with none.
func Poll(d time.Duration, fds ...int) uint {
	const pollIn = 0x1
	var pfds [4]pollFD
	n := 0
	var idx [4]int // fds index of each pfds entry
	for i, fd := range fds {
		if fd >= 0 {
			pfds[n] = pollFD{fd: int32(fd), events: pollIn}
			idx[n] = i
			n++
		}
	}
	var tsp unsafe.Pointer
	var ts syscall.Timespec
	if d >= 0 {
		ts = syscall.NsecToTimespec(int64(d))
		tsp = unsafe.Pointer(&ts)
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfds[0])), uintptr(n), uintptr(tsp), 0, 0, 0)
	var ready uint
	for i := 0; i < n; i++ {
		if errno != 0 && errno != syscall.EINTR || errno == 0 && pfds[i].revents != 0 {
			ready |= 1 << idx[i]
		}
	}
	return ready
}

// Drain reads the counter of the non-blocking eventfd (or timerfd) fd, resetting it, and
// reports whether it was set.
func Drain(fd int) bool {
	var buf [8]byte
	n, _, _ := syscall.Syscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 8) // EAGAIN: not set
	return n == 8
}
