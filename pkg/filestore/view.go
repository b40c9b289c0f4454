package filestore

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

// view is the file metadata of every resource, materialised from the
// compacted files streams of the geographies served: a record keyed
// "<resource>/<file id>" is the file's metadata, a tombstone its deletion.
type view struct {
	log *zap.Logger
	mu  sync.RWMutex
	// byResource maps a resource to its files by ID.
	byResource map[string]map[string]events.FileObject
}

func newView(log *zap.Logger) *view {
	return &view{log: log, byResource: map[string]map[string]events.FileObject{}}
}

// RecordKey is the key of a file's record on the files stream.
func RecordKey(resource, id string) string { return resource + "/" + id }

// decodeTimeout bounds the key lookup of one record (the data key may
// have to be read from the keys topic first).
const decodeTimeout = 30 * time.Second

// apply folds one record of a files stream into the view; it is the apply
// function of the files tables.
func (v *view) apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	resource, id, ok := strings.Cut(key, "/")
	if !ok {
		v.log.Error("files record with a malformed key", zap.String("key", key), zap.Int64("offset", d.Record.Offset))
		return
	}
	if d.Record.Value == nil {
		v.remove(resource, id)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), decodeTimeout)
	defer cancel()
	var f events.FileObject
	if err := d.Decode(ctx, &f); err != nil {
		// A record sealed under a shredded key belongs to a deleted
		// resource: its file is gone for good.
		v.log.Warn("unreadable files record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		v.remove(resource, id)
		return
	}
	if f.Resource != resource || f.ID != id || d.Meta.Resource != resource {
		v.log.Error("files record under another key", zap.String("key", key), zap.Int64("offset", d.Record.Offset))
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.byResource[resource]
	if m == nil {
		m = map[string]events.FileObject{}
		v.byResource[resource] = m
	}
	m[id] = f
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

// get returns the file id of resource, unless it has expired by now.
func (v *view) get(resource, id string, now time.Time) (events.FileObject, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	f, ok := v.byResource[resource][id]
	if !ok || expired(f, now) {
		return events.FileObject{}, false
	}
	return f, true
}

// list returns the live files of resource with purpose (any when empty),
// oldest first (ties by ID).
func (v *view) list(resource string, purpose events.FilePurpose, now time.Time) []events.FileObject {
	v.mu.RLock()
	out := make([]events.FileObject, 0, len(v.byResource[resource]))
	for _, f := range v.byResource[resource] {
		if (purpose == "" || f.Purpose == purpose) && !expired(f, now) {
			out = append(out, f)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.FileObject) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

func expired(f events.FileObject, now time.Time) bool {
	return f.ExpiresAt != nil && !now.Before(*f.ExpiresAt)
}

// ids lists the IDs of every file of resource, expired ones too.
func (v *view) ids(resource string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.byResource[resource]))
	for id := range v.byResource[resource] {
		out = append(out, id)
	}
	return out
}
