package classifier

import (
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/events"
)

// Default stream windows. A phrase rule spans at most a sentence of a few
// dozen words, so 256 bytes of overlap re-reads any match that straddles
// two windows.
const (
	DefaultStreamWindow  = 1024
	DefaultStreamOverlap = 256
)

// StreamOptions size the windows of a Stream.
type StreamOptions struct {
	// Window is how many new bytes of text are gathered before they are
	// checked; DefaultStreamWindow when zero.
	Window int
	// Overlap is how many bytes before each window are checked again
	// with it, so a word or phrase split across two windows is still
	// caught; DefaultStreamOverlap when zero, and at most Window.
	Overlap int
}

// Stream checks text that arrives in pieces, such as a streamed
// completion: Add buffers deltas and classifies the text each time Window
// new bytes have arrived, together with the Overlap bytes before them, so
// output can be released window by window. Windows end at whitespace when
// there is any, so a word is never cut at a window's end, and begin after
// whitespace, so a window never starts inside a word. The Result a Stream
// reports is the merge of every window so far; severities only grow.
//
// A Stream holds at most Window+Overlap bytes plus the last delta, is not
// safe for concurrent use, and never exposes the text it holds.
type Stream struct {
	c       *Classifier
	dir     events.Direction
	bl      *Blocklists
	names   []string
	window  int
	overlap int
	buf     []byte
	checked int // bytes of buf already classified
	res     Result
	seen    bool
}

// NewStream starts a stream of text in direction dir, matched against the
// lists of bl named in names (bl may be nil).
func (c *Classifier) NewStream(dir events.Direction, bl *Blocklists, names []string, opts StreamOptions) *Stream {
	if opts.Window <= 0 {
		opts.Window = DefaultStreamWindow
	}
	if opts.Overlap <= 0 {
		opts.Overlap = DefaultStreamOverlap
	}
	opts.Overlap = min(opts.Overlap, opts.Window)
	return &Stream{
		c: c, dir: dir, bl: bl, names: names,
		window: opts.Window, overlap: opts.Overlap,
		res: c.ClassifyWith("", dir, nil, nil),
	}
}

// Add appends delta to the stream. When at least Window unchecked bytes
// have gathered it classifies them (with the overlap before them) and
// returns the merged result so far and checked = true: the text up to the
// end of that window may be released if the result is acceptable. With
// fewer unchecked bytes it returns the result so far and false.
func (s *Stream) Add(delta string) (r Result, checked bool) {
	s.buf = append(s.buf, delta...)
	for len(s.buf)-s.checked >= s.window {
		end := s.cut(s.checked + s.window)
		s.check(end)
		checked = true
	}
	return s.res, checked
}

// Flush classifies whatever is still unchecked (call it when the stream
// ends) and returns the final result.
func (s *Stream) Flush() Result {
	if len(s.buf) > s.checked || !s.seen && len(s.buf) > 0 {
		s.check(len(s.buf))
	}
	return s.res
}

// Result returns the merged result of the windows checked so far.
func (s *Stream) Result() Result { return s.res }

// Pending returns how many bytes have arrived but are not yet checked.
func (s *Stream) Pending() int { return len(s.buf) - s.checked }

// cut returns where a window that should end at want ends: after the last
// whitespace at or before want and past the checked bytes, else at the
// end of a rune at or before want.
func (s *Stream) cut(want int) int {
	for i := want; i > s.checked; i-- {
		if isSpaceByte(s.buf[i-1]) {
			return i
		}
	}
	for i := want; i > s.checked; i-- {
		if i == len(s.buf) || utf8.RuneStart(s.buf[i]) {
			return i
		}
	}
	return want
}

// check classifies buf[:end], merges the result and keeps the overlap.
func (s *Stream) check(end int) {
	r := s.c.ClassifyWith(string(s.buf[:end]), s.dir, s.bl, s.names)
	s.res = Merge(s.res, r)
	s.seen = true
	// keep the overlap, starting after a space so that it does not begin
	// inside a word
	start := max(end-s.overlap, 0)
	for i := start; i < end && start > 0; i++ {
		if isSpaceByte(s.buf[i]) {
			start = i + 1
			break
		}
	}
	for start < end && !utf8.RuneStart(s.buf[start]) {
		start++
	}
	n := copy(s.buf, s.buf[start:])
	s.buf = s.buf[:n]
	s.checked = end - start
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }
