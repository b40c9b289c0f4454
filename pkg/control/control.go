// Package control holds a service's view of the control plane
// (resources, deployments, policies, enforcement), materialised from the
// compacted control topic of every geography the service joins. No service
// reads another's database: this view is how they share that state.
package control

import (
	"context"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Key is the record key of a control change: "<kind>/<id>".
func Key(kind events.ControlKind, id string) string { return string(kind) + "/" + id }

// State is the latest control change per key. A deletion (or a
// tombstone, after compaction) removes the key.
type State struct {
	log *zap.Logger

	mu      sync.RWMutex
	records map[string]events.ControlChange
}

// NewState returns an empty view.
func NewState(log *zap.Logger) *State {
	return &State{log: log.Named("control"), records: map[string]events.ControlChange{}}
}

// Apply folds one record of a control topic into the view; it is the
// apply function of the control topics' bus.Table.
func (s *State) Apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	if d.Record.Value == nil {
		s.mu.Lock()
		delete(s.records, key)
		s.mu.Unlock()
		return
	}
	var c events.ControlChange
	if err := d.Decode(context.Background(), &c); err != nil {
		s.log.Error("unreadable control record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Deleted {
		delete(s.records, key)
		return
	}
	s.records[key] = c
}

// Get returns the current change of kind/id.
func (s *State) Get(kind events.ControlKind, id string) (events.ControlChange, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.records[Key(kind, id)]
	return c, ok
}

// List returns the current changes of kind, sorted by ID.
func (s *State) List(kind events.ControlKind) []events.ControlChange {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []events.ControlChange
	prefix := string(kind) + "/"
	for k, c := range s.records {
		if strings.HasPrefix(k, prefix) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b events.ControlChange) int { return strings.Compare(a.ID, b.ID) })
	return out
}
