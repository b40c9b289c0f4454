package control_test

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

func TestBatchDropsDefaultAndOldRecords(t *testing.T) {
	s := control.NewState(zap.NewNop())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A record written before resources had batchDrops still decodes,
	// and its drops are on at the default location.
	old := events.ControlChange{Kind: events.ControlResource, ID: "acme", Actor: "test", At: now,
		Spec: json.RawMessage(`{"name":"acme","location":"eu","contentLogging":true,"optOutApproved":false,"contact":{}}`)}
	s.ApplyChange(old)
	r, ok := s.Resource("acme")
	if !ok {
		t.Fatal("an old resource record was not decoded")
	}
	if d := r.Drops(); !d.Enabled || d.Location != "acme/" {
		t.Fatalf("default drops of an old record = %+v", d)
	}
	s.ApplyChange(change(t, events.ControlResource, "acme", "acme", now.Add(time.Second), control.Resource{Name: "acme", Location: "eu",
		ContentLogging: true, BatchDrops: &control.BatchDrops{Enabled: false, Location: "teams/acme/"}}))
	r, _ = s.Resource("acme")
	if d := r.Drops(); d.Enabled || d.Location != "teams/acme/" {
		t.Fatalf("drops set = %+v", d)
	}
}

func TestDropLocations(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "acme", want: "acme/"},
		{in: "acme/", want: "acme/"},
		{in: "teams/acme/", want: "teams/acme/"},
		{in: "/acme", bad: true},
		{in: "", bad: true},
		{in: "..", bad: true},
		{in: "a/../b", bad: true},
		{in: "a/./b", bad: true},
		{in: "a//b", bad: true},
		{in: `a\b`, bad: true},
		{in: "a/inbox", bad: true}, // would shadow another location's folders
		{in: "a\x00b", bad: true},
	} {
		got, err := control.CleanDropLocation(tc.in)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("CleanDropLocation(%q) = %q, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		a, b    string
		overlap bool
	}{
		{"acme/", "acme/", true},
		{"acme/", "acme/sub/", true},
		{"teams/a/", "teams/", true},
		{"Acme/", "acme/", true}, // one directory on a case-insensitive file system
		{"acme/", "acme2/", false},
		{"teams/a/", "teams/b/", false},
	} {
		if got := control.DropLocationsOverlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("DropLocationsOverlap(%q, %q) = %v", tc.a, tc.b, got)
		}
		if got := control.DropLocationsOverlap(tc.b, tc.a); got != tc.overlap {
			t.Errorf("DropLocationsOverlap(%q, %q) = %v", tc.b, tc.a, got)
		}
	}
}
