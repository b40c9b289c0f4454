//go:build !linux

package main

import "os/exec"

// setDeathSignal is a no-op where the kernel offers no parent-death
// signal: the normal exit path stops redis-server.
func setDeathSignal(*exec.Cmd) {}
