// Package control holds a service's view of the control plane
// (resources, API-key hashes, deployments, content-filter policies,
// blocklists, deployment policies, enforcement and the audit of changes),
// materialised from the compacted control topic of every geography the
// service joins, and the publisher that writes it. No service reads
// another's database: this view is how they share that state.
//
// Objects that belong to a resource travel on the control topic of the
// resource's home geography only, so its metadata stays where its data
// does; deployment policies belong to no resource and are written to
// every geography. A change older than the one already applied for the
// same object is ignored, which keeps the view right when one object
// arrives from several geographies.
package control

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Key is the record key of a control change: "<kind>/<id>" for objects
// that belong to no resource (and for resources themselves), otherwise
// "<kind>/<resource>/<id>".
func Key(kind events.ControlKind, resource, id string) string {
	if resource == "" || kind == events.ControlResource {
		return string(kind) + "/" + id
	}
	return string(kind) + "/" + resource + "/" + id
}

// KeyOf returns the record key of c.
func KeyOf(c events.ControlChange) string { return Key(c.Kind, c.Resource, c.ID) }

type entry struct {
	change events.ControlChange
	value  any // the decoded spec
}

type keyRef struct{ resource, name string }

// State is the latest control change per object. A deletion (or a
// tombstone, after compaction) removes the object.
type State struct {
	log *zap.Logger

	mu      sync.RWMutex
	records map[string]entry
	deleted map[string]time.Time // when each deleted object was deleted
	hashes  map[string]keyRef    // API-key hash → its slot
	version uint64
	changed chan struct{}
}

// NewState returns an empty view.
func NewState(log *zap.Logger) *State {
	return &State{log: log.Named("control"), records: map[string]entry{}, deleted: map[string]time.Time{},
		hashes: map[string]keyRef{}, changed: make(chan struct{})}
}

