package classifier_test

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
)

var (
	updateGolden = flag.Bool("update", false, "rewrite testdata/golden-results.txt from the current classifier")
	dumpGolden   = flag.String("golden.dump", "", "write every item's result record (no text) to this file, to find which items changed")
)

const goldenPath = "testdata/golden-results.txt"

// goldenBlocklists exercise the blocklist matcher (and with it the
// normalised text) on every item.
var goldenBlocklists = []control.Blocklist{
	{Name: "words", Items: []control.BlocklistItem{
		{ID: "kill", Pattern: "kill"}, {ID: "bomb", Pattern: "bomb"}, {ID: "myself", Pattern: "myself"},
		{ID: "hate-them", Pattern: "hate them"}, {ID: "fck", Pattern: "f*ck"}, {ID: "spaced", Pattern: "k i l l"},
		{ID: "not", Pattern: "do not"}, {ID: "whale", Pattern: "the whale"}, {ID: "jail", Pattern: "jailbreak"},
	}},
	{Name: "regex", Items: []control.BlocklistItem{
		{ID: "gun", Pattern: `(?i)\bgun\w*`, IsRegex: true},
		{ID: "norm", Pattern: `\bi am going to\b`, IsRegex: true},
	}},
}

// goldenSource is one file of items whose results the golden digest
// covers.
type goldenSource struct {
	name  string
	items []evaluation.Item
}

// TestGoldenResults classifies every item of the training set, the
// evaluation set and the benchmark's corpus chunks, in both directions,
// with the rules alone and with the shipped model, and compares a
// SHA-256 of the results (normalised text, severities, jailbreak and
// profanity flags, rule IDs, blocklist hits, and the model's logits bit
// for bit) per source file against testdata/golden-results.txt. It
// guards optimisations that must not change a verdict or a score.
//
// The "rules" digests depend only on the normaliser, the lexicon and the
// blocklist matcher; the "model" digests also on the weights. After a
// deliberate change to any of them (a retrained weights file, a new
// rule), regenerate the file with
//
//	go test ./classifier/ -run TestGoldenResults -update
//
// and say in the commit why the results changed. With
// -golden.dump=FILE the test also writes one record per item, to diff
// against a dump of the previous code.
func TestGoldenResults(t *testing.T) {
	full := newClassifier(t)
	rules, err := classifier.NewRulesOnly()
	if err != nil {
		t.Fatal(err)
	}
	bl, err := rules.CompileBlocklists(goldenBlocklists)
	if err != nil {
		t.Fatal(err)
	}
	sources := goldenSources(t)
	var dump io.Writer = io.Discard
	if *dumpGolden != "" {
		f, err := os.Create(*dumpGolden)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		defer w.Flush()
		dump = w
	}
	var got []string
	for _, src := range sources {
		hr, hm := sha256.New(), sha256.New()
		for _, it := range src.items {
			rec := rulesRecord(rules, bl, it)
			fmt.Fprintf(hr, "%s\n", rec)
			fmt.Fprintf(dump, "%s rules %s\n", src.name, rec)
			rec = modelRecord(full, it)
			fmt.Fprintf(hm, "%s\n", rec)
			fmt.Fprintf(dump, "%s model %s\n", src.name, rec)
		}
		got = append(got,
			fmt.Sprintf("%s rules %d %s", src.name, len(src.items), hex.EncodeToString(hr.Sum(nil))),
			fmt.Sprintf("%s model %d %s", src.name, len(src.items), hex.EncodeToString(hm.Sum(nil))))
	}
	if *updateGolden {
		head := "# SHA-256 of the classifier's results per source and stage (TestGoldenResults).\n" +
			"# Regenerate after a deliberate change: go test ./classifier/ -run TestGoldenResults -update\n"
		if err := os.WriteFile(goldenPath, []byte(head+strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("reading golden digests (create them with -update): %v", err)
	}
	var want []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("results changed: %s", g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("golden digest not reproduced: %s", w)
		}
	}
	if t.Failed() {
		t.Log("if the change is deliberate (new weights or rules), regenerate with -update; -golden.dump finds the items")
	}
}

// goldenSources loads the training set, the evaluation set and the
// benchmark's corpus chunks (never the frozen set).
func goldenSources(t *testing.T) []goldenSource {
	t.Helper()
	files, err := filepath.Glob("trainset/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no training set files: %v", err)
	}
	files = append(files, "testdata/eval.jsonl")
	var out []goldenSource
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "frozen") {
			t.Fatalf("%s must not be read", f)
		}
		items, err := evaluation.LoadItems(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, goldenSource{name: f, items: items})
	}
	for _, name := range []string{"moby-dick", "state-of-the-union-1946-2021"} {
		f, err := os.Open("testdata/corpus/" + name + ".txt.gz")
		if err != nil {
			t.Fatal(err)
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(io.LimitReader(gz, 256<<10))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		src := goldenSource{name: "corpus/" + name}
		for i := 0; i+1024 <= len(data); i += 1024 {
			src.items = append(src.items, evaluation.Item{ID: fmt.Sprint(i), Text: string(data[i : i+1024]), Dir: events.DirectionPrompt})
		}
		out = append(out, src)
	}
	return out
}

var directions = [...]events.Direction{events.DirectionPrompt, events.DirectionCompletion}

// rulesRecord is the rules-only stage's result for it: a hash of the
// normalised text and, per direction, the result with blocklists.
func rulesRecord(c *classifier.Classifier, bl *classifier.Blocklists, it evaluation.Item) string {
	norm := sha256.Sum256([]byte(c.Normalize(it.Text)))
	var b strings.Builder
	fmt.Fprintf(&b, "%s norm=%x", it.ID, norm[:8])
	for _, dir := range directions {
		r := c.ClassifyWith(it.Text, dir, bl, []string{"words", "regex"})
		fmt.Fprintf(&b, " %s:%s", dir, resultString(r))
	}
	return b.String()
}

// modelRecord is the full classifier's result for it: the logits bit
// for bit and, per direction, the result.
func modelRecord(c *classifier.Classifier, it evaluation.Item) string {
	var b strings.Builder
	b.WriteString(it.ID)
	lg, ok := c.ModelLogits(it.Text)
	fmt.Fprintf(&b, " ok=%t logits=", ok)
	for _, l := range lg {
		fmt.Fprintf(&b, "%08x,", math.Float32bits(l))
	}
	for _, dir := range directions {
		fmt.Fprintf(&b, " %s:%s", dir, resultString(c.Classify(it.Text, dir)))
	}
	return b.String()
}

func resultString(r classifier.Result) string {
	var b strings.Builder
	for _, cat := range control.Categories {
		fmt.Fprintf(&b, "%s=%s,", cat, r.Severity[cat])
	}
	fmt.Fprintf(&b, "jb=%t,prof=%t,rules=%s,bl=", r.Jailbreak, r.Profanity, strings.Join(r.Rules, "+"))
	for _, h := range r.Blocklists {
		fmt.Fprintf(&b, "%s/%s+", h.List, h.ItemID)
	}
	if len(r.Severity) != len(control.Categories) {
		fmt.Fprintf(&b, ",extra=%d", len(r.Severity))
	}
	return b.String()
}
