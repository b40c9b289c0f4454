//go:build !linux

package daemon

import "errors"

// lowerPriority is supported on Linux only, where a thread's priority is
// its own and the Go runtime's threads inherit it.
func lowerPriority(bool) error {
	return errors.New("lowering the CPU priority is supported on Linux only")
}
