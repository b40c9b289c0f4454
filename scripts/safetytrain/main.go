// Command safetytrain trains the linear stage of Terroir's content-safety
// classifier and writes its weights into the classifier's linear package.
//
// It reads the training set (services/contentsafety/classifier/trainset/
// *.jsonl), the "dev" items of the classifier's evaluation set and half of
// the public-domain corpus as benign prose, adds disguised copies of every
// sentence (leetspeak, spaced and dotted letters, invisible characters,
// casing, typos, look-alike letters — benign and harmful alike), and fits
// one logistic regression per head over hashed features of the normalised
// text. About one training item in ten (evaluation.DevHoldOut, or the
// shard -holdout names) and the other half of the corpus are held out:
// they choose the L2 strength (when -lambda lists several), each
// blocking head's threshold and the jailbreak veto. -check leaves out a
// second shard that chooses nothing, to measure settings chosen on the
// first; -misses lists the held-out and check items the model gets
// wrong, for error analysis. Training is deterministic for a given seed.
//
// Run it from the repository root:
//
//	go run ./scripts/safetytrain
//
// or from scripts/ as "go run ./safetytrain".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "safetytrain:", err)
		os.Exit(1)
	}
}

// candidates are where the classifier is found from the repository root
// and from scripts/.
var candidates = []string{
	"services/contentsafety/classifier",
	"../services/contentsafety/classifier",
}

// Budgets for the thresholds, as shares of the held-out benign items and
// corpus sentences. The blocking heads (medium, jailbreak, harmful) get
// one threshold each, chosen together (exactThresholds) so that the
// whole classifier, rules and model, blocks at most blockBenign of the
// benign items and the model at most -corpus-budget (0.4 %) of the corpus
// sentences (0.2 % bound before the benign budget did and cost 0.04 of
// the held-out harmful items blocked; above 0.4 % nothing changed). blockBenign is half a point under the 3 % quality target:
// thresholds chosen per head on one tenth of the training set blocked
// about that much more of the benign items of another tenth never used
// (the mean over five pairs of shards, -holdout and -check). The low
// heads share one threshold at which the model flags at most flagBenign
// and flagCorpus.
const (
	blockBenign = 0.025
	flagBenign  = 0.03
	flagCorpus  = 0.003
)

