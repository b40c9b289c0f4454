package jobs

import "time"

// pacer sizes a job's window of lines in flight so that batch lines use
// spare capacity without queueing ahead of real-time requests. It
// watches the round trip of its own lines, as a delay-based (Vegas-like)
// TCP sender does: the fastest recent round trip is the path's unloaded
// time, and anything above it is time spent waiting in the services'
// queues, its own lines' and real-time traffic's. While that queueing
// stays under a small target the window grows by one line per window of
// answers; above it, it shrinks by one; far above, by a quarter. The
// window never fills the queues, so a real-time request finds them
// short. The target, the larger of 5 ms and the unloaded round trip,
// was chosen with stackbench (the batch README has the runs): half of it
// halved the batch's rate and left real time no faster.
type pacer struct {
	max   int
	cwnd  float64
	floor time.Duration // fastest recent round trip
	seen  int
}

func newPacer(max int) *pacer { return &pacer{max: max, cwnd: 2} }

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
	if p.seen%128 == 0 {
		p.floor += p.floor / 8
	}
	target := max(5*time.Millisecond, p.floor)
	queued := rtt - p.floor
	switch {
	case queued > 4*target:
		p.cwnd = max(1, p.cwnd*3/4)
	case queued > target:
		p.cwnd = max(1, p.cwnd-1/p.cwnd)
	default:
		p.cwnd = min(float64(p.max), p.cwnd+1/p.cwnd)
	}
}
