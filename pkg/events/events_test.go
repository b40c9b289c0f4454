package events_test

import (
	"slices"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
)

func TestParseType(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want events.Type
		ok   bool
	}{
		{"inference.request.v1", events.TypeInferenceRequestV1, true},
		{"inference.request.v2", events.TypeInferenceRequest, true},
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
	next := events.Type{Name: "inference.request", Version: events.TypeInferenceRequest.Version + 1}
	s, ok := events.LookupReceived(next)
	if !ok || s.Protection != events.ResourceKey || s.Type != next {
		t.Fatalf("next version: %+v %v", s, ok)
	}
	if _, ok := events.LookupReceived(events.Type{Name: "inference.request", Version: next.Version + 1}); ok {
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

func TestSignalDirections(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	prompt := events.Findings{Categories: events.Categories{Hate: events.CategoryResult{Severity: events.SeverityMedium}},
		Detections: events.Detections{Jailbreak: &events.Detection{Detected: true}}, BlocklistHits: []string{"bl"}, ContentHash: "p", At: at}
	both := events.SafetySignal{RequestID: "r", Resource: "acme", Deployment: "chat", HomeGeo: "eu", Direction: events.DirectionCompletion,
		Categories: events.Categories{Violence: events.CategoryResult{Severity: events.SeverityHigh, Filtered: true}}, ContentHash: "c",
		Filtered: true, At: at.Add(time.Second), Prompt: &prompt}
	got := both.Directions()
	if len(got) != 2 {
		t.Fatalf("%d signals, want 2", len(got))
	}
	p, c := got[0], got[1]
	if p.Direction != events.DirectionPrompt || p.Prompt != nil || p.Categories != prompt.Categories || p.Detections != prompt.Detections ||
		!slices.Equal(p.BlocklistHits, prompt.BlocklistHits) || p.ContentHash != "p" || p.Filtered || !p.At.Equal(at) || p.RequestID != "r" || p.Resource != "acme" {
		t.Errorf("prompt signal %+v", p)
	}
	if c.Direction != events.DirectionCompletion || c.Prompt != nil || c.ContentHash != "c" || !c.Filtered || !c.At.Equal(at.Add(time.Second)) {
		t.Errorf("completion signal %+v", c)
	}
	one := events.SafetySignal{RequestID: "r", Direction: events.DirectionPrompt, ContentHash: "p"}
	if got := one.Directions(); len(got) != 1 || got[0].ContentHash != "p" {
		t.Errorf("one-direction signal split into %+v", got)
	}
}
