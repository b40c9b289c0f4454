package main

import (
	"testing"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// TestExactThresholds checks that the blocking thresholds count what the
// classifier decides: a benign item whose model finding a context rule
// clears costs no budget, and a harmful one gains nothing, so the budget
// goes to findings the classifier keeps.
func TestExactThresholds(t *testing.T) {
	t.Parallel()
	const hate, violence = 0, 2
	heads := []int{linear.Head(0, 2), linear.Head(1, 2), linear.Head(2, 2), linear.Head(3, 2), linear.HeadJailbreak, linear.HeadHarmful}
	// item has the medium head of category c at logit and every other
	// blocking head far below; keep is whether the classifier keeps
	// the model's finding in c
	item := func(c int, logit float32, harmful, keep bool) devItem {
		it := devItem{prompt: true, kept: [linear.NumCategories]bool{true, true, true, true}}
		for _, h := range heads {
			it.logits[h] = -5
		}
		it.logits[linear.Head(c, 2)] = logit
		if harmful {
			it.y[linear.Head(c, 2)], it.y[linear.HeadHarmful] = 1, 1
		}
		it.kept[c] = keep
		return it
	}
	prose := func(c int, logit float32) devItem { return item(c, logit, false, true) }
	type block struct {
		c     int
		logit float32
	}
	for _, tc := range []struct {
		name   string
		items  []devItem
		corpus []devItem
		b      budgets
		// the thresholds must block want and not wantNot
		want, wantNot []block
	}{
		{
			name:  "a cleared benign finding costs nothing",
			items: []devItem{item(hate, 2, false, false), item(hate, 1, true, true), item(hate, 3, true, true)},
			b:     budgets{benign: 0, corpus: 0},
			want:  []block{{hate, 1}, {hate, 3}},
		},
		{
			name:    "a cleared harmful finding gains nothing",
			items:   []devItem{item(hate, 1.5, true, false), item(violence, 1, true, true)},
			corpus:  []devItem{prose(hate, 2), prose(violence, 1.2)},
			b:       budgets{benign: 0, corpus: 1},
			want:    []block{{violence, 1}},
			wantNot: []block{{hate, 2}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			th := exactThresholds(tc.items, tc.corpus, heads, tc.b)
			for _, b := range tc.want {
				if h := linear.Head(b.c, 2); th[h] > b.logit {
					t.Errorf("%s threshold %.3f does not block %.1f", headName(h), th[h], b.logit)
				}
			}
			for _, b := range tc.wantNot {
				if h := linear.Head(b.c, 2); th[h] <= b.logit {
					t.Errorf("%s threshold %.3f blocks %.1f", headName(h), th[h], b.logit)
				}
			}
		})
	}
}
