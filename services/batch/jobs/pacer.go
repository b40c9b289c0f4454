package jobs

import "time"

// pacer sizes a job's window of lines in flight so batch lines fill
// spare capacity without queueing ahead of real-time requests: the
// window grows by one line per window of answers that came back about
// as fast as the fastest recent ones, and halves when answers slow down
// (the path is busy, with real-time traffic or other batches), the way a
// TCP sender probes a link.
type pacer struct {
	max   int
	cwnd  float64
	floor time.Duration // fastest recent answer
	seen  int
}

func newPacer(max int) *pacer { return &pacer{max: max, cwnd: 4} }

// window is how many lines may be in flight.
func (p *pacer) window() int {
	return max(1, min(p.max, int(p.cwnd)))
}

// observe feeds one answered line's round trip.
func (p *pacer) observe(rtt time.Duration) {
	p.seen++
	if p.floor == 0 || rtt < p.floor {
		p.floor = rtt
	}
	// The floor drifts up slowly, so one lucky answer long ago does not
	// hold the window down for ever.
	if p.seen%256 == 0 {
		p.floor += p.floor / 4
	}
	slow := 4*p.floor + 20*time.Millisecond
	switch {
	case rtt > slow:
		p.cwnd = max(1, p.cwnd/2)
	default:
		p.cwnd = min(float64(p.max), p.cwnd+1/max(1, p.cwnd)*4)
	}
}
