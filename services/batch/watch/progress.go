// Package watch is `batch watch`: a live progress bar of one batch in
// the terminal (lines done of total, failed, rate, time left), read from
// the batches stream (a batch ID) or from a drop's status file, until the
// batch ends.
package watch

import (
	"fmt"
	"strings"
	"time"
)

// Progress is one reading of a batch.
type Progress struct {
	Status    string
	Total     int
	Completed int
	Failed    int
	// At is when it was read.
	At time.Time
}

// Done is the number of lines that finished, well or not.
func (p Progress) Done() int { return p.Completed + p.Failed }

// Meter turns readings into a rate: lines finished per second over the
// readings of the last Window, so the rate follows the batch as its pace
// changes, and time left from it.
type Meter struct {
	// Window is how far back the rate looks (default 30s).
	Window  time.Duration
	samples []Progress
}

// Add records a reading.
func (m *Meter) Add(p Progress) {
	window := m.Window
	if window <= 0 {
		window = 30 * time.Second
	}
	m.samples = append(m.samples, p)
	// Keep one reading at or before the window's start, so the rate spans
	// the whole window.
	for len(m.samples) > 2 && p.At.Sub(m.samples[1].At) >= window {
		m.samples = m.samples[1:]
	}
}

// Rate is lines finished per second over the window; 0 before two
// readings apart in time.
func (m *Meter) Rate() float64 {
	if len(m.samples) < 2 {
		return 0
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	secs := last.At.Sub(first.At).Seconds()
	if secs <= 0 || last.Done() < first.Done() {
		return 0
	}
	return float64(last.Done()-first.Done()) / secs
}

// Left is the time the remaining lines take at the current rate; false
// when there is no rate to tell.
func (m *Meter) Left() (time.Duration, bool) {
	if len(m.samples) == 0 {
		return 0, false
	}
	last := m.samples[len(m.samples)-1]
	remaining := last.Total - last.Done()
	if remaining <= 0 {
		return 0, last.Total > 0
	}
	r := m.Rate()
	if r <= 0 {
		return 0, false
	}
	return time.Duration(float64(remaining) / r * float64(time.Second)).Round(time.Second), true
}

// Render draws one line of the bar, width cells wide:
//
//	[########------------]  42/100 lines  3 failed  12.5 lines/s  0:05 left  in_progress
func Render(p Progress, rate float64, left time.Duration, leftKnown bool, width int) string {
	if width < 1 {
		width = 1
	}
	filled := 0
	if p.Total > 0 {
		filled = min(width, p.Done()*width/p.Total)
	}
	var b strings.Builder
	b.WriteByte('[')
	b.WriteString(strings.Repeat("#", filled))
	b.WriteString(strings.Repeat("-", width-filled))
	b.WriteByte(']')
	fmt.Fprintf(&b, "  %d/%d lines  %d failed  %.1f lines/s  ", p.Done(), p.Total, p.Failed, rate)
	if leftKnown {
		b.WriteString(clock(left) + " left")
	} else {
		b.WriteString("--:-- left")
	}
	b.WriteString("  " + p.Status)
	return b.String()
}

// clock writes d as m:ss, or h:mm:ss from an hour.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
