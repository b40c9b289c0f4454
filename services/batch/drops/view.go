package drops

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// View is a materialised batches stream of one geography: the newest
// record (by Version) of every batch, and which batches changed since
// they were last taken.
type View struct {
	log *zap.Logger

	mu      sync.Mutex
	batches map[string]events.BatchObject // key "<resource>/<batch id>"
	dirty   map[string]bool
	changed chan struct{}
}

// NewView returns an empty view.
func NewView(log *zap.Logger) *View {
	return &View{log: log, batches: map[string]events.BatchObject{}, dirty: map[string]bool{}, changed: make(chan struct{}, 1)}
}

// BatchKey is the record key of a batch.
func BatchKey(resource, id string) string { return resource + "/" + id }

// Apply folds one record of the batches stream into the view; it is the
// apply function of the stream's bus.Table.
func (v *View) Apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	if d.Record.Value == nil {
		v.mu.Lock()
		delete(v.batches, key)
		delete(v.dirty, key)
		v.mu.Unlock()
		return
	}
	var b events.BatchObject
	if err := d.Decode(context.Background(), &b); err != nil {
		v.log.Error("unreadable batch record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	v.Put(b)
}

// Put folds b into the view unless it holds a newer version.
func (v *View) Put(b events.BatchObject) {
	key := BatchKey(b.Resource, b.ID)
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.batches[key]; ok && old.Version > b.Version {
		return
	}
	v.batches[key] = b
	v.dirty[key] = true
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// Get returns the batch id of resource.
func (v *View) Get(resource, id string) (events.BatchObject, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	b, ok := v.batches[BatchKey(resource, id)]
	return b, ok
}

// Changed is signalled (without blocking the table) when a batch changed.
func (v *View) Changed() <-chan struct{} { return v.changed }

// takeDirty returns the batches that changed since the last call.
func (v *View) takeDirty() []events.BatchObject {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]events.BatchObject, 0, len(v.dirty))
	for k := range v.dirty {
		out = append(out, v.batches[k])
	}
	clear(v.dirty)
	return out
}

// markDirty asks for b to be looked at again.
func (v *View) markDirty(b events.BatchObject) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.batches[BatchKey(b.Resource, b.ID)]; ok {
		v.dirty[BatchKey(b.Resource, b.ID)] = true
	}
}

// latestDrop reports whether b is the newest drop batch of its resource
// under its drop name, which owns the outbox files of that name.
func (v *View) latestDrop(b events.BatchObject) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, o := range v.batches {
		if o.Resource == b.Resource && o.Source == events.BatchSourceDrop && o.DropName == b.DropName && o.ID != b.ID &&
			(o.CreatedAt.After(b.CreatedAt) || o.CreatedAt.Equal(b.CreatedAt) && o.ID > b.ID) {
			return false
		}
	}
	return true
}
