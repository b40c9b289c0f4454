package jobs

import (
	"testing"
	"time"
)

// TestPacerSlowsBelowOneLineInFlight: while every round trip waits far
// above the unloaded one (real time holding the batch lane's CPU), the
// pacer leaves gaps between single lines, of 15 unloaded round trips at
// most and never more than maxGap, even when answers come seconds late;
// once the queueing is gone it sends back to back again and widens the
// window.
func TestPacerSlowsBelowOneLineInFlight(t *testing.T) {
	p := newPacer(64, 5*time.Millisecond)
	now := time.Unix(0, 0)
	p.observe(2*time.Millisecond, now) // the unloaded round trip
	for range 200 {
		now = now.Add(40 * time.Millisecond)
		p.observe(40*time.Millisecond, now)
	}
	if p.window() != 1 || p.cwnd != minWindow {
		t.Fatalf("window %d (cwnd %.4f) under sustained queueing", p.window(), p.cwnd)
	}
	gap := p.next.Sub(now)
	if gap != 15*p.floor || p.ready(now.Add(gap/2)) || !p.ready(now.Add(gap)) {
		t.Fatalf("gap %s after an answer", gap)
	}
	// an outage: answers seconds late do not stretch the pause
	now = now.Add(8 * time.Second)
	p.observe(8*time.Second, now)
	if gap := p.next.Sub(now); gap > maxGap {
		t.Fatalf("gap %s after an outage", gap)
	}
	for range 400 {
		now = now.Add(2 * time.Millisecond)
		p.observe(2*time.Millisecond, now)
	}
	if !p.ready(now) || p.window() < 8 {
		t.Fatalf("window %d, ready %v once the queueing is gone", p.window(), p.ready(now))
	}
}
