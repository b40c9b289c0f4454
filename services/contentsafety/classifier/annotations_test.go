package classifier_test

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// wireExamples is a copy of Azure's content-filter wire examples (the live
// service's shapes) from the project's shared reference.
type wireExamples struct {
	PromptBlocked struct {
		Error struct {
			InnerError struct {
				Result json.RawMessage `json:"content_filter_result"`
			} `json:"innererror"`
		} `json:"error"`
	} `json:"prompt_blocked_http_400"`
	BlocklistBlocked struct {
		Error struct {
			InnerError struct {
				Result map[string]json.RawMessage `json:"content_filter_result"`
			} `json:"innererror"`
		} `json:"error"`
	} `json:"prompt_blocked_by_custom_blocklist_http_400"`
	Completion struct {
		Prompt []struct {
			Results json.RawMessage `json:"content_filter_results"`
		} `json:"prompt_filter_results"`
		Choices []struct {
			Results map[string]json.RawMessage `json:"content_filter_results"`
		} `json:"choices"`
	} `json:"completion_filtered_http_200"`
}

func loadWire(t *testing.T) wireExamples {
	t.Helper()
	b, err := os.ReadFile("testdata/azure-content-filter-wire-examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var w wireExamples
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return w
}

func result(sev map[string]events.Severity, jailbreak bool, hits ...classifier.BlocklistHit) classifier.Result {
	r := classifier.Result{Severity: map[string]events.Severity{}, Jailbreak: jailbreak, Blocklists: hits}
	for _, c := range control.Categories {
		r.Severity[c] = events.SeveritySafe
	}
	for c, s := range sev {
		r.Severity[c] = s
	}
	return r
}

// sameJSON compares the marshalled annotations with a reference object,
// ignoring the keys listed in skip (annotations Terroir does not produce,
// such as protected_material_*).
func sameJSON(t *testing.T, a classifier.Annotations, ref []byte, skip ...string) {
	t.Helper()
	got, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var g, w map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ref, &w); err != nil {
		t.Fatal(err)
	}
	for _, k := range skip {
		delete(w, k)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("annotations\n got %s\nwant %s", got, ref)
	}
}

