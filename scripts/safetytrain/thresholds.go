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
}

// lookahead is how many of a head's next missed items a step of
// perHeadThresholds considers taking at once, so that a step that costs
// one false positive but opens a run of items is not passed over.
const lookahead = 40

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
func perHeadThresholds(items []devItem, corpus [][numHeads]float32, heads []int, benignBudget, corpusBudget int) []float32 {
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
	// gain counts what the model adds to the rules with the thresholds t
	// but th for head h
	gain := func(h int, th float32) (g, benign, corp int) {
		for i := range items {
			it := &items[i]
			on := blockedBy(it, h) || (h >= 0 && fires(it, h, th))
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
			if corpusBlocked(&corpus[i], h) || (h >= 0 && corpus[i][h] >= th) {
				corp++
			}
		}
		return g, benign, corp
	}
	cost := func(benign, corp int) float64 {
		return float64(benign)/float64(max(benignBudget, 1)) + float64(corp)/float64(max(corpusBudget, 1))
	}
	for {
		g0, b0, c0 := gain(-1, inf)
		bestH, bestT, bestRatio := -1, float32(0), -1.0
		for _, h := range heads {
			// the logits below t[h] of items this head would gain
			var next []float32
			for i := range items {
				it := &items[i]
				if isBenign(it.y) || !fires(it, h, -inf) || it.logits[h] >= t[h] {
					continue
				}
				if (it.y[linear.HeadHarmful] == 1 && !it.rulesBlocked && !blockedBy(it, -1)) ||
					(h == linear.HeadJailbreak && it.y[h] == 1 && !it.rulesJailbreak) {
					next = append(next, it.logits[h])
				}
			}
			slices.Sort(next)
			slices.Reverse(next)
			for k := 0; k < min(lookahead, len(next)); k++ {
				g, b, c := gain(h, next[k])
				if b > benignBudget || c > corpusBudget || g <= g0 {
					continue
				}
				r := float64(g-g0) / (cost(b-b0, c-c0) + 1e-3)
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
