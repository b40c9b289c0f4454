//go:build linux

package drops

import (
	"io/fs"
	"syscall"
	"time"
)

func renamedAfterWrite(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	ctime := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	return ctime.After(fi.ModTime())
}
