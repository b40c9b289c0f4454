package jobs

import "time"

// pacer sizes a job's window of lines in flight so that batch lines use
// spare capacity without queueing ahead of real-time requests. It
// watches the round trip of its own lines, as a delay-based (Vegas-like)
// TCP sender does: the fastest recent round trip is the path's unloaded
// time, and anything above it is time spent waiting in the services'
// queues, its own lines' and real-time traffic's (the batch lane's
// instances, at a low CPU priority, wait whenever real time wants the
// CPU). While that queueing stays under a small target the window grows
// by one line per window of answers; above it, it shrinks by one; far
// above, by a quarter. Below one line the window becomes a gap: one line
// at a time, with a pause after each answer of up to 15 unloaded round
// trips (and at most maxGap), so that real-time traffic that keeps the path busy slows
// the batch to a trickle rather than to one line always in flight. The
// target, the larger of 5 ms and the unloaded round trip, was chosen
// with stackbench (the batch README has the runs).
type pacer struct {
	max    int
	target time.Duration // the queueing target's least value
	cwnd   float64
	floor  time.Duration // fastest recent round trip
	seen   int
	next   time.Time // no line is sent before it while cwnd < 1
}

// minWindow is the smallest window: a pause of 15 unloaded round trips
// after each answer. The pause is counted in unloaded round trips, not
// in recent ones, and bounded by maxGap, so that an outage (a rebalance
// after an instance died, answers late by seconds) does not leave the
// job waiting minutes between lines.
const (
	minWindow = 1.0 / 16
	maxGap    = 100 * time.Millisecond
)

func newPacer(max int, target time.Duration) *pacer {
	return &pacer{max: max, target: target, cwnd: 2}
}

// window is how many lines may be in flight.
func (p *pacer) window() int {
	return max(1, min(p.max, int(p.cwnd)))
}

// ready reports whether a line may be sent at now as far as the gap
// after the last answer goes.
func (p *pacer) ready(now time.Time) bool { return !now.Before(p.next) }

// observe feeds one line's round trip, answered at now.
func (p *pacer) observe(rtt time.Duration, now time.Time) {
	p.seen++
	if p.floor == 0 || rtt < p.floor {
		p.floor = rtt
	}
	// The floor drifts up slowly, so one lucky answer long ago does not
	// hold the window down for ever.
	if p.seen%128 == 0 {
		p.floor += p.floor / 8
	}
	target := max(p.target, p.floor)
	queued := rtt - p.floor
	switch {
	case queued > 4*target:
		p.cwnd = max(minWindow, p.cwnd*3/4)
	case queued > target && p.cwnd >= 2:
		p.cwnd -= 1 / p.cwnd
	case queued > target:
		p.cwnd = max(minWindow, p.cwnd*7/8)
	case p.cwnd < 1:
		p.cwnd = min(1, p.cwnd*9/8)
	default:
		p.cwnd = min(float64(p.max), p.cwnd+1/p.cwnd)
	}
	p.next = time.Time{}
	if p.cwnd < 1 {
		p.next = now.Add(min(maxGap, time.Duration(float64(p.floor)*(1/p.cwnd-1))))
	}
}
