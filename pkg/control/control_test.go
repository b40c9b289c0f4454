package control_test

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

func change(t *testing.T, kind events.ControlKind, resource, id string, at time.Time, spec any) events.ControlChange {
	t.Helper()
	c := events.ControlChange{Kind: kind, ID: id, Resource: resource, Actor: "test", At: at}
	if spec == nil {
		c.Deleted = true
		return c
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c.Spec = raw
	return c
}

func TestKeysSeparateResources(t *testing.T) {
	if a, b := control.Key(events.ControlDeployment, "acme", "chat"), control.Key(events.ControlDeployment, "globex", "chat"); a == b {
		t.Fatalf("two resources' deployments share the key %q", a)
	}
	if k := control.Key(events.ControlResource, "acme", "acme"); k != "resource/acme" {
		t.Fatalf("resource key = %q", k)
	}
}

// TestOlderChangesFromAnotherGeographyAreIgnored: a deployment policy is
// written to every geography, so the view may read an older copy after a
// newer one; the newer state must win, deletions included.
func TestOlderChangesFromAnotherGeographyAreIgnored(t *testing.T) {
	s := control.NewState(zap.NewNop())
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v1 := control.DeploymentPolicy{Name: "p", AssignedTo: []string{"*"}, CuratedOnly: false}
	v2 := control.DeploymentPolicy{Name: "p", AssignedTo: []string{"*"}, CuratedOnly: true}
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0, v1))                  // eu
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(time.Second), v2)) // eu
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0, v1))                  // us, late
	if p, ok := s.DeploymentPolicy("p"); !ok || !p.CuratedOnly {
		t.Fatalf("older copy overwrote the newer: %+v", p)
	}
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(2*time.Second), nil))
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(time.Second), v2)) // us, late
	if _, ok := s.DeploymentPolicy("p"); ok {
		t.Fatal("an older copy resurrected a deleted policy")
	}
	s.ApplyChange(change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(3*time.Second), v1))
	if _, ok := s.DeploymentPolicy("p"); !ok {
		t.Fatal("recreating a deleted policy did not take")
	}
	if got := s.PoliciesFor("anyone"); len(got) != 1 {
		t.Fatalf("PoliciesFor = %+v", got)
	}
}

func TestAuthenticateFollowsTheKeySlots(t *testing.T) {
	s := control.NewState(zap.NewNop())
	now := time.Now()
	changed := s.Changed()
	s.ApplyChange(change(t, events.ControlAPIKey, "acme", "key1", now, control.APIKey{Name: "key1", Hash: control.HashAPIKey("old")}))
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not signalled")
	}
	if res, slot, ok := s.Authenticate("old"); !ok || res != "acme" || slot != "key1" {
		t.Fatalf("Authenticate(old) = %q %q %v", res, slot, ok)
	}
	s.ApplyChange(change(t, events.ControlAPIKey, "acme", "key1", now.Add(time.Millisecond), control.APIKey{Name: "key1", Hash: control.HashAPIKey("new")}))
	if _, _, ok := s.Authenticate("old"); ok {
		t.Fatal("a replaced key still authenticates")
	}
	if _, _, ok := s.Authenticate("new"); !ok {
		t.Fatal("the new key does not authenticate")
	}
	s.ApplyChange(change(t, events.ControlAPIKey, "acme", "key1", now.Add(2*time.Millisecond), nil))
	if _, _, ok := s.Authenticate("new"); ok {
		t.Fatal("a deleted key still authenticates")
	}
	if _, _, ok := s.Authenticate(""); ok {
		t.Fatal("the empty key authenticates")
	}
}

func TestTypedViews(t *testing.T) {
	s := control.NewState(zap.NewNop())
	now := time.Now()
	for _, r := range []string{"acme", "globex"} {
		s.ApplyChange(change(t, events.ControlResource, r, r, now, control.Resource{Name: r, Location: "eu", ContentLogging: true}))
		s.ApplyChange(change(t, events.ControlDeployment, r, "chat", now, control.Deployment{Name: "chat", Resource: r, Capacity: len(r)}))
	}
	s.ApplyChange(change(t, events.ControlFilterPolicy, "acme", "strict", now, control.FilterPolicy{Name: "strict", Resource: "acme",
		Prompt: control.FilterRules{Blocklists: []string{"names"}}}))
	s.ApplyChange(change(t, events.ControlAudit, "acme", "a1", now, control.AuditRecord{ID: "a1", Resource: "acme", At: now}))
	s.ApplyChange(change(t, events.ControlAudit, "", "a2", now.Add(time.Second), control.AuditRecord{ID: "a2", At: now.Add(time.Second)}))

	if rs := s.Resources(); len(rs) != 2 || rs[0].Name != "acme" {
		t.Fatalf("Resources = %+v", rs)
	}
	if d, ok := s.Deployment("globex", "chat"); !ok || d.Capacity != 6 {
		t.Fatalf("globex's deployment = %+v (one resource's object leaked into another's)", d)
	}
	if ds := s.Deployments("acme"); len(ds) != 1 || ds[0].Resource != "acme" {
		t.Fatalf("Deployments(acme) = %+v", ds)
	}
	ps := s.FilterPolicies("acme")
	if len(ps) != 2 || ps[0].Name != control.DefaultFilterPolicyName || !ps[1].UsesBlocklist("names") {
		t.Fatalf("FilterPolicies = %+v", ps)
	}
	if p, ok := s.FilterPolicy("globex", "default"); !ok || p.Prompt.Thresholds["hate"] != control.ThresholdMedium || !p.Prompt.Jailbreak {
		t.Fatalf("default policy = %+v", p)
	}
	if _, ok := s.FilterPolicy("globex", "strict"); ok {
		t.Fatal("acme's policy is visible in globex")
	}
	if a := s.Audit("", 0); len(a) != 2 || a[0].ID != "a2" {
		t.Fatalf("Audit = %+v", a)
	}
	if a := s.Audit("acme", 0); len(a) != 1 || a[0].ID != "a1" {
		t.Fatalf("Audit(acme) = %+v", a)
	}
	if a := s.Audit("", 1); len(a) != 1 {
		t.Fatalf("Audit limit = %+v", a)
	}
}

func TestThresholdBlocks(t *testing.T) {
	cases := []struct {
		t    control.Threshold
		s    events.Severity
		want bool
	}{
		{control.ThresholdLow, events.SeverityLow, true},
		{control.ThresholdLow, events.SeveritySafe, false},
		{control.ThresholdMedium, events.SeverityLow, false},
		{control.ThresholdMedium, events.SeverityMedium, true},
		{control.ThresholdMedium, events.SeverityHigh, true},
		{control.ThresholdHigh, events.SeverityMedium, false},
		{control.ThresholdHigh, events.SeverityHigh, true},
		{control.ThresholdOff, events.SeverityHigh, false},
	}
	for _, c := range cases {
		if got := c.t.Blocks(c.s); got != c.want {
			t.Errorf("%s blocks %s = %v", c.t, c.s, got)
		}
	}
}