// Apply folds one record of a control topic into the view; it is the
// apply function of the control topics' bus.Table.
func (s *State) Apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	if d.Record.Value == nil {
		s.mu.Lock()
		s.remove(key)
		delete(s.deleted, key)
		s.bump()
		s.mu.Unlock()
		return
	}
	var c events.ControlChange
	if err := d.Decode(context.Background(), &c); err != nil {
		s.log.Error("unreadable control record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	s.ApplyChange(c)
}

// ApplyChange folds one change into the view.
func (s *State) ApplyChange(c events.ControlChange) {
	key := KeyOf(c)
	var value any
	if !c.Deleted {
		var err error
		if value, err = decodeSpec(c.Kind, c.Spec); err != nil {
			s.log.Error("unreadable control spec", zap.String("key", key), zap.Error(err))
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.records[key]; ok && c.At.Before(e.change.At) {
		return // an older write of an object that arrived from another geography
	}
	if at, ok := s.deleted[key]; ok && c.At.Before(at) {
		return
	}
	s.remove(key)
	if c.Deleted {
		s.deleted[key] = c.At
	} else {
		delete(s.deleted, key)
		s.records[key] = entry{change: c, value: value}
		if k, ok := value.(APIKey); ok {
			s.hashes[k.Hash] = keyRef{c.Resource, k.Name}
		}
	}
	s.bump()
}

func (s *State) remove(key string) {
	if e, ok := s.records[key]; ok {
		if k, ok := e.value.(APIKey); ok {
			delete(s.hashes, k.Hash)
		}
		delete(s.records, key)
	}
}

func (s *State) bump() {
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of the view, for
// services that rebuild something (compiled blocklists, rate limiters)
// when the control plane changes.
func (s *State) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

func decodeSpec(kind events.ControlKind, spec json.RawMessage) (any, error) {
	switch kind {
	case events.ControlResource:
		return decodeAs[Resource](spec)
	case events.ControlAPIKey:
		return decodeAs[APIKey](spec)
	case events.ControlDeployment:
		return decodeAs[Deployment](spec)
	case events.ControlFilterPolicy:
		return decodeAs[FilterPolicy](spec)
	case events.ControlBlocklist:
		return decodeAs[Blocklist](spec)
	case events.ControlDeploymentPolicy:
		return decodeAs[DeploymentPolicy](spec)
	case events.ControlEnforcement:
		return decodeAs[Enforcement](spec)
	case events.ControlAudit:
		return decodeAs[AuditRecord](spec)
	}
	return spec, nil
}

func decodeAs[T any](spec json.RawMessage) (any, error) {
	var v T
	err := json.Unmarshal(spec, &v)
	return v, err
}

// Get returns the current change of an object.
func (s *State) Get(kind events.ControlKind, resource, id string) (events.ControlChange, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.records[Key(kind, resource, id)]
	return e.change, ok
}

// List returns the current changes of kind (of one resource when
// resource is set), sorted by ID.
func (s *State) List(kind events.ControlKind, resource string) []events.ControlChange {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []events.ControlChange
	for _, e := range s.entries(kind, resource) {
		out = append(out, e.change)
	}
	return out
}

func (s *State) entries(kind events.ControlKind, resource string) []entry {
	prefix := string(kind) + "/"
	if resource != "" && kind != events.ControlResource {
		prefix += resource + "/"
	}
	var out []entry
	for k, e := range s.records {
		if strings.HasPrefix(k, prefix) && (resource == "" || e.change.Resource == resource) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.change.ID, b.change.ID) })
	return out
}

func get[T any](s *State, kind events.ControlKind, resource, id string) (T, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.records[Key(kind, resource, id)]
	v, isT := e.value.(T)
	return v, ok && isT
}

func list[T any](s *State, kind events.ControlKind, resource string) []T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []T
	for _, e := range s.entries(kind, resource) {
		if v, ok := e.value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Resource returns the named resource.
func (s *State) Resource(name string) (Resource, bool) {
	return get[Resource](s, events.ControlResource, "", name)
}

// Resources returns every resource, sorted by name.
func (s *State) Resources() []Resource { return list[Resource](s, events.ControlResource, "") }

// APIKeys returns the key slots of resource that hold a key.
func (s *State) APIKeys(resource string) []APIKey {
	return list[APIKey](s, events.ControlAPIKey, resource)
}

// Authenticate returns the resource and key slot an API key belongs to.
func (s *State) Authenticate(key string) (resource, slot string, ok bool) {
	if key == "" {
		return "", "", false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	ref, ok := s.hashes[HashAPIKey(key)]
	return ref.resource, ref.name, ok
}

// Deployment returns a deployment of resource.
func (s *State) Deployment(resource, name string) (Deployment, bool) {
	return get[Deployment](s, events.ControlDeployment, resource, name)
}

// Deployments returns the deployments of resource, sorted by name.
func (s *State) Deployments(resource string) []Deployment {
	return list[Deployment](s, events.ControlDeployment, resource)
}

// FilterPolicy returns a content-filter policy of resource; the built-in
// default policy always exists.
func (s *State) FilterPolicy(resource, name string) (FilterPolicy, bool) {
	if name == DefaultFilterPolicyName {
		return DefaultFilterPolicy(resource), true
	}
	return get[FilterPolicy](s, events.ControlFilterPolicy, resource, name)
}

// FilterPolicies returns the content-filter policies of resource, the
// built-in default first.
func (s *State) FilterPolicies(resource string) []FilterPolicy {
	return append([]FilterPolicy{DefaultFilterPolicy(resource)}, list[FilterPolicy](s, events.ControlFilterPolicy, resource)...)
}

// Blocklist returns a blocklist of resource.
func (s *State) Blocklist(resource, name string) (Blocklist, bool) {
	return get[Blocklist](s, events.ControlBlocklist, resource, name)
}

// Blocklists returns the blocklists of resource, sorted by name.
func (s *State) Blocklists(resource string) []Blocklist {
	return list[Blocklist](s, events.ControlBlocklist, resource)
}

// DeploymentPolicy returns the named deployment policy.
func (s *State) DeploymentPolicy(name string) (DeploymentPolicy, bool) {
	return get[DeploymentPolicy](s, events.ControlDeploymentPolicy, "", name)
}

// DeploymentPolicies returns every deployment policy, sorted by name.
func (s *State) DeploymentPolicies() []DeploymentPolicy {
	return list[DeploymentPolicy](s, events.ControlDeploymentPolicy, "")
}

// PoliciesFor returns the deployment policies assigned to resource.
func (s *State) PoliciesFor(resource string) []DeploymentPolicy {
	var out []DeploymentPolicy
	for _, p := range s.DeploymentPolicies() {
		if p.AppliesTo(resource) {
			out = append(out, p)
		}
	}
	return out
}

// Enforcement returns the enforcement in force against resource.
func (s *State) Enforcement(resource string) (Enforcement, bool) {
	return get[Enforcement](s, events.ControlEnforcement, resource, resource)
}

// Audit returns the audit trail of control-plane changes, newest first:
// of one resource when resource is set, at most limit records when limit
// is positive.
func (s *State) Audit(resource string, limit int) []AuditRecord {
	all := list[AuditRecord](s, events.ControlAudit, "")
	var out []AuditRecord
	for _, a := range all {
		if resource == "" || a.Resource == resource {
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b AuditRecord) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
