//go:build linux

package stack

import "syscall"

// setParentDeathSignal makes the kernel send SIGTERM to the child if the
// launcher dies without stopping it (kill -9, a crash), so no service
// outlives the stack; SIGTERM rather than SIGKILL lets services drain and
// Redis flush its append-only file.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGTERM
}