type config struct {
	dir      string
	out      string
	bits     uint
	epochs   int
	seed     uint64
	lambdas  []float32
	rate     float32
	variants int
	corpusW  float32
	posW     float32
	holdout  int
	check    int
	// method is how the blocking heads' thresholds are chosen (-thresholds)
	method   string
	features linear.FeatureSet
	// blockCorpus is the share of held-out corpus sentences the model
	// may block (see blockBenign)
	blockCorpus float64
	classes     string // word-class table; empty for the embedded one
	misses      bool   // list the held-out and check items the model gets wrong
	// from is a weights file whose thresholds are chosen again instead
	// of training (-from); empty to train
	from string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("safetytrain", flag.ContinueOnError)
	dir := fs.String("dir", "", "the classifier's directory (found automatically from the repository root or scripts/)")
	outPath := fs.String("out", "", "where to write the weights (default <dir>/linear/weights.bin.gz)")
	bits := fs.Uint("bits", 17, "log2 of the number of feature buckets")
	epochs := fs.Int("epochs", 4, "passes over the training data")
	seed := fs.Uint64("seed", 1, "seed of the augmentation and the example order")
	lambdas := fs.String("lambda", "3e-2", "L2 strengths to try (comma-separated); the one with the lowest dev log loss is kept")
	rate := fs.Float64("rate", 0.05, "AdaGrad learning rate")
	nvar := fs.Int("variants", 2, "disguised copies per training sentence")
	corpusW := fs.Float64("corpus-weight", 0.2, "weight of a corpus sentence relative to a training item")
	posW := fs.Float64("positive-weight", 0.25, "weight of a harmful or jailbreak item relative to a benign one")
	holdout := fs.Int("holdout", 0, "the shard (0-9, evaluation.Shard) held out for choosing settings and thresholds; 0 is the dev hold-out the classifier's evaluation reports, another one checks settings chosen on it")
	check := fs.Int("check", -1, "a second shard also left out of training, never used to choose anything, on which the result is reported (-1: none)")
	thresholds := fs.String("thresholds", "exact", "how the blocking heads' thresholds are chosen: "+strings.Join(thresholdMethods, ", "))
	from := fs.String("from", "", "choose the thresholds of this weights file again instead of training (it must have been trained without the -holdout and -check shards)")
	corpusBudget := fs.Float64("corpus-budget", 0.004, "share of the held-out corpus sentences the model may block")
	features := fs.String("features", "classes,pairs", "optional features (comma-separated): classes (each word's WordNet classes), pairs (adjacent words' first classes); none for neither")
	classes := fs.String("classes", "", "word-class table (scripts/wordclasses output; default the one embedded in the linear package)")
	misses := fs.Bool("misses", false, "list the held-out and check-shard items that rules and model get wrong (kind, labels, ID, text), for error analysis")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *holdout < 0 || *holdout > 9 {
		return errors.New("-holdout must be within 0..9")
	}
	if !slices.Contains(thresholdMethods, *thresholds) {
		return fmt.Errorf("-thresholds must be one of %s", strings.Join(thresholdMethods, ", "))
	}
	if *check == *holdout || *check > 9 {
		return errors.New("-check must be another shard within 0..9, or -1")
	}
	cfg := config{check: *check, holdout: *holdout, method: *thresholds, from: *from, posW: float32(*posW), dir: *dir, out: *outPath, bits: *bits, epochs: *epochs, seed: *seed, rate: float32(*rate), variants: *nvar, corpusW: float32(*corpusW)}
	cfg.classes = *classes
	cfg.misses = *misses
	cfg.blockCorpus = *corpusBudget
	for _, f := range strings.Split(*features, ",") {
		switch strings.TrimSpace(f) {
		case "classes":
			cfg.features |= linear.FeatClasses
		case "pairs":
			cfg.features |= linear.FeatClassPairs
		case "none", "":
		default:
			return fmt.Errorf("-features: unknown feature %q", f)
		}
	}
	for _, s := range strings.Split(*lambdas, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 32)
		if err != nil {
			return fmt.Errorf("-lambda: %w", err)
		}
		cfg.lambdas = append(cfg.lambdas, float32(v))
	}
	if cfg.dir == "" {
		for _, c := range candidates {
			if _, err := os.Stat(filepath.Join(c, "trainset")); err == nil {
				cfg.dir = c
				break
			}
		}
		if cfg.dir == "" {
			return errors.New("cannot find the classifier's trainset; run from the repository root or pass -dir")
		}
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(cfg.dir, "linear", "weights.bin.gz")
	}
	if cfg.bits < linear.MinBits || cfg.bits > linear.MaxBits {
		return fmt.Errorf("-bits must be within %d..%d", linear.MinBits, linear.MaxBits)
	}
	for i, c := range linear.Categories {
		if control.Categories[i] != c {
			return fmt.Errorf("category %d is %s in the model and %s in control", i, c, control.Categories[i])
		}
	}
	return trainAndWrite(ctx, cfg, out)
}

// source feeds the feature extraction.
type source struct {
	c   *classifier.Classifier
	f   linear.Features
	buf []uint32
}

func (s *source) feats(text string) []uint32 {
	s.buf = s.f.Append(s.buf[:0], []byte(s.c.Normalize(text)))
	return s.buf
}

func targets(it evaluation.Item) [numHeads]int8 {
	var y [numHeads]int8
	for c, name := range linear.Categories {
		r := classifier.SeverityRank(it.Labels[name])
		for l := 1; l <= linear.NumLevels; l++ {
			if r >= l {
				y[linear.Head(c, l)] = 1
			}
		}
	}
	for c := range linear.Categories {
		y[linear.HeadHarmful] = max(y[linear.HeadHarmful], y[linear.Head(c, 2)])
	}
	y[linear.HeadJailbreak] = -1
	if it.Dir == events.DirectionPrompt {
		y[linear.HeadJailbreak] = 0
		if it.Jailbreak {
			y[linear.HeadJailbreak] = 1
		}
	}
	return y
}

