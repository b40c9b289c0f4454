package batches

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// view is the batches of every resource, materialised from the compacted
// batches streams of the geographies served: a record keyed
// "<resource>/<batch id>" is the batch as ingress created it (version 0)
// or as the batch service last wrote it (higher versions), a tombstone
// its deletion. Of a batch's records the view keeps the one with the
// highest version, so a record the compaction or a retry delivers late
// never takes a batch back to an earlier state.
type view struct {
	log *zap.Logger
	mu  sync.RWMutex
	// byResource maps a resource to its batches by ID.
	byResource map[string]map[string]events.BatchObject
}

func newView(log *zap.Logger) *view {
	return &view{log: log, byResource: map[string]map[string]events.BatchObject{}}
}

// recordKey is the key of a batch's records on the batches and
// batch-jobs streams.
func recordKey(resource, id string) string { return resource + "/" + id }

// decodeTimeout bounds the key lookup of one record (the data key may
// have to be read from the keys topic first).
const decodeTimeout = 30 * time.Second

// apply folds one record of a batches stream into the view; it is the
// apply function of the batches tables.
func (v *view) apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	resource, id, ok := strings.Cut(key, "/")
	if !ok {
		v.log.Error("batches record with a malformed key", zap.String("key", key), zap.Int64("offset", d.Record.Offset))
		return
	}
	if d.Record.Value == nil {
		v.remove(resource, id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), decodeTimeout)
	defer cancel()
	var b events.BatchObject
	if err := d.Decode(ctx, &b); err != nil {
		// A record sealed under a shredded key belongs to a deleted
		// resource: its batch is gone for good.
		v.log.Warn("unreadable batches record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		v.remove(resource, id)
		return
	}
	if b.Resource != resource || b.ID != id || d.Meta.Resource != resource {
		v.log.Error("batches record under another key", zap.String("key", key), zap.Int64("offset", d.Record.Offset))
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.byResource[resource]
	if m == nil {
		m = map[string]events.BatchObject{}
		v.byResource[resource] = m
	}
	if old, ok := m[id]; ok && old.Version > b.Version {
		return
	}
	m[id] = b
}

func (v *view) remove(resource, id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m := v.byResource[resource]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(v.byResource, resource)
		}
	}
}

// get returns batch id of resource.
func (v *view) get(resource, id string) (events.BatchObject, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	b, ok := v.byResource[resource][id]
	return b, ok
}

// list returns the batches of resource, newest first (ties by ID,
// descending).
func (v *view) list(resource string) []events.BatchObject {
	v.mu.RLock()
	out := make([]events.BatchObject, 0, len(v.byResource[resource]))
	for _, b := range v.byResource[resource] {
		out = append(out, b)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.BatchObject) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	return out
}

// enqueued sums the enqueued tokens of the batches of resource that have
// not ended.
func (v *view) enqueued(resource string) int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var n int64
	for _, b := range v.byResource[resource] {
		if !b.Status.Terminal() {
			n += b.EnqueuedTokens
		}
	}
	return n
}

// ids lists the IDs of every batch of resource.
func (v *view) ids(resource string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.byResource[resource]))
	for id := range v.byResource[resource] {
		out = append(out, id)
	}
	return out
}
