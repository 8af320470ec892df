package worker

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

const schedBatchPolicy = 3 // SCHED_BATCH in <linux/sched.h>

// schedBatch puts every thread of the process under SCHED_BATCH. Threads created later (Go's,
// the app's) inherit the policy from the thread that creates them, so setting it on the
// threads present at start, before Python and the thread pool exist, covers the process. A
// second pass catches a thread the runtime started during the first.
func schedBatch() error {
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("list threads: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var prio int32 // sched_param.sched_priority: must be 0 for SCHED_BATCH
			_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedBatchPolicy, uintptr(unsafe.Pointer(&prio)))
			if errno != 0 && errno != syscall.ESRCH { // ESRCH: the thread has exited
				return fmt.Errorf("sched_setscheduler(%d): %w", tid, errno)
			}
		}
	}
	return nil
}
