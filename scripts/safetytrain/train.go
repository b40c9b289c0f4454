package main

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

const numHeads = linear.NumHeads

// example is one training or dev sentence: its hashed features (an index
// range in dataset.feats), its target per head and its weight.
type example struct {
	from, to int32
	y        [numHeads]int8 // 1 positive, 0 negative, -1 not trained for this head
	weight   float32
}

// dataset holds examples with their features in one slice.
type dataset struct {
	feats []uint32
	ex    []example
}

func (d *dataset) add(feats []uint32, y [numHeads]int8, weight float32) {
	from := int32(len(d.feats))
	d.feats = append(d.feats, feats...)
	d.ex = append(d.ex, example{from: from, to: int32(len(d.feats)), y: y, weight: weight})
}

func (d *dataset) features(e *example) []uint32 { return d.feats[e.from:e.to] }

// model is the float model during training: weights bucket after bucket,
// numHeads per bucket, as in the shipped file.
type model struct {
	bits uint
	w    []float32
	bias [numHeads]float32
}

func (m *model) logits(feats []uint32, out *[numHeads]float32) {
	*out = m.bias
	for _, f := range feats {
		b := int(f&^(1<<31)) * numHeads
		row := (*[numHeads]float32)(m.w[b : b+numHeads])
		if f&(1<<31) != 0 {
			for h := range out {
				out[h] -= row[h]
			}
		} else {
			for h := range out {
				out[h] += row[h]
			}
		}
	}
}

// hyper are the training settings.
type hyper struct {
	lambda float32 // L2 strength, applied to the weights an example touches
	rate   float32 // AdaGrad learning rate
	epochs int
	seed   uint64
}

// train fits one logistic regression per head with AdaGrad, visiting the
// examples in an order drawn from a fixed seed, so the same data and
// settings always give the same weights.
func train(d *dataset, bits uint, hp hyper) *model {
	m := &model{bits: bits, w: make([]float32, numHeads<<bits)}
	g2 := make([]float32, len(m.w))
	var bg2 [numHeads]float32
	rng := rand.New(rand.NewPCG(hp.seed, 0x5afe7))
	order := make([]int, len(d.ex))
	for i := range order {
		order[i] = i
	}
	var lg [numHeads]float32
	var grad [numHeads]float32
	for range hp.epochs {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			e := &d.ex[i]
			feats := d.features(e)
			m.logits(feats, &lg)
			for h := range numHeads {
				if e.y[h] < 0 {
					grad[h] = 0
					continue
				}
				grad[h] = (sigmoid(lg[h]) - float32(e.y[h])) * e.weight
				bg2[h] += grad[h] * grad[h]
				m.bias[h] -= hp.rate * grad[h] / sqrt32(bg2[h]+1e-8)
			}
			for _, f := range feats {
				b := int(f&^(1<<31)) * numHeads
				sign := float32(1)
				if f&(1<<31) != 0 {
					sign = -1
				}
				row := (*[numHeads]float32)(m.w[b : b+numHeads])
				acc := (*[numHeads]float32)(g2[b : b+numHeads])
				for h := range numHeads {
					if e.y[h] < 0 {
						continue
					}
					g := grad[h]*sign + hp.lambda*row[h]
					acc[h] += g * g
					row[h] -= hp.rate * g / sqrt32(acc[h]+1e-8)
				}
			}
		}
	}
	return m
}

func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// logLoss is the mean weighted log loss over every trained head.
func logLoss(m interface {
	logits([]uint32, *[numHeads]float32)
}, d *dataset) float64 {
	var sum, n float64
	var lg [numHeads]float32
	for i := range d.ex {
		e := &d.ex[i]
		m.logits(d.features(e), &lg)
		for h := range numHeads {
			if e.y[h] < 0 {
				continue
			}
			p := float64(sigmoid(lg[h]))
			p = min(max(p, 1e-7), 1-1e-7)
			if e.y[h] == 1 {
				sum -= math.Log(p)
			} else {
				sum -= math.Log(1 - p)
			}
			n++
		}
	}
	return sum / max(n, 1)
}

// quantise rounds the weights to signed bytes with one scale per head,
// chosen so the largest weight of the head is ±127.
func quantise(m *model) *linear.Weights {
	w := &linear.Weights{Bits: m.bits, W: make([]int8, len(m.w)), Bias: m.bias}
	var maxAbs [numHeads]float32
	for i, v := range m.w {
		h := i % numHeads
		maxAbs[h] = max(maxAbs[h], float32(math.Abs(float64(v))))
	}
	for h := range numHeads {
		w.Scale[h] = max(maxAbs[h], 1e-6) / 127
	}
	for i, v := range m.w {
		h := i % numHeads
		w.W[i] = int8(max(-127, min(127, math.Round(float64(v/w.Scale[h])))))
	}
	return w
}

// quantised adapts a linear.Model to the logits interface of logLoss.
type quantised struct{ m *linear.Model }

func (q quantised) logits(feats []uint32, out *[numHeads]float32) { q.m.Logits(feats, out) }

// thresholdAbove returns the lowest threshold that at most k of the
// scores reach: just above the (k+1)-th highest, or -Inf when there are
// at most k scores.
func thresholdAbove(scores []float32, k int) float32 {
	if k >= len(scores) {
		return float32(math.Inf(-1))
	}
	s := slices.Clone(scores)
	slices.SortFunc(s, func(a, b float32) int {
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	return math.Nextafter32(s[k], float32(math.Inf(1)))
}

func countAtLeast(scores []float32, t float32) int {
	n := 0
	for _, s := range scores {
		if s >= t {
			n++
		}
	}
	return n
}