func trainAndWrite(ctx context.Context, cfg config, out io.Writer) error {
	c, err := classifier.NewRulesOnly() // the shipped weights may be stale; only Normalize is needed
	if err != nil {
		return err
	}
	items, err := evaluation.LoadTrainset(filepath.Join(cfg.dir, "trainset"))
	if err != nil {
		return err
	}
	evalItems, err := evaluation.LoadItems(filepath.Join(cfg.dir, "testdata", "eval.jsonl"))
	if err != nil {
		return err
	}
	sentences, err := evaluation.LoadCorpus(filepath.Join(cfg.dir, "testdata", "corpus"))
	if err != nil {
		return err
	}
	trainItems := evaluation.Split(items, func(it evaluation.Item) bool {
		return evaluation.Shard(it.ID) != cfg.holdout && evaluation.Shard(it.ID) != cfg.check
	})
	checkItems := evaluation.Split(items, func(it evaluation.Item) bool { return evaluation.Shard(it.ID) == cfg.check })
	devItems := evaluation.Split(items, func(it evaluation.Item) bool { return evaluation.Shard(it.ID) == cfg.holdout })
	// the evaluation set's dev items were written with the lexicon and
	// teach the same conventions; its held-out items stay unseen
	trainItems = append(trainItems, evaluation.Split(evalItems, func(it evaluation.Item) bool { return it.Split == "dev" })...)
	var trainCorpus, devCorpus []string
	for _, s := range sentences {
		if evaluation.TrainingSentence(s) {
			trainCorpus = append(trainCorpus, s)
		} else {
			devCorpus = append(devCorpus, s)
		}
	}
	fmt.Fprintf(out, "training items %d, dev items %d, corpus sentences %d for training and %d held out\n",
		len(trainItems), len(devItems), len(trainCorpus), len(devCorpus))

	var wc *linear.WordClasses
	if cfg.classes == "" {
		wc, err = linear.ShippedWordClasses()
	} else {
		var data []byte
		if data, err = os.ReadFile(cfg.classes); err == nil {
			wc, err = linear.ParseWordClasses(data)
		}
	}
	if err != nil {
		return err
	}
	var w *linear.Weights
	if cfg.from != "" {
		data, err := os.ReadFile(cfg.from)
		if err != nil {
			return err
		}
		if w, err = linear.Unmarshal(data); err != nil {
			return fmt.Errorf("%s: %w", cfg.from, err)
		}
		fmt.Fprintf(out, "choosing the thresholds of %s again\n", cfg.from)
	} else if w, err = fit(ctx, cfg, c, wc, trainItems, trainCorpus, devItems, out); err != nil {
		return err
	}
	qm, err := linear.NewWithClasses(w, wc)
	if err != nil {
		return err
	}
	if err := chooseThresholds(w, qm, c, devItems, devCorpus, cfg.method, cfg.blockCorpus, out); err != nil {
		return err
	}
	if err := report(qm, "held out", devItems, out); err != nil {
		return err
	}
	if len(checkItems) > 0 {
		if err := report(qm, "check shard", checkItems, out); err != nil {
			return err
		}
	}
	if err := reportCorpus(qm, devCorpus, out); err != nil {
		return err
	}
	if cfg.misses {
		cm, err := classifier.NewWithModel(qm)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "\nheld-out items rules and model get wrong (kind, labels, ID, text):")
		writeMisses(cm, devItems, out)
		if len(checkItems) > 0 {
			fmt.Fprintln(out, "\ncheck-shard items rules and model get wrong (kind, labels, ID, text):")
			writeMisses(cm, checkItems, out)
		}
	}
	data, err := w.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out, data, 0o644); err != nil {
		return fmt.Errorf("writing weights: %w", err)
	}
	fmt.Fprintf(out, "wrote %s (%d bytes)\n", cfg.out, len(data))
	return nil
}

