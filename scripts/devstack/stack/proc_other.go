//go:build !unix

package stack

import (
	"os"
	"syscall"
)

// childProcAttr returns nil: process groups are a Unix notion.
func childProcAttr() *syscall.SysProcAttr { return nil }

// terminate stops p; without Unix signals there is no graceful request.
func terminate(p *os.Process) error { return p.Kill() }

// kill stops p at once.
func kill(p *os.Process) error { return p.Kill() }
