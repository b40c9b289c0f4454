package main

import (
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/evaluation"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// devItem is a held-out item as the threshold choice sees it: the model's
// logits, the targets, and what the rules alone decide.
type devItem struct {
	logits         [numHeads]float32
	y              [numHeads]int8
	prompt         bool
	rulesBlocked   bool
	rulesJailbreak bool
	// kept is, per category, whether the classifier keeps the model's
	// medium finding in it (a context rule or a negation clears it
	// otherwise); closest is the category the harmful head rates
	kept    [linear.NumCategories]bool
	closest int
}

// modelBlocks reports whether the model's findings make the classifier
// block it at the blocking thresholds t, as linear.Model.Levels and the
// classifier decide: a category's medium head when the classifier keeps
// its finding, the jailbreak head on prompts, the harmful head when no
// medium head fires.
func modelBlocks(it *devItem, t []float32) bool {
	found := false
	for c := range linear.NumCategories {
		if h := linear.Head(c, 2); it.logits[h] >= t[h] {
			found = true
			if it.kept[c] {
				return true
			}
		}
	}
	if it.prompt && it.logits[linear.HeadJailbreak] >= t[linear.HeadJailbreak] {
		return true
	}
	return !found && it.logits[linear.HeadHarmful] >= t[linear.HeadHarmful] && it.kept[it.closest]
}

// exactThresholds chooses the blocking heads' thresholds as
// perHeadThresholds does, but counts what the classifier decides
// (modelBlocks) rather than which heads fire: a harmful item whose
// model finding a context rule clears gains nothing, a benign one costs
// nothing, and so does a corpus sentence (corpus holds the held-out
// sentences as prompts). heads are every blocking head.
func exactThresholds(items, corpus []devItem, heads []int, b budgets) []float32 {
	t := make([]float32, numHeads)
	inf := float32(math.Inf(1))
	for _, h := range heads {
		t[h] = inf
	}
	tt := make([]float32, numHeads)
	gain := func(h int, th float32) (g, benign, corp int) {
		copy(tt, t)
		tt[h] = th
		for i := range items {
			it := &items[i]
			switch {
			case isBenign(it.y):
				if !it.rulesBlocked && modelBlocks(it, tt) {
					benign++
				}
			default:
				if it.y[linear.HeadJailbreak] == 1 && !it.rulesJailbreak && it.prompt && it.logits[linear.HeadJailbreak] >= tt[linear.HeadJailbreak] {
					g++
				}
				if it.y[linear.HeadHarmful] == 1 && !it.rulesBlocked && modelBlocks(it, tt) {
					g++
				}
			}
		}
		for i := range corpus {
			if modelBlocks(&corpus[i], tt) {
				corp++
			}
		}
		return g, benign, corp
	}
	cost := func(benign, corp int) float64 {
		return float64(benign)/float64(max(b.benign, 1)) + float64(corp)/float64(max(b.corpus, 1))
	}
	for {
		bestH, bestT, bestRatio := -1, float32(0), -1.0
		for _, h := range heads {
			g0, b0, c0 := gain(h, t[h])
			var next []float32
			for i := range items {
				it := &items[i]
				if isBenign(it.y) || it.logits[h] >= t[h] || (h == linear.HeadJailbreak && !it.prompt) {
					continue
				}
				if (it.y[linear.HeadHarmful] == 1 && !it.rulesBlocked && !modelBlocks(it, t)) ||
					(h == linear.HeadJailbreak && it.y[h] == 1 && !it.rulesJailbreak) {
					next = append(next, it.logits[h])
				}
			}
			slices.Sort(next)
			next = slices.Compact(next)
			slices.Reverse(next)
			for k := 0; k < min(lookahead, len(next)); k++ {
				g, bn, c := gain(h, next[k])
				if bn > b.benign || c > b.corpus || g <= g0 {
					continue
				}
				r := float64(g-g0) / (cost(bn-b0, c-c0) + 1e-3)
				if r > bestRatio {
					bestH, bestT, bestRatio = h, next[k], r
				}
			}
		}
		if bestH < 0 {
			break
		}
		t[bestH] = bestT
	}
	// halfway down to the highest benign item or corpus sentence that
	// lowering the head further would block
	for _, h := range heads {
		if math.IsInf(float64(t[h]), 1) {
			continue
		}
		below := float32(math.Inf(-1))
		wouldBlock := func(it *devItem) bool {
			if it.logits[h] >= t[h] || it.logits[h] <= below || modelBlocks(it, t) {
				return false
			}
			copy(tt, t)
			tt[h] = it.logits[h]
			return modelBlocks(it, tt)
		}
		for i := range items {
			if it := &items[i]; isBenign(it.y) && !it.rulesBlocked && wouldBlock(it) {
				below = it.logits[h]
			}
		}
		for i := range corpus {
			if wouldBlock(&corpus[i]) {
				below = corpus[i].logits[h]
			}
		}
		if !math.IsInf(float64(below), -1) {
			t[h] = (t[h] + below) / 2
		}
	}
	for _, h := range heads {
		if math.IsInf(float64(t[h]), 1) {
			top := float32(math.Inf(-1))
			for i := range items {
				top = max(top, items[i].logits[h])
			}
			for i := range corpus {
				top = max(top, corpus[i].logits[h])
			}
			t[h] = math.Nextafter32(top, inf)
		}
	}
	return t
}

// lookahead is how many of a head's next missed items a step of
// perHeadThresholds considers taking at once, so that a step that costs
// one false positive but opens a run of items is not passed over.
const lookahead = 40

// budgets are what the model may spend choosing the blocking heads'
// thresholds: benign held-out items blocked beyond those the rules
// block, and held-out corpus sentences blocked.
type budgets struct{ benign, corpus int }

// perHeadThresholds chooses a threshold for each blocking head (heads):
// starting with none firing, it repeatedly lowers the one head's
// threshold that gains the most held-out items — harmful items blocked
// and jailbreaks detected that the rules miss — per share of the budgets
// it spends: benign items blocked (beyond those the rules block) and
// corpus sentences blocked. It stops when no step fits in the budgets,
// and then sets each threshold halfway down to the next item it would
// cost, so that it does not sit on the last item taken. Heads differ in
// how their logits spread (the jailbreak head only ever fires on
// prompts; a category's medium head has a tenth of the harmful head's
// positives), so one shared logit spends the budget on the heads that
// need it least.
func perHeadThresholds(items []devItem, corpus [][numHeads]float32, heads []int, b budgets) []float32 {
	t := make([]float32, numHeads)
	inf := float32(math.Inf(1))
	for _, h := range heads {
		t[h] = inf
	}
	fires := func(it *devItem, h int, th float32) bool {
		if h == linear.HeadJailbreak && !it.prompt {
			return false // completions are never checked for jailbreaks
		}
		return it.logits[h] >= th
	}
	blockedBy := func(it *devItem, except int) bool {
		for _, h := range heads {
			if h != except && fires(it, h, t[h]) {
				return true
			}
		}
		return false
	}
	corpusBlocked := func(lg *[numHeads]float32, except int) bool {
		for _, h := range heads {
			if h != except && lg[h] >= t[h] {
				return true
			}
		}
		return false
	}
	// what the other heads block, for the head a step lowers
	itemOn, corpusOn := make([]bool, len(items)), make([]bool, len(corpus))
	others := func(h int) {
		for i := range items {
			itemOn[i] = blockedBy(&items[i], h)
		}
		for i := range corpus {
			corpusOn[i] = corpusBlocked(&corpus[i], h)
		}
	}
	// gain counts what the model adds to the rules with the thresholds t
	// but th for head h (others(h) computed)
	gain := func(h int, th float32) (g, benign, corp int) {
		for i := range items {
			it := &items[i]
			on := itemOn[i] || fires(it, h, th)
			switch {
			case isBenign(it.y):
				if on && !it.rulesBlocked {
					benign++
				}
			default:
				if it.y[linear.HeadJailbreak] == 1 && !it.rulesJailbreak && (it.prompt && it.logits[linear.HeadJailbreak] >= tOr(t, h, th, linear.HeadJailbreak)) {
					g++
				}
				if it.y[linear.HeadHarmful] == 1 && !it.rulesBlocked && on {
					g++
				}
			}
		}
		for i := range corpus {
			if corpusOn[i] || corpus[i][h] >= th {
				corp++
			}
		}
		return g, benign, corp
	}
	cost := func(benign, corp int) float64 {
		return float64(benign)/float64(max(b.benign, 1)) + float64(corp)/float64(max(b.corpus, 1))
	}
	for {
		bestH, bestT, bestRatio := -1, float32(0), -1.0
		for _, h := range heads {
			others(h)
			g0, b0, c0 := gain(h, t[h])
			// the logits below t[h] of items this head would gain
			var next []float32
			for i := range items {
				it := &items[i]
				if isBenign(it.y) || !fires(it, h, -inf) || it.logits[h] >= t[h] {
					continue
				}
				if (it.y[linear.HeadHarmful] == 1 && !it.rulesBlocked && !itemOn[i]) ||
					(h == linear.HeadJailbreak && it.y[h] == 1 && !it.rulesJailbreak) {
					next = append(next, it.logits[h])
				}
			}
			slices.Sort(next)
			slices.Reverse(next)
			for k := 0; k < min(lookahead, len(next)); k++ {
				g, bn, c := gain(h, next[k])
				if bn > b.benign || c > b.corpus || g <= g0 {
					continue
				}
				r := float64(g-g0) / (cost(bn-b0, c-c0) + 1e-3)
				if r > bestRatio {
					bestH, bestT, bestRatio = h, next[k], r
				}
			}
		}
		if bestH < 0 {
			break
		}
		t[bestH] = bestT
	}
	// halfway down to the next benign item or corpus sentence the head
	// would block, or a fixed margin when there is none above the
	// lowest logit seen
	for _, h := range heads {
		if math.IsInf(float64(t[h]), 1) {
			continue
		}
		below := float32(math.Inf(-1))
		for i := range items {
			it := &items[i]
			if isBenign(it.y) && !it.rulesBlocked && fires(it, h, -inf) && it.logits[h] < t[h] && !blockedBy(it, h) {
				below = max(below, it.logits[h])
			}
		}
		for i := range corpus {
			if corpus[i][h] < t[h] && !corpusBlocked(&corpus[i], h) {
				below = max(below, corpus[i][h])
			}
		}
		if !math.IsInf(float64(below), -1) {
			t[h] = (t[h] + below) / 2
		}
	}
	// a head that gained nothing keeps a threshold no held-out text
	// reaches
	for _, h := range heads {
		if math.IsInf(float64(t[h]), 1) {
			top := float32(math.Inf(-1))
			for i := range items {
				top = max(top, items[i].logits[h])
			}
			for i := range corpus {
				top = max(top, corpus[i][h])
			}
			t[h] = math.Nextafter32(top, inf)
		}
	}
	return t
}

// tOr is t[k], or th when k is h.
func tOr(t []float32, h int, th float32, k int) float32 {
	if k == h {
		return th
	}
	return t[k]
}

// report prints what rules and model together block on the held-out
// items at the default policy, as safetyeval measures it.
func report(qm *linear.Model, what string, dev []evaluation.Item, out io.Writer) error {
	cm, err := classifier.NewWithModel(qm)
	if err != nil {
		return err
	}
	r := evaluation.Evaluate(cm, dev)
	fmt.Fprintf(out, "\n%s, rules and model at the default policy:", what)
	for _, c := range control.Categories {
		fmt.Fprintf(out, " %s %.3f", c, r.Blocked[c].Rate())
	}
	jb := evaluation.Share{N: r.Jailbreak.TP + r.Jailbreak.FN, Hits: r.Jailbreak.TP}
	fmt.Fprintf(out, "; all harmful %.3f (n=%d), jailbreaks %.3f (n=%d), benign blocked %.4f (n=%d)\n",
		r.Harmful.Rate(), r.Harmful.N, jb.Rate(), jb.N, r.BenignFPRate(), r.Benign)
	return nil
}

// reportCorpus prints the share of the held-out corpus sentences that
// rules and model together flag (rate above safe, or a jailbreak) and
// block at the default policy, as safetyeval measures the whole corpus.
func reportCorpus(qm *linear.Model, corpus []string, out io.Writer) error {
	cm, err := classifier.NewWithModel(qm)
	if err != nil {
		return err
	}
	cr := evaluation.EvaluateCorpus(cm, corpus)
	fmt.Fprintf(out, "\nheld-out corpus, rules and model at the default policy: flagged %.4f, blocked %.4f (n=%d)\n", cr.FlagRate(), cr.BlockRate(), cr.Sentences)
	return nil
}

// vetoMargin is how far, in logits, the jailbreak veto stays below the
// lowest held-out jailbreak that the rules find.
const vetoMargin = 1

// jailbreakVeto returns the jailbreak head's logit below which a
// jailbreak found by the rules alone is cleared: vetoMargin under the
// lowest logit of a held-out jailbreak attempt the rules find, so that
// none of those is lost, or -Inf (no veto) when the rules find none.
func jailbreakVeto(cm, rules *classifier.Classifier, dev []evaluation.Item) float32 {
	low := float32(math.Inf(1))
	for _, it := range dev {
		if !it.Jailbreak || it.Dir != events.DirectionPrompt || !rules.Classify(it.Text, it.Dir).Jailbreak {
			continue
		}
		l, _ := cm.ModelLogits(it.Text)
		low = min(low, l[linear.HeadJailbreak])
	}
	if math.IsInf(float64(low), 1) {
		return float32(math.Inf(-1))
	}
	return low - vetoMargin
}

// thresholdMethods are the ways -thresholds names of choosing the
// blocking heads' thresholds.
var thresholdMethods = []string{"exact", "per-head", "shared"}

// blockingThresholds chooses the blocking heads' thresholds by method
// ("exact" or "per-head") within the budgets: blockBenign of the
// held-out benign items blocked by rules and model together, blockCorpus
// of the held-out corpus sentences blocked by the model.
func blockingThresholds(method string, items, corpus []devItem, heads []int, blockCorpus float64) []float32 {
	b := budgetsOf(items, corpus, blockCorpus)
	if method == "exact" {
		return exactThresholds(items, corpus, heads, b)
	}
	lg := make([][numHeads]float32, len(corpus))
	for i := range corpus {
		lg[i] = corpus[i].logits
	}
	return perHeadThresholds(items, lg, heads, b)
}

// budgetsOf turns the budgets' shares into counts for the held-out
// items and sentences: the benign items the model may block beyond
// those the rules already block, and the corpus sentences.
func budgetsOf(items, corpus []devItem, blockCorpus float64) budgets {
	benign, rules := 0, 0
	for i := range items {
		if isBenign(items[i].y) {
			benign++
			if items[i].rulesBlocked {
				rules++
			}
		}
	}
	return budgets{max(int(blockBenign*float64(benign))-rules, 0), int(blockCorpus * float64(len(corpus)))}
}

// reportSpend prints what the blocking thresholds t spend of the budgets
// b on the held-out items and corpus sentences, as the classifier
// decides (modelBlocks).
func reportSpend(items, corpus []devItem, t []float32, b budgets, out io.Writer) {
	benign, corp := 0, 0
	for i := range items {
		if it := &items[i]; isBenign(it.y) && !it.rulesBlocked && modelBlocks(it, t) {
			benign++
		}
	}
	for i := range corpus {
		if modelBlocks(&corpus[i], t) {
			corp++
		}
	}
	fmt.Fprintf(out, "the model blocks %d held-out benign items the rules do not (budget %d) and %d corpus sentences (budget %d)\n", benign, b.benign, corp, b.corpus)
}

// setKept fills in each item's kept and closest (see devItem), texts[i]
// being item i's text and dirs[i] its direction: for each category it
// classifies every text with the model's medium head of that category
// forced to fire and no other head firing, and records whether the
// result keeps the category at medium or above. cm must classify with
// the model of w, whose thresholds it changes meanwhile and restores.
func setKept(cm *classifier.Classifier, w *linear.Weights, items []devItem, texts []string, dirs []events.Direction) {
	saved, savedVeto := w.Threshold, w.JailbreakVeto
	defer func() { w.Threshold, w.JailbreakVeto = saved, savedVeto }()
	w.JailbreakVeto = 0
	for c := range linear.NumCategories {
		for h := range numHeads {
			w.Threshold[h] = math.MaxFloat32
		}
		w.Threshold[linear.Head(c, 2)] = -math.MaxFloat32
		for i := range items {
			r := cm.Classify(texts[i], dirs[i])
			items[i].kept[c] = classifier.SeverityRank(r.Severity[linear.Categories[c]]) >= 2
		}
	}
	for i := range items {
		gap := float32(math.Inf(-1))
		for c := range linear.NumCategories {
			if d := items[i].logits[linear.Head(c, 2)]; d > gap {
				items[i].closest, gap = c, d
			}
		}
	}
}