// chooseThresholds sets the thresholds on the held-out items and corpus
// sentences, scored by the quantised model exactly as the classifier
// scores them.
func chooseThresholds(w *linear.Weights, qm *linear.Model, rules *classifier.Classifier, dev []evaluation.Item, corpus []string, method string, blockCorpus float64, out io.Writer) error {
	cm, err := classifier.NewWithModel(qm)
	if err != nil {
		return err
	}
	var lg, y [][numHeads]float32
	var benign [][numHeads]float32
	var rulesBlocked []bool // per benign item
	var items []devItem
	policy := control.DefaultFilterPolicy("training")
	vetoAt := jailbreakVeto(cm, rules, dev)
	for _, it := range dev {
		l, _ := cm.ModelLogits(it.Text)
		t := targets(it)
		var yf [numHeads]float32
		for h := range numHeads {
			yf[h] = float32(t[h])
		}
		lg, y = append(lg, l), append(y, yf)
		r := rules.Classify(it.Text, it.Dir)
		if r.Jailbreak && l[linear.HeadJailbreak] < vetoAt {
			r.Jailbreak = false // what the veto leaves of the rules' findings
		}
		_, blocked := classifier.Apply(policy, it.Dir, r)
		items = append(items, devItem{logits: l, y: t, prompt: it.Dir == events.DirectionPrompt, rulesBlocked: blocked, rulesJailbreak: r.Jailbreak})
		if isBenign(t) {
			if t[linear.HeadJailbreak] < 0 {
				l[linear.HeadJailbreak] = float32(math.Inf(-1)) // completions are never checked for jailbreaks
			}
			benign = append(benign, l)
			rulesBlocked = append(rulesBlocked, blocked)
		}
	}
	corpusLg := make([][numHeads]float32, len(corpus))
	for i, s := range corpus {
		corpusLg[i], _ = cm.ModelLogits(s)
	}
	var medium, low, high []int
	for c := range linear.NumCategories {
		low = append(low, linear.Head(c, 1))
		medium = append(medium, linear.Head(c, 2))
		high = append(high, linear.Head(c, 3))
	}
	medium = append(medium, linear.HeadJailbreak, linear.HeadHarmful)
	// the highest logit among heads of each benign item and sentence
	top := func(set [][numHeads]float32, heads []int) []float32 {
		out := make([]float32, len(set))
		for i := range set {
			out[i] = float32(math.Inf(-1))
			for _, h := range heads {
				out[i] = max(out[i], set[i][h])
			}
		}
		return out
	}
	shared := func(heads []int, fb, fc float64) float32 {
		b, c := top(benign, heads), top(corpusLg, heads)
		return max(thresholdAbove(b, int(fb*float64(len(b)))), thresholdAbove(c, int(fc*float64(len(c)))))
	}
	// benign items the rules already block cost the model nothing
	var extra []float32
	budget := int(blockBenign * float64(len(benign)))
	for i, t := range top(benign, medium) {
		if rulesBlocked[i] {
			budget--
		} else {
			extra = append(extra, t)
		}
	}
	tMed := max(thresholdAbove(extra, max(budget, 0)), shared(medium, 1, blockCorpus))
	fmt.Fprintf(out, "rules alone block %d of %d held-out benign items; the model may add %d\n", len(benign)-len(extra), len(benign), max(budget, 0))
	tBlock := make([]float32, numHeads)
	for _, h := range medium {
		tBlock[h] = tMed
	}
	// which model findings the classifier keeps, for the exact choice
	// and to report what the thresholds spend
	var texts []string
	var dirs []events.Direction
	for _, it := range dev {
		texts, dirs = append(texts, it.Text), append(dirs, it.Dir)
	}
	setKept(cm, w, items, texts, dirs)
	corpusItems := make([]devItem, len(corpus))
	dirs = dirs[:0]
	for i := range corpus {
		corpusItems[i] = devItem{logits: corpusLg[i], prompt: true}
		dirs = append(dirs, events.DirectionPrompt)
	}
	setKept(cm, w, corpusItems, corpus, dirs)
	if method != "shared" {
		tBlock = blockingThresholds(method, items, corpusItems, medium, blockCorpus)
	}
	reportSpend(items, corpusItems, tBlock, budgetsOf(items, corpusItems, blockCorpus), out)
	// the trade-off the threshold picks from: held-out items labelled
	// medium or above, or jailbreaks, that the model alone blocks, at
	// several shares of held-out benign items blocked
	bt := top(benign, medium)
	var ht []float32
	for i := range lg {
		for _, h := range medium {
			if y[i][h] == 1 {
				ht = append(ht, top(lg[i:i+1], medium)[0])
				break
			}
		}
	}
	fmt.Fprintf(out, "\nmodel alone on the dev hold-out, harmful items blocked at benign items blocked:")
	for _, fp := range []float64{0.01, 0.02, 0.04, 0.08} {
		t := thresholdAbove(bt, int(fp*float64(len(bt))))
		fmt.Fprintf(out, " %.3f at %.0f%%", float64(countAtLeast(ht, t))/float64(max(len(ht), 1)), 100*fp)
	}
	fmt.Fprintln(out)
	tLow := shared(append(slices.Clone(low), medium...), flagBenign, flagCorpus)
	// the high heads refine a medium finding: their threshold is the one
	// that rates the most held-out harmful items at their label, among
	// those
	tHigh, bestScore := float32(0), -1
	// that is at least the medium threshold, so a high rating needs
	// as much confidence as a block
	for _, step := range []float32{0, 0.5, 1, 1.5, 2, 3, 4} {
		cand := tMed + step
		score := 0
		for i := range lg {
			for c := range linear.NumCategories {
				hm, hh := linear.Head(c, 2), linear.Head(c, 3)
				if y[i][hm] != 1 || lg[i][hm] < tBlock[hm] {
					continue
				}
				if (lg[i][hh] >= cand) == (y[i][hh] == 1) {
					score++
				}
			}
		}
		if score > bestScore {
			tHigh, bestScore = cand, score
		}
	}
	for _, h := range low {
		w.Threshold[h] = tLow
	}
	for _, h := range medium {
		w.Threshold[h] = tBlock[h]
	}
	w.JailbreakVeto = max(w.Threshold[linear.HeadJailbreak]-vetoAt, 0)
	for _, h := range high {
		w.Threshold[h] = tHigh
	}
	fmt.Fprintf(out, "\nthresholds (logit): low %.3f, shared blocking %.3f, high %.3f; per head:", tLow, tMed, tHigh)
	for _, h := range medium {
		fmt.Fprintf(out, " %s %.3f", headName(h), tBlock[h])
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "jailbreak veto: the rules' jailbreaks are cleared below logit %.3f (%.3f under the threshold)\n", vetoAt, w.JailbreakVeto)
	fmt.Fprintf(out, "%-16s %8s %8s %10s %12s\n", "head", "recall", "n", "benign FP", "corpus FP")
	for h := range numHeads {
		var pos, neg, corp []float32
		for i := range lg {
			if y[i][h] == 1 {
				pos = append(pos, lg[i][h])
			}
		}
		for i := range benign {
			neg = append(neg, benign[i][h])
		}
		for i := range corpusLg {
			corp = append(corp, corpusLg[i][h])
		}
		name := headName(h)
		t := w.Threshold[h]
		fmt.Fprintf(out, "%-16s %8.3f %8d %10.4f %12.5f\n", name,
			float64(countAtLeast(pos, t))/float64(max(len(pos), 1)), len(pos),
			float64(countAtLeast(neg, t))/float64(max(len(neg), 1)),
			float64(countAtLeast(corp, t))/float64(max(len(corp), 1)))
	}
	return nil
}

