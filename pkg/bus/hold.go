package bus

import (
	"cmp"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Hold keeps the committed offset of one partition from passing one
// record after that record is settled. See Consumer.Hold.
type Hold struct {
	c    *Consumer
	pt   *partTrack // nil when the record's partition was not held
	p    *pending
	once sync.Once
}

// Hold keeps the committed offset of r's partition from passing r until
// the returned hold is released, although r itself is settled when its
// handler returns. It is for work that spans records, such as an answer
// assembled from a stream of chunks: hold the first record, release the
// hold once the work is done, and if this consumer stops or loses the
// partition first, the partition's next owner reads again from r and
// redoes the work whole. Records behind r are still handled as they come;
// only their commit waits. Call Hold from r's handler.
//
// While a partition has a held record, what it has settled behind that
// record is remembered only as far as committing needs (one entry per run
// of settled records), so a long hold costs little memory.
func (c *Consumer) Hold(r *kgo.Record) *Hold {
	h := &Hold{c: c}
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.parts[topicPartition{r.Topic, r.Partition}]
	if pt == nil || pt.gone || pt.closing {
		return h
	}
	i, ok := slices.BinarySearchFunc(pt.pending, r.Offset, func(p *pending, off int64) int { return cmp.Compare(p.r.Offset, off) })
	if !ok || pt.pending[i].settled {
		return h // already marked, or settled before the hold: too late to hold
	}
	h.pt, h.p = pt, pt.pending[i]
	h.p.held++
	return h
}

// Release lets the committed offset pass the held record (and, with it,
// whatever is settled behind it). It is idempotent and safe on a nil Hold.
func (h *Hold) Release() {
	if h == nil || h.pt == nil {
		return
	}
	h.once.Do(func() {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		h.p.held--
		h.c.advance(h.pt)
	})
}

// Revoked reports whether the held record's partition has left this
// consumer (or was never held): its records go to the partition's next
// owner, which reads them again from the held record, so whatever was
// built from them here is stale. While the partition is being revoked,
// records already running finish first and Revoked is still false for
// them. True for a nil Hold.
func (h *Hold) Revoked() bool {
	if h == nil || h.pt == nil {
		return true
	}
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.pt.gone
}

// compact collapses each run of settled, unheld records behind the first
// unmarkable one to the run's last record, which is all a later advance
// marks; it runs when pending has doubled since it last ran, so its cost
// per record is constant. c.mu is held.
func compact(pt *partTrack) {
	if len(pt.pending) < max(pt.compactAt, 64) {
		return
	}
	free := func(p *pending) bool { return p.settled && p.held == 0 }
	kept := pt.pending[:0]
	for i, p := range pt.pending {
		if free(p) && i+1 < len(pt.pending) && free(pt.pending[i+1]) {
			continue
		}
		kept = append(kept, p)
	}
	clear(pt.pending[len(kept):])
	pt.pending = kept
	pt.compactAt = 2 * len(kept)
}
