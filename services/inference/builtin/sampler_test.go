package builtin

import (
	"cmp"
	"math"
	"slices"
	"testing"
)

// TestMixtureSamplerMatchesScoring: at temperature 1 and top_p 1, tokens
// drawn from the mixture tables follow the distribution that scoring every
// candidate and shaping it gives, in every shaping state: before content,
// past the soft target, with topic words and with banned repeats.
func TestMixtureSamplerMatchesScoring(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	if m.mix == nil {
		t.Fatal("the default model has no mixture tables")
	}
	enc := func(s string) []uint32 { return m.v.encode(s) }
	tests := []struct {
		name    string
		prompt  string
		gen     string // generated so far
		chat    bool
		content bool
		n, soft int
		topic   string
	}{
		{name: "after the", prompt: "Call me Ishmael. Some years ago I went to the", content: true, n: 3, soft: 16},
		{name: "chat reply start", prompt: "Tell me about the sea.", chat: true, n: 0, soft: 16, topic: "Tell me about the whale and the sea."},
		{name: "past the soft target", prompt: "The state of our Union is strong", content: true, n: 30, soft: 16},
		{name: "after a period", prompt: "It is the duty of the Congress.", content: true, n: 20, soft: 16},
		{name: "topic words", prompt: "We went down to the", content: true, n: 5, soft: 16, topic: "whale harpoon ship ocean captain sea boats"},
		{name: "banned repeats", prompt: "and the whale and the whale and the", gen: " and the whale and the whale and the", content: true, n: 9, soft: 16},
		{name: "unseen context", prompt: "zxqv qqzx", content: true, n: 2, soft: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			toks := enc(tt.prompt)
			r := &request{p: Params{Temperature: 1, TopP: 1, MaxTokens: 64}, chat: tt.chat, prompt: m.startHistory(toks)}
			if tt.topic != "" {
				r.affinity = m.affinity(enc(tt.topic))
			}
			hist := append(m.startHistory(nil), toks...)
			var gen []uint32
			if tt.gen != "" {
				gen = enc(tt.gen)
			}
			// The exact shaped distribution.
			s := m.newScorer()
			cands, probs := s.dist(hist)
			s.shape(r, gen, tt.content, tt.n, tt.soft)
			want := map[uint32]float64{}
			var total float64
			for i, tok := range cands {
				want[tok] += probs[i]
				total += probs[i]
			}
			for tok := range want {
				want[tok] /= total
			}
			const draws = 40000
			got := map[uint32]float64{}
			fs := m.newScorer()
			rng := newDraws(1, 0)
			for range draws {
				tok, ok := fs.fastNext(r, hist, gen, tt.content, tt.n, tt.soft, rng)
				if !ok {
					if tt.name != "unseen context" {
						t.Fatal("the mixture sampler declined a seen context")
					}
					return
				}
				if want[tok] == 0 {
					t.Fatalf("drew token %d (%q), which has probability 0", tok, m.v.pieces[tok])
				}
				got[tok] += 1.0 / draws
			}
			if tt.name == "unseen context" {
				t.Fatal("the mixture sampler drew from an unseen context")
			}
			// Each of the 40 most probable tokens, and the rest together,
			// within five standard deviations of its probability.
			type tp struct {
				tok uint32
				p   float64
			}
			ranked := make([]tp, 0, len(want))
			for tok, p := range want {
				ranked = append(ranked, tp{tok, p})
			}
			slices.SortFunc(ranked, func(a, b tp) int { return cmp.Compare(b.p, a.p) })
			restWant, restGot := 1.0, 1.0
			for _, e := range ranked[:min(40, len(ranked))] {
				checkFreq(t, m.v.pieces[e.tok], got[e.tok], e.p, draws)
				restWant -= e.p
				restGot -= got[e.tok]
			}
			checkFreq(t, "the rest", restGot, restWant, draws)

			// The probabilities the sampler computes for single tokens are
			// the scored ones to the last bit.
			fs.find(hist)
			found := 0
			for k := 1; k < m.order && fs.lv[k].hi > 0; k++ {
				found = k
			}
			s2 := m.newScorer()
			cands, probs = s2.dist(hist)
			for i := 0; i < len(cands); i += 1 + len(cands)/50 {
				if e := fs.exact(cands[i], found); e != probs[i] {
					t.Fatalf("token %d: sampler probability %v, scored %v", cands[i], e, probs[i])
				}
			}
		})
	}
}

func checkFreq(t *testing.T, what string, got, want float64, n int) {
	t.Helper()
	if sd := math.Sqrt(want * (1 - want) / float64(n)); math.Abs(got-want) > 5*sd+1e-4 {
		t.Errorf("%q drawn with frequency %.4f, probability %.4f (sd %.4f)", what, got, want, sd)
	}
}
