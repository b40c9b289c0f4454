// Package events names every event type that crosses the bus, its version,
// and how the bus must protect its payload. The Go types of the payloads
// live beside it; their JSON Schemas live in the repository's
// folder, one file per type and version (for example
// schemas/events/inference.request.v1.json).
package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Type is an event type and its version, written "name.vN" on the wire
// (header terroir-event-type carries the name, terroir-event-version the N).
type Type struct {
	Name    string
	Version int
}

// String returns the schema name of the type, e.g. "inference.request.v1".
func (t Type) String() string { return t.Name + ".v" + strconv.Itoa(t.Version) }

// ParseType parses "inference.request.v1".
func ParseType(s string) (Type, error) {
	i := strings.LastIndex(s, ".v")
	if i <= 0 {
		return Type{}, fmt.Errorf("event type %q: missing .vN suffix", s)
	}
	v, err := strconv.Atoi(s[i+2:])
	if err != nil || v < 1 {
		return Type{}, fmt.Errorf("event type %q: bad version", s)
	}
	return Type{Name: s[:i], Version: v}, nil
}

// Protection says how the bus seals an event's payload. It is fixed per
// event type in the registry below, so a publisher cannot choose to send
// customer content in plaintext.
type Protection int

const (
	// Plain payloads carry operational metadata only: IDs, sizes,
	// categories, timings, wrapped keys. Never prompt or output text.
	Plain Protection = iota + 1
	// ResourceKey payloads carry customer content and are sealed with
	// AES-256-GCM under the resource's data key (crypto-shredded with it).
	ResourceKey
	// AbuseKey payloads are abuse-monitoring records, sealed under the
	// geography's abuse-monitoring key so their subject cannot erase them;
	// they expire with the topic's 30-day retention.
	AbuseKey
)

func (p Protection) String() string {
	switch p {
	case Plain:
		return "plain"
	case ResourceKey:
		return "resource-key"
	case AbuseKey:
		return "abuse-key"
	}
	return "unknown"
}

// Event is implemented by every payload type the bus can carry.
type Event interface {
	EventType() Type
}

// Spec describes one registered event type.
type Spec struct {
	Type       Type
	Protection Protection
}

// Lookup returns the registered spec of t. Types that are not registered
// cannot be published or consumed.
func Lookup(t Type) (Spec, bool) {
	for _, s := range registry {
		if s.Type == t {
			return s, true
		}
	}
	return Spec{}, false
}

// LookupReceived returns the spec a consumer applies to a received type:
// the registered one, or for the next version of a registered type (a
// producer upgraded before this consumer) the current version's, whose
// protection a new version never weakens.
func LookupReceived(t Type) (Spec, bool) {
	if s, ok := Lookup(t); ok {
		return s, true
	}
	if s, ok := Lookup(Type{Name: t.Name, Version: t.Version - 1}); ok {
		return Spec{Type: t, Protection: s.Protection}, true
	}
	return Spec{}, false
}

// Accepts reports whether a consumer built for want also accepts got:
// the same name at the current or the next version (so producers can be
// upgraded before consumers).
func Accepts(want, got Type) bool {
	return want.Name == got.Name && (got.Version == want.Version || got.Version == want.Version+1)
}

// All returns every registered spec, in registry order.
func All() []Spec { return append([]Spec(nil), registry...) }

// registry is the one place that decides whether an event type carries
// customer content. It is read-only.
var registry = []Spec{
	{TypeInferenceRequestV1, ResourceKey},
	{TypeInferenceRequest, ResourceKey},
	{TypeInferenceChunk, ResourceKey},
	{TypeInferenceResultV1, ResourceKey},
	{TypeInferenceResult, ResourceKey},
	{TypeUsageRecord, Plain},
	{TypeSafetySignalV1, Plain},
	{TypeSafetySignal, Plain},
	{TypeAbuseRecord, AbuseKey},
	{TypeAuditEntry, Plain},
	{TypeCapacityReport, Plain},
	{TypeControlChange, Plain},
	{TypeDataKey, Plain},
	{TypeFileObject, ResourceKey},
	{TypeBatchObject, ResourceKey},
	{TypeBatchCommand, ResourceKey},
}

// Registered event types: the current version of each, which producers
// send.
var (
	TypeInferenceRequest = Type{"inference.request", 2}
	TypeInferenceChunk   = Type{"inference.chunk", 1}
	TypeInferenceResult  = Type{"inference.result", 2}
	TypeUsageRecord      = Type{"usage.record", 1}
	TypeSafetySignal     = Type{"safety.signal", 2}
	TypeAbuseRecord      = Type{"abuse.record", 1}
	TypeAuditEntry       = Type{"audit.entry", 1}
	TypeCapacityReport   = Type{"capacity.report", 1}
	TypeControlChange    = Type{"control.change", 1}
	TypeDataKey          = Type{"keys.datakey", 1}
	TypeFileObject       = Type{"file.object", 1}
	TypeBatchObject      = Type{"batch.object", 1}
	TypeBatchCommand     = Type{"batch.command", 1}
)

// Earlier versions still registered: records of them may remain on their
// topics, and consumers read them into the current Go type (each next
// version only adds optional fields). Nothing publishes them.
var (
	TypeInferenceRequestV1 = Type{"inference.request", 1}
	TypeInferenceResultV1  = Type{"inference.result", 1}
	TypeSafetySignalV1     = Type{"safety.signal", 1}
)