// isBenign reports targets with no harm and no jailbreak.
func isBenign(y [numHeads]int8) bool {
	for _, v := range y {
		if v == 1 {
			return false
		}
	}
	return true
}

func headName(h int) string {
	name := map[int]string{linear.HeadJailbreak: "jailbreak", linear.HeadHarmful: "harmful"}[h]
	if name == "" {
		name = fmt.Sprintf("%s>=%s", linear.Categories[h/linear.NumLevels], []string{"low", "medium", "high"}[h%linear.NumLevels])
	}
	return name
}

// fit trains the model on the training items and corpus sentences, with
// disguised copies, keeps the L2 strength with the lowest log loss on the
// dev items and returns the quantised weights, without thresholds.
func fit(ctx context.Context, cfg config, c *classifier.Classifier, wc *linear.WordClasses, trainItems []evaluation.Item, trainCorpus []string, devItems []evaluation.Item, out io.Writer) (*linear.Weights, error) {
	src := &source{c: c, f: linear.Features{Bits: cfg.bits, Set: cfg.features, Classes: wc}}
	rng := rand.New(rand.NewPCG(cfg.seed, 0xa06))
	var tr dataset
	addWithVariants := func(text string, y [numHeads]int8, weight float32, n int) {
		seen := []string{c.Normalize(text)}
		tr.add(src.feats(text), y, weight)
		for _, v := range variants(text, n, rng) {
			nv := c.Normalize(v)
			if slices.Contains(seen, nv) {
				continue
			}
			seen = append(seen, nv)
			tr.add(src.feats(v), y, weight)
		}
	}
	for _, it := range trainItems {
		wt := float32(1)
		if !it.Benign() {
			wt = cfg.posW
		}
		addWithVariants(it.Text, targets(it), wt, cfg.variants)
	}
	// prose is benign whoever asks, and one sentence in four also comes
	// disguised, so that disguise is seen on plain text too
	benignPrompt := targets(evaluation.Item{Dir: events.DirectionPrompt})
	for i, s := range trainCorpus {
		n := 0
		if i%4 == 0 {
			n = 1
		}
		addWithVariants(s, benignPrompt, cfg.corpusW, n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var dev dataset
	for _, it := range devItems {
		dev.add(src.feats(it.Text), targets(it), 1)
	}
	fmt.Fprintf(out, "training examples %d (with disguised copies), %d features\n", len(tr.ex), len(tr.feats))

	var best *model
	bestLoss := math.Inf(1)
	for _, lambda := range cfg.lambdas {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m := train(&tr, cfg.bits, hyper{lambda: lambda, rate: cfg.rate, epochs: cfg.epochs, seed: cfg.seed})
		loss := logLoss(m, &dev)
		fmt.Fprintf(out, "lambda %-7g dev log loss %.4f  train log loss %.4f\n", lambda, loss, logLoss(m, &tr))
		if loss < bestLoss {
			best, bestLoss = m, loss
		}
	}
	w := quantise(best)
	w.Features = cfg.features
	qm, err := linear.NewWithClasses(w, wc)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "quantised dev log loss %.4f\n", logLoss(quantised{qm}, &dev))
	return w, nil
}
