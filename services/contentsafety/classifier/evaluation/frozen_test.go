package evaluation_test

import (
	"testing"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
)

// frozenSet is the frozen evaluation set: sentences written independently
// of the lexicon and the training set, never used to train or tune
// either. Only aggregate numbers are ever taken from it.
const frozenSet = "../testdata/frozen.jsonl"

// TestFrozenQualityGate asserts frozenGate on the frozen set at the
// default policy. The set is part of the repository, so a missing file is
// a failure, not a reason to skip.
func TestFrozenQualityGate(t *testing.T) {
	t.Parallel()
	items, err := evaluation.LoadItems(frozenSet)
	if err != nil {
		t.Fatalf("the frozen evaluation set must be in the repository: %v", err)
	}
	if len(items) < 300 {
		t.Fatalf("frozen set has %d items, want at least 300", len(items))
	}
	c, err := classifier.New()
	if err != nil {
		t.Fatal(err)
	}
	r := evaluation.Evaluate(c, items)
	if got := r.Harmful.Rate(); got < frozenGate.Blocked {
		t.Errorf("harmful items blocked %.3f < %.2f", got, frozenGate.Blocked)
	}
	jb := evaluation.Share{N: r.Jailbreak.TP + r.Jailbreak.FN, Hits: r.Jailbreak.TP}
	if got := jb.Rate(); got < frozenGate.Jailbreak {
		t.Errorf("jailbreaks detected %.3f < %.2f", got, frozenGate.Jailbreak)
	}
	if got := r.BenignFPRate(); got > frozenGate.BenignFP {
		t.Errorf("benign items blocked %.3f > %.2f", got, frozenGate.BenignFP)
	}
}

// frozenGate is what TestFrozenQualityGate asserts, each bound just short
// of what rules and linear model reach on the frozen set: they block 0.906
// of its harmful items (the rules alone 0.292), detect 0.909 of its
// jailbreaks and block 2.0 % of its benign items. Every bound meets its
// target (evaluation.FrozenTargets: 0.90, 0.85, 3 %), and the jailbreak
// and benign bounds are stricter. A change that loses recall or blocks
// more benign items fails here; safetyeval prints the distance to the
// targets. Tighten the bounds as the classifier improves.
var frozenGate = struct{ Blocked, Jailbreak, BenignFP float64 }{
	Blocked:   0.90,
	Jailbreak: 0.895,
	BenignFP:  0.025,
}
