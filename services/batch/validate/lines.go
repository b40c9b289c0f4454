package validate

import (
	"bufio"
	"errors"
	"io"
)

// readBufferSize is the bufio buffer Scan reads through: big enough that
// most lines come out of one ReadSlice without copying.
const readBufferSize = 64 << 10

// lineReader splits a stream into lines while holding at most max bytes
// of any one line: the rest of a longer line is read and dropped, so a
// file with a 50 MB line costs no more memory than one with a 10 MB line.
type lineReader struct {
	br  *bufio.Reader
	max int

	// The current line, set by next.
	text    []byte // the line without its ending ("\n" or "\r\n"); nil when tooLong
	offset  int64  // byte offset of the line's first byte in the stream
	length  int64  // length of the line without its ending, even when tooLong
	tooLong bool   // the line is longer than max bytes
	blank   bool   // the line holds only JSON whitespace (space, tab, CR)

	pos int64  // bytes consumed so far
	buf []byte // reused; grows to at most max+1 bytes
}

func newLineReader(r io.Reader, maxLineBytes int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, readBufferSize), max: maxLineBytes}
}

// next reads the next line. It returns false at the end of the stream
// (with err nil) or when reading fails.
func (lr *lineReader) next() (ok bool, err error) {
	lr.offset = lr.pos
	lr.buf = lr.buf[:0]
	lr.tooLong, lr.blank = false, true
	var n int64      // bytes of the line read, its ending included
	var tail [2]byte // the line's last two bytes
	for {
		frag, err := lr.br.ReadSlice('\n')
		n += int64(len(frag))
		for _, c := range frag[max(0, len(frag)-2):] {
			tail[0], tail[1] = tail[1], c
		}
		lr.pos += int64(len(frag))
		if lr.blank {
			lr.blank = isSpace(frag)
		}
		switch {
		case lr.tooLong:
		case len(lr.buf) == 0 && (err == nil || err == io.EOF):
			// The whole line is in the bufio buffer: use it in place
			// until the next call.
			lr.text = frag
		case len(lr.buf)+len(frag) > lr.max+2:
			// Longer than max even if frag ends in "\r\n": drop it.
			lr.tooLong = true
		default:
			lr.buf = lr.grow(lr.buf, len(frag))
			lr.buf = append(lr.buf, frag...)
			lr.text = lr.buf
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && err != io.EOF {
			return false, err
		}
		if n == 0 {
			return false, nil
		}
		end := endingLen(tail, n, err == nil)
		lr.length = n - end
		if lr.tooLong {
			lr.text = nil
		} else {
			lr.text = lr.text[:len(lr.text)-int(end)]
		}
		if !lr.blank && lr.length > int64(lr.max) {
			lr.tooLong, lr.text = true, nil
		}
		return true, nil
	}
}

// grow makes room for n more bytes in b without growing past max+2, so
// the buffer never holds more than the longest acceptable line and its
// ending.
func (lr *lineReader) grow(b []byte, n int) []byte {
	need := len(b) + n
	if need <= cap(b) {
		return b
	}
	c := max(2*cap(b), need, 4096)
	c = min(c, lr.max+2)
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// endingLen is the length of the ending of a line of n bytes whose last
// two bytes are tail: 2 for "\r\n", 1 for "\n", 0 for a last line
// without one (nl false).
func endingLen(tail [2]byte, n int64, nl bool) int64 {
	switch {
	case !nl:
		return 0
	case n >= 2 && tail[0] == '\r':
		return 2
	}
	return 1
}

// isSpace reports whether b holds only JSON whitespace.
func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}
