//go:build unix

package stack

import (
	"os"
	"syscall"
)

// childProcAttr puts the child in its own process group, so the terminal's
// SIGINT on Ctrl-C reaches the launcher alone and the launcher decides how
// and in which order its children stop.
func childProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(attr)
	return attr
}

// terminate sends SIGTERM to the process group led by p.
func terminate(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// kill sends SIGKILL to the process group led by p.
func kill(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		// The group may already be gone while the leader is not yet
		// reaped; fall back to the process itself.
		return p.Signal(sig)
	}
	return nil
}
