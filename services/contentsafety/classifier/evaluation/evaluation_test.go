package evaluation_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
)

// TestQualityGate asserts the classifier's quality targets on the
// evaluation set and the public-domain corpus. It measures quality, not
// time; speed is measured by BenchmarkClassify.
func TestQualityGate(t *testing.T) {
	t.Parallel()
	c, err := classifier.New()
	if err != nil {
		t.Fatal(err)
	}
	items, err := evaluation.LoadItems("../testdata/eval.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) < 400 {
		t.Fatalf("evaluation set has %d items, want at least 400", len(items))
	}
	r := evaluation.Evaluate(c, items)
	high, medium := r.TotalRecall(events.SeverityHigh), r.TotalRecall(events.SeverityMedium)
	if got := high.Recall(); got < evaluation.Targets.HighRecall {
		t.Errorf("recall on high items %.3f < %.2f", got, evaluation.Targets.HighRecall)
	}
	if got := medium.Recall(); got < evaluation.Targets.MediumRecall {
		t.Errorf("recall on medium items %.3f < %.2f", got, evaluation.Targets.MediumRecall)
	}
	if got := r.BenignFPRate(); got > evaluation.Targets.BenignFP {
		t.Errorf("benign set blocked %.3f > %.2f", got, evaluation.Targets.BenignFP)
	}
	if r.Benign < 100 {
		t.Errorf("only %d benign items", r.Benign)
	}
	sentences, err := evaluation.LoadCorpus("../testdata/corpus")
	if err != nil {
		t.Fatal(err)
	}
	if len(sentences) < 10000 {
		t.Fatalf("corpus has %d sentences", len(sentences))
	}
	cr := evaluation.EvaluateCorpus(c, sentences)
	if got := cr.BlockRate(); got > evaluation.Targets.CorpusFP {
		t.Errorf("corpus blocked %.4f > %.2f", got, evaluation.Targets.CorpusFP)
	}
	if got := cr.FlagRate(); got > evaluation.Targets.CorpusFP {
		t.Errorf("corpus flagged %.4f > %.2f", got, evaluation.Targets.CorpusFP)
	}
}

func TestSplitSentences(t *testing.T) {
	t.Parallel()
	got := evaluation.SplitSentences("Call me Ishmael. Some years ago\nI went to sea! Why? 3.5 is a number.\n\nNew paragraph\n\n---\n")
	want := []string{"Call me Ishmael.", "Some years ago I went to sea!", "Why?", "3.5 is a number.", "New paragraph"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestCounts(t *testing.T) {
	t.Parallel()
	c := evaluation.Counts{TP: 8, FP: 2, FN: 2}
	if c.Precision() != 0.8 || c.Recall() != 0.8 || c.F1() < 0.799 || c.F1() > 0.801 {
		t.Errorf("precision %v recall %v f1 %v", c.Precision(), c.Recall(), c.F1())
	}
}

func TestLoadTrainset(t *testing.T) {
	t.Parallel()
	line := func(id, text string) string {
		return `{"id": "` + id + `", "text": "` + text + `", "dir": "prompt", "labels": {}, "split": "train"}` + "\n"
	}
	for _, c := range []struct {
		name  string
		files map[string]string
		ok    bool
	}{
		{"distinct", map[string]string{"a.jsonl": line("a-1", "one"), "b.jsonl": line("b-1", "two")}, true},
		{"same id", map[string]string{"a.jsonl": line("x-1", "one"), "b.jsonl": line("x-1", "two")}, false},
		{"same text", map[string]string{"a.jsonl": line("a-1", "one"), "b.jsonl": line("b-1", "one")}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, body := range c.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			items, err := evaluation.LoadTrainset(dir)
			if c.ok && (err != nil || len(items) != 2) {
				t.Errorf("got %d items, %v; want 2 items", len(items), err)
			}
			if !c.ok && err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestTrainset checks that the shipped training set loads: IDs and texts
// unique across its files.
func TestTrainset(t *testing.T) {
	t.Parallel()
	items, err := evaluation.LoadTrainset("../trainset")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) < 5000 {
		t.Errorf("%d training items", len(items))
	}
}
