//go:build unix && !linux

package stack

import "syscall"

// setParentDeathSignal does nothing where the kernel offers no parent death
// signal; the launcher stops its children itself.
func setParentDeathSignal(*syscall.SysProcAttr) {}
