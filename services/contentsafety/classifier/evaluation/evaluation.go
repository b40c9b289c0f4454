// Package evaluation measures Terroir's content-safety classifier: it loads
// the labelled evaluation set and the public-domain prose corpus kept in
// the classifier's testdata, and computes precision, recall, false-positive
// rates and speed. The classifier's tests use it as a quality gate and
// scripts/safetyeval prints its table.
package evaluation

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// Item is one labelled sentence of the evaluation set (eval.jsonl).
type Item struct {
	ID   string           `json:"id"`
	Text string           `json:"text"`
	Dir  events.Direction `json:"dir"`
	// Labels holds the expected severity of each category that is not
	// safe; a missing category is expected safe.
	Labels    map[string]events.Severity `json:"labels"`
	Jailbreak bool                       `json:"jailbreak"`
	Profanity bool                       `json:"profanity"`
	// Tags mark kinds of items: "obf" (obfuscated), "benign-trigger"
	// (benign text using trigger words).
	Tags []string `json:"tags"`
	// Split is "dev" (used while the lexicon was written) or "heldout"
	// (written afterwards and not tuned on).
	Split string `json:"split"`
}

// Benign reports whether the item is expected to be safe in every
// category and not a jailbreak.
func (it Item) Benign() bool { return len(it.Labels) == 0 && !it.Jailbreak }

// LoadItems reads a JSONL evaluation set.
func LoadItems(path string) ([]Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening evaluation set: %w", err)
	}
	defer f.Close()
	var items []Item
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var it Item
		if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
			return nil, fmt.Errorf("evaluation set line %d: %w", line, err)
		}
		if it.Dir != events.DirectionPrompt && it.Dir != events.DirectionCompletion {
			return nil, fmt.Errorf("evaluation set line %d: bad direction %q", line, it.Dir)
		}
		for c, s := range it.Labels {
			if !slices.Contains(control.Categories, c) || classifier.SeverityRank(s) == 0 {
				return nil, fmt.Errorf("evaluation set line %d: bad label %s=%s", line, c, s)
			}
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading evaluation set: %w", err)
	}
	return items, nil
}

// LoadCorpus reads every *.txt and *.txt.gz file in dir and splits it into
// sentences.
func LoadCorpus(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.txt*"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, errors.New("no corpus files found")
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		text, err := readText(p)
		if err != nil {
			return nil, fmt.Errorf("reading corpus file %s: %w", filepath.Base(p), err)
		}
		out = append(out, SplitSentences(text)...)
	}
	return out, nil
}

func readText(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return "", err
		}
		defer gz.Close()
		r = gz
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

// SplitSentences splits prose into sentences at . ! ? followed by white
// space, and at blank lines; line breaks inside a paragraph are spaces.
// Fragments without a letter are dropped.
func SplitSentences(text string) []string {
	var out []string
	for _, para := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		p := strings.Join(strings.Fields(para), " ")
		start := 0
		for i := 0; i < len(p); i++ {
			c := p[i]
			if (c == '.' || c == '!' || c == '?') && (i+1 == len(p) || p[i+1] == ' ') {
				out = appendSentence(out, p[start:i+1])
				start = i + 1
			}
		}
		out = appendSentence(out, p[start:])
	}
	return out
}

func appendSentence(out []string, s string) []string {
	s = strings.TrimSpace(s)
	if strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' }) < 0 {
		return out
	}
	return append(out, s)
}

// Counts are confusion counts of one binary decision.
type Counts struct{ TP, FP, FN, TN int }

func (c *Counts) add(want, got bool) {
	switch {
	case want && got:
		c.TP++
	case want:
		c.FN++
	case got:
		c.FP++
	default:
		c.TN++
	}
}

// Precision is TP/(TP+FP), 1 when nothing was predicted.
func (c Counts) Precision() float64 { return ratio(c.TP, c.TP+c.FP, 1) }

// Recall is TP/(TP+FN), 1 when nothing was expected.
func (c Counts) Recall() float64 { return ratio(c.TP, c.TP+c.FN, 1) }

