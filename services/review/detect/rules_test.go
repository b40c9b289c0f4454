package detect

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeRules(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRulesReadsAList(t *testing.T) {
	p := writeRules(t, `
- name: severe_content
  kind: severity
  threshold: 5
  window: 10m
  minSeverity: medium
- name: jb
  kind: jailbreak
  threshold: 3
  window: 90s
- name: same.blocked-text
  kind: recurring_content
  threshold: 3
  window: 1h
- name: outputs
  kind: filtered_output_burst
  threshold: 1
  window: 720h
`)
	got, err := LoadRules(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Name: "severe_content", Kind: KindSeverity, Threshold: 5, Window: 10 * time.Minute, MinSeverity: "medium"},
		{Name: "jb", Kind: KindJailbreak, Threshold: 3, Window: 90 * time.Second},
		{Name: "same.blocked-text", Kind: KindRecurring, Threshold: 3, Window: time.Hour},
		{Name: "outputs", Kind: KindFilteredOutput, Threshold: 1, Window: 720 * time.Hour},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("LoadRules = %+v\nwant %+v", got, want)
	}
}

func TestDefaultRulesAreValid(t *testing.T) {
	if err := ValidateRules(DefaultRules()); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, r := range DefaultRules() {
		kinds[r.Kind] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("default rules cover %d kinds, want 4", len(kinds))
	}
}

func TestLoadRulesRejectsBadFiles(t *testing.T) {
	rule := func(extra string) string {
		return "- name: r1\n  kind: jailbreak\n  threshold: 3\n  window: 10m\n" + extra
	}
	tests := []struct {
		name string
		body string
		want []string // all must appear in the error
	}{
		{"unknown kind", "- name: weird\n  kind: telepathy\n  threshold: 3\n  window: 10m\n", []string{`"weird"`, `unknown kind "telepathy"`}},
		{"threshold zero", "- name: zero\n  kind: jailbreak\n  threshold: 0\n  window: 10m\n", []string{`"zero"`, "threshold 0"}},
		{"threshold missing", "- name: none\n  kind: jailbreak\n  window: 10m\n", []string{`"none"`, "threshold 0"}},
		{"threshold negative", "- name: neg\n  kind: jailbreak\n  threshold: -2\n  window: 10m\n", []string{`"neg"`, "threshold -2"}},
		{"threshold too large", "- name: big\n  kind: jailbreak\n  threshold: 10001\n  window: 10m\n", []string{`"big"`, "threshold 10001"}},
		{"window zero", "- name: instant\n  kind: jailbreak\n  threshold: 3\n  window: 0s\n", []string{`"instant"`, "window 0s"}},
		{"window missing", "- name: nowin\n  kind: jailbreak\n  threshold: 3\n", []string{`"nowin"`, "window 0s"}},
		{"window negative", "- name: past\n  kind: jailbreak\n  threshold: 3\n  window: -5m\n", []string{`"past"`, "window -5m0s"}},
		{"window beyond retention", "- name: long\n  kind: jailbreak\n  threshold: 3\n  window: 721h\n", []string{`"long"`, "window 721h0m0s"}},
		{"window below a millisecond", "- name: fine\n  kind: jailbreak\n  threshold: 3\n  window: 1500us\n", []string{`"fine"`, "finer than a millisecond"}},
		{"window without unit", "- name: bare\n  kind: jailbreak\n  threshold: 3\n  window: 600\n", []string{"window"}},
		{"window not a duration", "- name: bad\n  kind: jailbreak\n  threshold: 3\n  window: soon\n", []string{"soon"}},
		{"bad severity", "- name: sev\n  kind: severity\n  threshold: 3\n  window: 10m\n  minSeverity: extreme\n", []string{`"sev"`, `minSeverity "extreme"`}},
		{"safe severity", "- name: sev\n  kind: severity\n  threshold: 3\n  window: 10m\n  minSeverity: safe\n", []string{`"sev"`, `minSeverity "safe"`}},
		{"severity missing", "- name: sev\n  kind: severity\n  threshold: 3\n  window: 10m\n", []string{`"sev"`, "minSeverity is required"}},
		{"severity on another kind", rule("  minSeverity: high\n"), []string{`"r1"`, "minSeverity applies only"}},
		{"no name", "- kind: jailbreak\n  threshold: 3\n  window: 10m\n", []string{"rule 1", "name is required"}},
		{"bad name", "- name: \"a:b\"\n  kind: jailbreak\n  threshold: 3\n  window: 10m\n", []string{`"a:b"`, "name must be"}},
		{"duplicate names", rule("") + rule(""), []string{`rule 2 ("r1")`, "earlier rule"}},
		{"unknown field", rule("  treshold: 4\n"), []string{"treshold"}},
		{"not a list", "name: r1\nkind: jailbreak\n", []string{"cannot unmarshal"}},
		{"empty file", "", []string{"no rules"}},
		{"empty list", "[]\n", []string{"no rules"}},
		{"malformed YAML", "- name: [\n", []string{"rules.yaml"}},
		{"second rule bad", rule("") + "- name: r2\n  kind: jailbreak\n  threshold: 3\n  window: 0s\n", []string{`rule 2 ("r2")`, "window"}},
		{"every problem at once", "- name: multi\n  kind: nope\n  threshold: 0\n  window: 0s\n", []string{`unknown kind "nope"`, "threshold 0", "window 0s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := LoadRules(writeRules(t, tc.body))
			if err == nil {
				t.Fatalf("LoadRules accepted it: %+v", rules)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := LoadRules(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file: no error")
	}
}
