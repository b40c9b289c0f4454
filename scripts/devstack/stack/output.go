package stack

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// NameWidth is the width of the name column that prefixes every line
// ("contentsafety" is the longest name).
const NameWidth = 13

// maxLine bounds how much of a line without a newline is buffered before it is
// written out anyway, so a child that never ends a line cannot grow memory
// without limit.
const maxLine = 64 << 10

// Output serialises whole lines from many sources onto one writer, so lines
// of different services never interleave mid-line.
type Output struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
	next  int
}

// NewOutput returns an Output writing to w. With color set, name prefixes are
// wrapped in ANSI colour codes; set it only when w is a terminal.
func NewOutput(w io.Writer, color bool) *Output {
	return &Output{w: w, color: color}
}

// Writer returns a LineWriter that prefixes each line with name. Every call
// picks the next colour in a fixed cycle.
func (o *Output) Writer(name string) *LineWriter {
	o.mu.Lock()
	idx := o.next
	o.next++
	o.mu.Unlock()
	return &LineWriter{out: o, prefix: o.prefix(name, idx)}
}

// Printf writes one formatted message as a line prefixed with name, in the
// default colour.
func (o *Output) Printf(name, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	o.writeLine(o.prefix(name, -1), []byte(line))
}

// Raw writes text as is, under the same lock as the prefixed lines.
func (o *Output) Raw(text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = io.WriteString(o.w, text)
}

func (o *Output) prefix(name string, idx int) string {
	if !o.color {
		return fmt.Sprintf("%-*s | ", NameWidth, name)
	}
	return fmt.Sprintf("\x1b[%sm%-*s |\x1b[0m ", colorCode(idx), NameWidth, name)
}

func (o *Output) writeLine(prefix string, line []byte) {
	o.write(appendLine(nil, prefix, line))
}

// appendLine appends line, prefixed and ended, to buf.
func appendLine(buf []byte, prefix string, line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\r"))
	buf = append(buf, prefix...)
	buf = append(buf, line...)
	return append(buf, '\n')
}

// write writes whole lines in one write.
func (o *Output) write(lines []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = o.w.Write(lines)
}

// colorCode returns the ANSI SGR code for the idx-th source; a negative idx is
// the launcher's own bold default.
func colorCode(idx int) string {
	if idx < 0 {
		return "1"
	}
	codes := [...]string{"36", "32", "33", "35", "34", "96", "92", "93", "95", "94"}
	return codes[idx%len(codes)]
}

// LineWriter is an io.Writer that writes each complete line it receives to
// its Output with a fixed prefix. Close writes a final partial line.
// It is safe for concurrent use.
type LineWriter struct {
	out    *Output
	prefix string

	mu  sync.Mutex
	buf []byte
}

// Write buffers p and writes out every complete line. It never fails.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	// The lines that came in one write (a service writes what its logger
	// gathered) go out in one write too.
	var lines []byte
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		lines = appendLine(lines, w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(lines) > 0 {
		w.out.write(lines)
	}
	if len(w.buf) >= maxLine {
		w.out.writeLine(w.prefix, w.buf)
		w.buf = w.buf[:0]
	}
	if len(w.buf) == 0 {
		w.buf = nil
	}
	return len(p), nil
}

// Close writes out a final line that had no newline. It is idempotent, and
// the writer stays usable afterwards.
func (w *LineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.out.writeLine(w.prefix, w.buf)
		w.buf = nil
	}
	return nil
}
