package events_test

import (
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
)

func TestParseType(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want events.Type
		ok   bool
	}{
		{"inference.request.v1", events.TypeInferenceRequest, true},
		{"a.v12", events.Type{Name: "a", Version: 12}, true},
		{"inference.request", events.Type{}, false},
		{"inference.request.v0", events.Type{}, false},
		{"inference.request.vx", events.Type{}, false},
		{".v1", events.Type{}, false},
	}
	for _, c := range cases {
		got, err := events.ParseType(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseType(%q) = %v, %v", c.in, got, err)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("String() = %q, want %q", got.String(), c.in)
		}
	}
}

func TestConsumersAcceptCurrentAndNextVersion(t *testing.T) {
	t.Parallel()
	next := events.Type{Name: "inference.request", Version: 2}
	s, ok := events.LookupReceived(next)
	if !ok || s.Protection != events.ResourceKey || s.Type != next {
		t.Fatalf("next version: %+v %v", s, ok)
	}
	if _, ok := events.LookupReceived(events.Type{Name: "inference.request", Version: 3}); ok {
		t.Error("accepted two versions ahead")
	}
	if _, ok := events.LookupReceived(events.Type{Name: "made.up", Version: 1}); ok {
		t.Error("accepted an unregistered type")
	}
	if _, ok := events.Lookup(next); ok {
		t.Error("the next version is publishable before it is registered")
	}
	if !events.Accepts(events.TypeUsageRecord, events.Type{Name: "usage.record", Version: 2}) ||
		events.Accepts(events.TypeUsageRecord, events.Type{Name: "usage.record", Version: 3}) ||
		events.Accepts(events.TypeUsageRecord, events.TypeSafetySignal) {
		t.Error("Accepts")
	}
}

func TestEveryRegisteredTypeHasAProtection(t *testing.T) {
	t.Parallel()
	seen := map[events.Type]bool{}
	for _, s := range events.All() {
		if s.Protection.String() == "unknown" {
			t.Errorf("%s has no protection", s.Type)
		}
		if seen[s.Type] {
			t.Errorf("%s registered twice", s.Type)
		}
		seen[s.Type] = true
	}
}
