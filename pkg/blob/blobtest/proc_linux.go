package blobtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the server if the test process dies
// without running its cleanups, so no server outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
