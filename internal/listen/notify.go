package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// Notify sends state to the service manager, as sd_notify(3) does: one datagram to the unix
// socket named by NOTIFY_SOCKET (a leading '@' means the abstract namespace). States are
// newline-separated assignments such as "READY=1", "STOPPING=1" or ReloadingState(). Without
// NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing and returns nil.
// NOTIFY_SOCKET stays in the environment: with NotifyAccess=main systemd ignores messages
// from other processes anyway.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q: only unix socket paths and @abstract names are supported", addr)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}

// ReloadingState is the state to Notify when a reload starts (systemd Type=notify-reload):
// RELOADING=1 with the CLOCK_MONOTONIC time in microseconds, as systemd requires.
func ReloadingState() string {
	var ts syscall.Timespec
	const clockMonotonic = 1
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return "RELOADING=1"
	}
	usec := uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
}
