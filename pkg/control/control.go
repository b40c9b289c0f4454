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
// every geography. Within one geography's topic the record written later
// (the higher offset) wins, whatever the writers' clocks say; only when
// one object arrives from several geographies does the change's time
// decide between the latest record of each.
package control

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"

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
	value  any   // the decoded spec; nil for a deletion
	offset int64 // position in its geography's control topic
}

type keyRef struct{ resource, name string }

// State is the current state of every object. Per object it keeps the
// latest record of each geography's topic; the newest of those, by the
// change's time, is the object's state. A deletion (or a tombstone,
// after compaction) removes the object.
type State struct {
	log *zap.Logger

	mu      sync.RWMutex
	records map[string]entry            // current state of live objects
	sources map[string]map[string]entry // object key → geography → latest record
	hashes  map[string]keyRef           // API-key hash → its slot
	local   int64                       // offsets of ApplyChange
	version uint64
	changed chan struct{}
}

// NewState returns an empty view.
func NewState(log *zap.Logger) *State {
	return &State{log: log.Named("control"), records: map[string]entry{}, sources: map[string]map[string]entry{},
		hashes: map[string]keyRef{}, changed: make(chan struct{})}
}

// Apply folds one record of a control topic into the view; it is the
// apply function of the control topics' bus.Table.
func (s *State) Apply(d *bus.Delivery) {
	key := string(d.Record.Key)
	if d.Record.Value == nil {
		s.mu.Lock()
		if src := s.sources[key]; src != nil {
			delete(src, d.Geo)
			if len(src) == 0 {
				delete(s.sources, key)
			}
		}
		s.settle(key)
		s.bump()
		s.mu.Unlock()
		return
	}
	var c events.ControlChange
	if err := d.Decode(context.Background(), &c); err != nil {
		s.log.Error("unreadable control record", zap.String("key", key), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	s.ApplyFrom(d.Geo, d.Record.Offset, c)
}

// ApplyChange folds one change into the view as the next record of a
// single local source, for tools and tests that seed a view without a
// topic.
func (s *State) ApplyChange(c events.ControlChange) {
	s.mu.Lock()
	s.local++
	off := s.local
	s.mu.Unlock()
	s.ApplyFrom("", off, c)
}

// ApplyFrom folds the change read at offset of geo's control topic into
// the view. A record at or before the latest one applied from that topic
// for the same object is a replay and changes nothing.
func (s *State) ApplyFrom(geo string, offset int64, c events.ControlChange) {
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
	src := s.sources[key]
	if src == nil {
		src = map[string]entry{}
		s.sources[key] = src
	}
	if e, ok := src[geo]; ok && offset <= e.offset {
		return
	}
	src[geo] = entry{change: c, value: value, offset: offset}
	s.settle(key)
	s.bump()
}

// settle makes the newest of an object's latest records, by the time of
// the change, its current state. Equal times (one write copied to every
// geography) fall to the geography's name, so every view agrees.
func (s *State) settle(key string) {
	var (
		win    entry
		winGeo string
		found  bool
	)
	for g, e := range s.sources[key] {
		if !found || e.change.At.After(win.change.At) || (e.change.At.Equal(win.change.At) && g > winGeo) {
			win, winGeo, found = e, g, true
		}
	}
	s.remove(key)
	if !found || win.change.Deleted {
		return
	}
	s.records[key] = win
	if k, ok := win.value.(APIKey); ok {
		s.hashes[k.Hash] = keyRef{win.change.Resource, k.Name}
	}
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
	slices.SortFunc(out, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.change.ID, b.change.ID), strings.Compare(a.change.Resource, b.change.Resource))
	})
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