// F1 is the harmonic mean of precision and recall.
func (c Counts) F1() float64 {
	p, r := c.Precision(), c.Recall()
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

func ratio(a, b int, empty float64) float64 {
	if b == 0 {
		return empty
	}
	return float64(a) / float64(b)
}

// SeverityRecall counts the items labelled with one severity in one
// category.
type SeverityRecall struct {
	// N is how many items carry the label.
	N int
	// AtLeast is how many were rated at the labelled severity or above.
	AtLeast int
	// Blocked is how many the default policy blocks (medium or above).
	Blocked int
	// Exact is how many were rated exactly the labelled severity.
	Exact int
}

// Recall is AtLeast/N.
func (s SeverityRecall) Recall() float64 { return ratio(s.AtLeast, s.N, 1) }

// Miss is an item the classifier got wrong, by ID (the texts are in the
// evaluation set).
type Miss struct {
	ID, What string
	Want     string
	Got      string
}

// Report is the outcome of an evaluation run.
type Report struct {
	Items int
	// Detect has, per category, the item-level confusion of "not safe".
	Detect map[string]*Counts
	// Severity has, per category and labelled severity, the recall.
	Severity map[string]map[events.Severity]*SeverityRecall
	// Jailbreak is the confusion of jailbreak detection over prompts.
	Jailbreak Counts
	// Profanity is the confusion of profanity detection.
	Profanity Counts
	// Benign counts the benign items; BenignFlagged those rated not safe
	// in some category or flagged as jailbreak; BenignBlocked those the
	// default policy blocks.
	Benign, BenignFlagged, BenignBlocked int
	// Obfuscated counts obfuscated harmful items and how many of them
	// were caught at their labelled severity (and jailbreak flag).
	Obfuscated, ObfuscatedCaught int
	// Blocked has, per category, the items labelled medium or high in
	// it and how many of them the default policy blocks (for any
	// reason); Harmful is the same over every item whose highest label
	// is medium or high, each counted once.
	Blocked map[string]*Share
	Harmful Share
	// Calibration has, per category, the number of items by labelled
	// severity rank (first index) and rated severity rank (second).
	Calibration map[string]*[4][4]int
	Misses      []Miss
}

// Share is how many of N items had some property.
type Share struct{ N, Hits int }

// Rate is Hits/N, 1 when N is 0.
func (s Share) Rate() float64 { return ratio(s.Hits, s.N, 1) }

// Calibrated summarises the severity calibration over every category:
// of the (item, category) pairs labelled low or above, the share rated
// exactly, and the shares rated lower and higher than labelled; and the
// share of pairs labelled safe rated higher.
func (r *Report) Calibrated() (exact, under, over, safeOver float64) {
	var n, ex, un, ov, ns, so int
	for _, m := range r.Calibration {
		for want := range 4 {
			for got := range 4 {
				k := m[want][got]
				if want == 0 {
					ns += k
					if got > 0 {
						so += k
					}
					continue
				}
				n += k
				switch {
				case got == want:
					ex += k
				case got < want:
					un += k
				default:
					ov += k
				}
			}
		}
	}
	return ratio(ex, n, 1), ratio(un, n, 0), ratio(ov, n, 0), ratio(so, ns, 0)
}

// TotalRecall is the recall over every (item, category) labelled sev.
func (r *Report) TotalRecall(sev events.Severity) SeverityRecall {
	var t SeverityRecall
	for _, m := range r.Severity {
		if s := m[sev]; s != nil {
			t.N += s.N
			t.AtLeast += s.AtLeast
			t.Blocked += s.Blocked
			t.Exact += s.Exact
		}
	}
	return t
}

// BenignFPRate is BenignBlocked/Benign: benign items blocked by the
// default policy.
func (r *Report) BenignFPRate() float64 { return ratio(r.BenignBlocked, r.Benign, 0) }

// BenignFlagRate is BenignFlagged/Benign.
func (r *Report) BenignFlagRate() float64 { return ratio(r.BenignFlagged, r.Benign, 0) }

// Evaluate classifies every item and scores the results.
func Evaluate(c *classifier.Classifier, items []Item) *Report {
	policy := control.DefaultFilterPolicy("evaluation")
	r := &Report{Detect: map[string]*Counts{}, Severity: map[string]map[events.Severity]*SeverityRecall{},
		Blocked: map[string]*Share{}, Calibration: map[string]*[4][4]int{}}
	for _, cat := range control.Categories {
		r.Blocked[cat] = &Share{}
		r.Calibration[cat] = &[4][4]int{}
		r.Detect[cat] = &Counts{}
		r.Severity[cat] = map[events.Severity]*SeverityRecall{}
		for _, s := range []events.Severity{events.SeverityLow, events.SeverityMedium, events.SeverityHigh} {
			r.Severity[cat][s] = &SeverityRecall{}
		}
	}
	for _, it := range items {
		r.Items++
		res := c.Classify(it.Text, it.Dir)
		_, blocked := classifier.Apply(policy, it.Dir, res)
		flagged := res.Jailbreak
		caught := true
		harmful := false
		for _, cat := range control.Categories {
			want, got := it.Labels[cat], res.Severity[cat]
			r.Calibration[cat][classifier.SeverityRank(want)][classifier.SeverityRank(got)]++
			if classifier.SeverityRank(want) >= 2 {
				harmful = true
				r.Blocked[cat].N++
				if blocked {
					r.Blocked[cat].Hits++
				}
			}
			r.Detect[cat].add(classifier.SeverityRank(want) > 0, classifier.SeverityRank(got) > 0)
			flagged = flagged || classifier.SeverityRank(got) > 0
			if classifier.SeverityRank(want) > 0 {
				s := r.Severity[cat][want]
				s.N++
				if classifier.SeverityRank(got) >= classifier.SeverityRank(want) {
					s.AtLeast++
				} else {
					caught = false
				}
				if classifier.SeverityRank(got) >= 2 {
					s.Blocked++
				}
				if got == want {
					s.Exact++
				}
			}
			if classifier.SeverityRank(got) != classifier.SeverityRank(want) {
				r.Misses = append(r.Misses, Miss{ID: it.ID, What: cat, Want: string(orSafe(want)), Got: string(got)})
			}
		}
		if harmful {
			r.Harmful.N++
			if blocked {
				r.Harmful.Hits++
			}
		}
		if it.Dir == events.DirectionPrompt {
			r.Jailbreak.add(it.Jailbreak, res.Jailbreak)
			if it.Jailbreak != res.Jailbreak {
				r.Misses = append(r.Misses, Miss{ID: it.ID, What: "jailbreak", Want: fmt.Sprint(it.Jailbreak), Got: fmt.Sprint(res.Jailbreak)})
			}
			caught = caught && (!it.Jailbreak || res.Jailbreak)
		}
		r.Profanity.add(it.Profanity, res.Profanity)
		if it.Profanity != res.Profanity {
			r.Misses = append(r.Misses, Miss{ID: it.ID, What: "profanity", Want: fmt.Sprint(it.Profanity), Got: fmt.Sprint(res.Profanity)})
		}
		caught = caught && (!it.Profanity || res.Profanity)
		if it.Benign() {
			r.Benign++
			if flagged {
				r.BenignFlagged++
			}
			if blocked {
				r.BenignBlocked++
			}
		} else if slices.Contains(it.Tags, "obf") {
			r.Obfuscated++
			if caught {
				r.ObfuscatedCaught++
			}
		}
	}
	return r
}

func orSafe(s events.Severity) events.Severity {
	if s == "" {
		return events.SeveritySafe
	}
	return s
}

// CorpusReport is the false-positive measurement over clean prose.
type CorpusReport struct {
	Sentences int
	Bytes     int
	// Flagged is how many sentences were rated not safe in some category
	// or flagged as jailbreak; Blocked how many the default policy
	// blocks.
	Flagged, Blocked int
	// Rules counts the rules that fired, to show where false positives
	// come from.
	Rules map[string]int
	// Elapsed is the time spent classifying, for µs per KB.
	Elapsed time.Duration
}

// FlagRate is Flagged/Sentences.
func (c CorpusReport) FlagRate() float64 { return ratio(c.Flagged, c.Sentences, 0) }

// BlockRate is Blocked/Sentences.
func (c CorpusReport) BlockRate() float64 { return ratio(c.Blocked, c.Sentences, 0) }

// MicrosPerKB is the classification time per 1024 bytes of text.
func (c CorpusReport) MicrosPerKB() float64 {
	if c.Bytes == 0 {
		return 0
	}
	return float64(c.Elapsed.Microseconds()) / (float64(c.Bytes) / 1024)
}

// EvaluateCorpus classifies every sentence as a prompt (so jailbreak
// detection runs too) under the default policy. Every sentence of the
// corpus is benign, so everything flagged is a false positive.
func EvaluateCorpus(c *classifier.Classifier, sentences []string) CorpusReport {
	policy := control.DefaultFilterPolicy("evaluation")
	cr := CorpusReport{Rules: map[string]int{}}
	results := make([]classifier.Result, len(sentences))
	start := time.Now()
	for i, s := range sentences {
		results[i] = c.Classify(s, events.DirectionPrompt)
	}
	cr.Elapsed = time.Since(start)
	for i, s := range sentences {
		res := results[i]
		cr.Sentences++
		cr.Bytes += len(s)
		flagged := res.Jailbreak
		for _, cat := range control.Categories {
			flagged = flagged || classifier.SeverityRank(res.Severity[cat]) > 0
		}
		if flagged {
			cr.Flagged++
		}
		if _, blocked := classifier.Apply(policy, events.DirectionPrompt, res); blocked {
			cr.Blocked++
		}
		for _, id := range res.Rules {
			cr.Rules[id]++
		}
	}
	return cr
}

// Targets are the quality targets the classifier must meet.
var Targets = struct {
	HighRecall, MediumRecall, CorpusFP, BenignFP, MicrosPerKB float64
}{HighRecall: 0.90, MediumRecall: 0.75, CorpusFP: 0.01, BenignFP: 0.05, MicrosPerKB: 50}

// WriteTable prints the evaluation as a plain-text table.
func WriteTable(w io.Writer, r *Report, cr CorpusReport) {
	fmt.Fprintf(w, "Terroir content-safety classifier — %d evaluation items, %d corpus sentences (%.1f KB)\n\n", r.Items, cr.Sentences, float64(cr.Bytes)/1024)
	fmt.Fprintf(w, "%-10s %9s %9s %6s   %-19s %-19s %-19s\n", "category", "precision", "recall", "F1", "recall@high (blk)", "recall@medium (blk)", "recall@low")
	for _, cat := range control.Categories {
		d := r.Detect[cat]
		h, m, l := r.Severity[cat][events.SeverityHigh], r.Severity[cat][events.SeverityMedium], r.Severity[cat][events.SeverityLow]
		fmt.Fprintf(w, "%-10s %9.3f %9.3f %6.3f   %-19s %-19s %-19s\n", cat, d.Precision(), d.Recall(), d.F1(),
			fmt.Sprintf("%.3f (%.3f) n=%d", h.Recall(), ratio(h.Blocked, h.N, 1), h.N),
			fmt.Sprintf("%.3f (%.3f) n=%d", m.Recall(), ratio(m.Blocked, m.N, 1), m.N),
			fmt.Sprintf("%.3f n=%d", l.Recall(), l.N))
	}
	fmt.Fprintf(w, "%-10s %9.3f %9.3f %6.3f   (prompts only)\n", "jailbreak", r.Jailbreak.Precision(), r.Jailbreak.Recall(), r.Jailbreak.F1())
	fmt.Fprintf(w, "%-10s %9.3f %9.3f %6.3f\n\n", "profanity", r.Profanity.Precision(), r.Profanity.Recall(), r.Profanity.F1())
	h, m := r.TotalRecall(events.SeverityHigh), r.TotalRecall(events.SeverityMedium)
	pass := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "BELOW TARGET"
	}
	fmt.Fprintf(w, "%-44s %8s %8s  %s\n", "measure", "value", "target", "")
	fmt.Fprintf(w, "%-44s %8.3f %8s  %s\n", "recall, high items (rated >= high)", h.Recall(), fmt.Sprintf(">=%.2f", Targets.HighRecall), pass(h.Recall() >= Targets.HighRecall))
	fmt.Fprintf(w, "%-44s %8.3f %8s  %s\n", "recall, medium items (rated >= medium)", m.Recall(), fmt.Sprintf(">=%.2f", Targets.MediumRecall), pass(m.Recall() >= Targets.MediumRecall))
	fmt.Fprintf(w, "%-44s %8.3f %8s\n", "obfuscated harmful items caught", ratio(r.ObfuscatedCaught, r.Obfuscated, 1), "")
	fmt.Fprintf(w, "%-44s %8.3f %8s  %s\n", "benign set FP, blocked at default policy", r.BenignFPRate(), fmt.Sprintf("<=%.2f", Targets.BenignFP), pass(r.BenignFPRate() <= Targets.BenignFP))
	fmt.Fprintf(w, "%-44s %8.3f %8s\n", "benign set FP, any non-safe", r.BenignFlagRate(), "")
	fmt.Fprintf(w, "%-44s %8.4f %8s  %s\n", "corpus FP, blocked at default policy", cr.BlockRate(), fmt.Sprintf("<=%.2f", Targets.CorpusFP), pass(cr.BlockRate() <= Targets.CorpusFP))
	fmt.Fprintf(w, "%-44s %8.4f %8s\n", "corpus FP, any non-safe", cr.FlagRate(), "")
	fmt.Fprintf(w, "%-44s %8.2f %8s  %s\n", "µs per KB (corpus, one goroutine)", cr.MicrosPerKB(), fmt.Sprintf("<=%.0f", Targets.MicrosPerKB), pass(cr.MicrosPerKB() <= Targets.MicrosPerKB))
	if len(cr.Rules) > 0 {
		type kv struct {
			id string
			n  int
		}
		var top []kv
		for id, n := range cr.Rules {
			top = append(top, kv{id, n})
		}
		sort.Slice(top, func(i, j int) bool { return top[i].n > top[j].n || top[i].n == top[j].n && top[i].id < top[j].id })
		fmt.Fprintf(w, "\nrules firing on the corpus:")
		for i, t := range top {
			if i == 8 {
				break
			}
			fmt.Fprintf(w, " %s=%d", t.id, t.n)
		}
		fmt.Fprintln(w)
	}
}
