//go:build !linux

package drops

import "io/fs"

func renamedAfterWrite(fs.FileInfo) bool { return false }
