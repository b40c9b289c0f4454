package control_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/events/eventstest"
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
	s.ApplyFrom("eu", 0, change(t, events.ControlDeploymentPolicy, "", "p", t0, v1))
	s.ApplyFrom("eu", 1, change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(time.Second), v2))
	s.ApplyFrom("us", 0, change(t, events.ControlDeploymentPolicy, "", "p", t0, v1)) // late
	if p, ok := s.DeploymentPolicy("p"); !ok || !p.CuratedOnly {
		t.Fatalf("older copy overwrote the newer: %+v", p)
	}
	s.ApplyFrom("eu", 2, change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(2*time.Second), nil))
	s.ApplyFrom("us", 1, change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(time.Second), v2)) // late
	if _, ok := s.DeploymentPolicy("p"); ok {
		t.Fatal("an older copy resurrected a deleted policy")
	}
	s.ApplyFrom("eu", 3, change(t, events.ControlDeploymentPolicy, "", "p", t0.Add(3*time.Second), v1))
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

// TestGuardRules: a policy stored before it had guard settings, and the
// built-in default, use the guard model and fail open; settings survive
// the control topic.
func TestGuardRules(t *testing.T) {
	t.Parallel()
	s := control.NewState(zap.NewNop())
	now := time.Now()
	s.ApplyChange(change(t, events.ControlResource, "acme", "acme", now, control.Resource{Name: "acme", Location: "eu", ContentLogging: true}))
	old := events.ControlChange{Kind: events.ControlFilterPolicy, ID: "old", Resource: "acme", Actor: "test", At: now,
		Spec: json.RawMessage(`{"name":"old","resource":"acme","prompt":{"thresholds":{"hate":"low"},"jailbreak":true,"profanity":false},` +
			`"completion":{"thresholds":{"hate":"high"},"jailbreak":false,"profanity":false}}`)}
	s.ApplyChange(old)
	s.ApplyChange(change(t, events.ControlFilterPolicy, "acme", "strict", now, control.FilterPolicy{Name: "strict", Resource: "acme",
		Prompt:     control.FilterRules{Guard: control.GuardRules{OnFailure: control.GuardFailClosed}},
		Completion: control.FilterRules{Guard: control.GuardRules{Off: true}}}))

	cases := []struct {
		policy     string
		dir        string
		applies    bool
		failClosed bool
	}{
		{"default", "prompt", true, false},
		{"default", "completion", true, false},
		{"old", "prompt", true, false},
		{"old", "completion", true, false},
		{"strict", "prompt", true, true},
		{"strict", "completion", false, false},
	}
	for _, c := range cases {
		p, ok := s.FilterPolicy("acme", c.policy)
		if !ok {
			t.Fatalf("policy %s is missing", c.policy)
		}
		g := p.Prompt.Guard
		if c.dir == "completion" {
			g = p.Completion.Guard
		}
		if g.Applies() != c.applies || g.FailsClosed() != c.failClosed {
			t.Errorf("%s/%s: applies=%v failsClosed=%v, want %v %v", c.policy, c.dir, g.Applies(), g.FailsClosed(), c.applies, c.failClosed)
		}
		if want := map[bool]control.GuardFailure{false: control.GuardFailOpen, true: control.GuardFailClosed}[c.failClosed]; g.Failure() != want {
			t.Errorf("%s/%s: Failure() = %q, want %q", c.policy, c.dir, g.Failure(), want)
		}
	}
	// the default settings add nothing to a stored policy
	raw, err := json.Marshal(control.DefaultFilterPolicy("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if json.Valid(raw) && strings.Contains(string(raw), "guard") {
		t.Fatalf("default policy serialises guard settings: %s", raw)
	}
}

// TestFilterPolicySpecMatchesSchema: what the control plane publishes for
// a filter policy, guard settings included, is what control.change v1
// describes, and a failure mode it does not know is refused.
func TestFilterPolicySpecMatchesSchema(t *testing.T) {
	t.Parallel()
	_, sch := eventstest.Load(t, events.TypeControlChange)
	strict := control.DefaultFilterPolicy("acme")
	strict.Name = "strict"
	strict.Prompt.Guard = control.GuardRules{OnFailure: control.GuardFailClosed}
	strict.Completion.Guard = control.GuardRules{Off: true, OnFailure: control.GuardFailOpen}
	bad := control.DefaultFilterPolicy("acme")
	bad.Name = "bad"
	bad.Prompt.Guard.OnFailure = "sometimes"
	cases := []struct {
		name   string
		policy control.FilterPolicy
		valid  bool
	}{
		{"default", control.DefaultFilterPolicy("acme"), true},
		{"guard settings", strict, true},
		{"unknown failure mode", bad, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			raw, err := json.Marshal(change(t, events.ControlFilterPolicy, "acme", c.policy.Name, time.Now().UTC(), c.policy))
			if err != nil {
				t.Fatal(err)
			}
			if err := eventstest.Validate(sch, raw); (err == nil) != c.valid {
				t.Fatalf("valid = %v, want %v (%v): %s", err == nil, c.valid, err, raw)
			}
		})
	}
}
