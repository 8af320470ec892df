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
	const pollIn = 0x1
	var pfds [3]pollFD
	pfds[0] = pollFD{fd: int32(fd), events: pollIn}
	n := 1
	for _, a := range also {
		pfds[n] = pollFD{fd: int32(a), events: pollIn}
		n++
	}
	var tsp unsafe.Pointer
	var ts syscall.Timespec
	if d >= 0 {
		ts = syscall.NsecToTimespec(int64(d))
		tsp = unsafe.Pointer(&ts)
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfds[0])), uintptr(n), uintptr(tsp), 0, 0, 0)
	if errno != 0 {
		return errno != syscall.EINTR && fd >= 0
	}
	return fd >= 0 && pfds[0].revents != 0
}