func TestAnnotationsWireShape(t *testing.T) {
	t.Parallel()
	w := loadWire(t)
	def := control.DefaultFilterPolicy("r1")

	// A prompt rated sexual medium under the default policy: blocked,
	// exactly the innererror.content_filter_result of the 400 example.
	a, blocked := classifier.Apply(def, events.DirectionPrompt, result(map[string]events.Severity{"sexual": events.SeverityMedium}, false))
	if !blocked {
		t.Error("sexual medium prompt not blocked by the default policy")
	}
	sameJSON(t, a, w.PromptBlocked.Error.InnerError.Result)

	// A prompt with a blocklist configured and no hit, and a completion
	// rated violence high with a hit in myBlocklistName: the 200 example.
	withList := def
	withList.Prompt.Blocklists = []string{"myBlocklistName"}
	withList.Completion.Blocklists = []string{"myBlocklistName"}
	a, blocked = classifier.Apply(withList, events.DirectionPrompt, result(nil, false))
	if blocked {
		t.Error("safe prompt blocked")
	}
	sameJSON(t, a, w.Completion.Prompt[0].Results)
	choice := w.Completion.Choices[0].Results
	ref, _ := json.Marshal(choice)
	a, blocked = classifier.Apply(withList, events.DirectionCompletion,
		result(map[string]events.Severity{"violence": events.SeverityHigh}, false, classifier.BlocklistHit{List: "myBlocklistName", ItemID: "i1"}))
	if !blocked {
		t.Error("violent completion not blocked")
	}
	sameJSON(t, a, ref, "protected_material_code", "protected_material_text")

	// The blocklist-blocked prompt example: its custom_blocklists object.
	pizza := def
	pizza.Prompt.Blocklists = []string{"pizza"}
	a, blocked = classifier.Apply(pizza, events.DirectionPrompt, result(nil, false, classifier.BlocklistHit{List: "pizza", ItemID: "p1"}))
	if !blocked {
		t.Error("blocklist hit not blocked")
	}
	got, _ := json.Marshal(a.CustomBlocklists)
	var g, want any
	_ = json.Unmarshal(got, &g)
	_ = json.Unmarshal(w.BlocklistBlocked.Error.InnerError.Result["custom_blocklists"], &want)
	if !reflect.DeepEqual(g, want) {
		t.Errorf("custom_blocklists %s, want %s", got, w.BlocklistBlocked.Error.InnerError.Result["custom_blocklists"])
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	def := control.DefaultFilterPolicy("r1")
	strict := def
	strict.Prompt = control.FilterRules{Thresholds: map[string]control.Threshold{"hate": control.ThresholdLow, "sexual": control.ThresholdOff, "violence": control.ThresholdHigh}, Profanity: true}
	tests := []struct {
		name        string
		p           control.FilterPolicy
		dir         events.Direction
		r           classifier.Result
		blocked     bool
		jailbreak   bool // annotation present
		profanity   bool // annotation present
		blocklists  bool // annotation present
		filteredCat string
	}{
		{name: "safe prompt", p: def, dir: events.DirectionPrompt, r: result(nil, false), jailbreak: true},
		{name: "low passes default", p: def, dir: events.DirectionPrompt, r: result(map[string]events.Severity{"hate": "low"}, false), jailbreak: true},
		{name: "jailbreak blocks prompt", p: def, dir: events.DirectionPrompt, r: result(nil, true), blocked: true, jailbreak: true},
		{name: "completion has no jailbreak", p: def, dir: events.DirectionCompletion, r: result(nil, false)},
		{name: "low blocks at low", p: strict, dir: events.DirectionPrompt, r: result(map[string]events.Severity{"hate": "low"}, false), blocked: true, jailbreak: true, profanity: true, filteredCat: "hate"},
		{name: "off never blocks", p: strict, dir: events.DirectionPrompt, r: result(map[string]events.Severity{"sexual": "high"}, false), jailbreak: true, profanity: true},
		{name: "high threshold passes medium", p: strict, dir: events.DirectionPrompt, r: result(map[string]events.Severity{"violence": "medium"}, false), jailbreak: true, profanity: true},
		{name: "missing threshold is medium", p: strict, dir: events.DirectionPrompt, r: result(map[string]events.Severity{"self_harm": "medium"}, false), blocked: true, jailbreak: true, profanity: true, filteredCat: "self_harm"},
		{name: "profanity blocks when filtered", p: strict, dir: events.DirectionPrompt, r: func() classifier.Result { r := result(nil, false); r.Profanity = true; return r }(), blocked: true, jailbreak: true, profanity: true},
		{name: "hit of unapplied list ignored", p: def, dir: events.DirectionPrompt, r: result(nil, false, classifier.BlocklistHit{List: "other", ItemID: "x"}), jailbreak: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, blocked := classifier.Apply(tt.p, tt.dir, tt.r)
			if blocked != tt.blocked {
				t.Errorf("blocked = %v, want %v", blocked, tt.blocked)
			}
			if (a.Jailbreak != nil) != tt.jailbreak || (a.Profanity != nil) != tt.profanity || (a.CustomBlocklists != nil) != tt.blocklists {
				t.Errorf("annotations present: jailbreak %v profanity %v blocklists %v", a.Jailbreak != nil, a.Profanity != nil, a.CustomBlocklists != nil)
			}
			for name, ca := range map[string]*classifier.CategoryAnnotation{"hate": a.Hate, "sexual": a.Sexual, "violence": a.Violence, "self_harm": a.SelfHarm} {
				if ca == nil {
					t.Fatalf("%s annotation missing", name)
				}
				if ca.Severity != tt.r.Severity[name] {
					t.Errorf("%s severity %s, want %s", name, ca.Severity, tt.r.Severity[name])
				}
				if ca.Filtered != (name == tt.filteredCat) {
					t.Errorf("%s filtered = %v", name, ca.Filtered)
				}
			}
		})
	}
}
