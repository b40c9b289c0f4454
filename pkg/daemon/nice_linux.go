package daemon

import (
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// schedIdle is Linux's SCHED_IDLE scheduling class.
const schedIdle = 5

// lowerPriority gives every thread of the process the lowest nice value
// and, when idle, the SCHED_IDLE class. On Linux both belong to a
// thread, and a new thread inherits its creator's, so the threads the Go
// runtime starts later inherit them too; the list is walked twice in case
// one was created during the first walk.
func lowerPriority(idle bool) error {
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && err != syscall.ESRCH {
				return err
			}
			if idle {
				var param struct{ priority int32 }
				_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedIdle, uintptr(unsafe.Pointer(&param)))
				if errno != 0 && errno != syscall.ESRCH {
					return errno
				}
			}
		}
	}
	return nil
}
