package builtin

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestTrainOrder(t *testing.T) {
	t.Parallel()
	for _, order := range []int{0, 1, 9} {
		if _, err := Train([]string{"some text"}, order); err == nil {
			t.Errorf("Train with order %d succeeded", order)
		}
	}
	if _, err := Train([]string{"", ""}, 3); err == nil {
		t.Error("Train on empty texts succeeded")
	}
}

// Training is deterministic, and the tables hold what the text says.
func TestTrainCounts(t *testing.T) {
	t.Parallel()
	texts := []string{"the cat sat on the mat", "the cat ran"}
	m, err := Train(texts, 3)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Train(texts, 3)
	if m.Stats() != again.Stats() {
		t.Errorf("two trainings differ: %+v, %+v", m.Stats(), again.Stats())
	}
	st := m.Stats()
	// 6 + 3 tokens, each text plus its end-of-text.
	if st.TrainingTokens != 11 {
		t.Errorf("training tokens = %d, want 11", st.TrainingTokens)
	}
	v, _ := vocab()
	tok := func(s string) uint32 { return v.encode(s)[0] }
	the, cat := tok("the"), tok(" cat")
	// "the cat" starts both texts: the trigram (eos, the) -> " cat" is
	// counted twice at the top level.
	s := m.newScorer()
	list, total := s.successors(2, extend(extend(hashSeed, the), eos))
	if len(list) != 1 || list[0].tok != cat || list[0].c != 2 || total != 2 {
		t.Errorf("successors of <s> the = %+v (total %v), want cat twice", list, total)
	}
	// A well-formed continuation is far more probable than a garbled one.
	if p, q := m.Perplexity("the cat sat on the mat"), m.Perplexity("mat the on sat cat the"); p >= q/4 {
		t.Errorf("perplexity of trained text %.1f, of its reversal %.1f", p, q)
	}
}

func TestPerplexity(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	prose := "It is the duty of the Congress to provide for the common defense and to promote the general welfare of the people of the United States."
	words := strings.Fields(prose)
	for i := range words {
		j := (i*7 + 3) % len(words)
		words[i], words[j] = words[j], words[i]
	}
	shuffled := strings.Join(words, " ")
	p, q := m.Perplexity(prose), m.Perplexity(shuffled)
	if !(p > 1 && p < q/3) {
		t.Errorf("perplexity of prose %.1f, of the same words shuffled %.1f; want prose far lower", p, q)
	}
	if !math.IsNaN(m.Perplexity("")) {
		t.Errorf("perplexity of empty text = %v, want NaN", m.Perplexity(""))
	}
	if p := m.Perplexity("\u2603 zxqv \U0001F40B"); math.IsInf(p, 0) || math.IsNaN(p) {
		t.Errorf("perplexity of unseen tokens = %v, want finite", p)
	}
}

// tickets writes n support tickets of a made-up company, in one house style
// with varied contents; start offsets the combinations so held-out tickets
// differ from training ones.
func tickets(n, start int) []string {
	products := []string{"Aurora router", "Borealis modem", "Cirrus mesh node", "Delta switch", "Ember access point"}
	faults := []string{"drops the connection every night", "reboots when the fan spins up", "shows a red status light", "loses its configuration after an update", "cannot reach the update server"}
	fixes := []string{"rolled the firmware back to 4.2.1", "replaced the power supply under warranty", "reset the device to factory settings", "moved the device to channel 11", "scheduled a technician visit"}
	customers := []string{"Marisol", "Tobias", "Keiko", "Anand", "Lucia", "Dmitri", "Fatima"}
	out := make([]string, n)
	for i := range out {
		k := start + i
		out[i] = fmt.Sprintf("Ticket %d. Customer %s reports that the %s %s. Agent note: we %s and asked %s to confirm within 48 hours. Status: resolved pending confirmation.",
			1000+k, customers[k%len(customers)], products[(k/2)%len(products)], faults[(k/3)%len(faults)], fixes[(k/5)%len(fixes)], customers[k%len(customers)])
	}
	return out
}

func TestAdaptLowersPerplexityAndLeavesBase(t *testing.T) {
	t.Parallel()
	base := loadModel(t)
	held := tickets(12, 400)
	probe := strings.Join(held, " ")
	baseStats := base.Stats()
	before := base.Perplexity(probe)

	adapted, err := base.Adapt(tickets(150, 0), 1)
	if err != nil {
		t.Fatal(err)
	}
	after := adapted.Perplexity(probe)
	if !(after < before/3) {
		t.Errorf("held-out perplexity %.1f before Adapt, %.1f after; want at least a threefold drop", before, after)
	}
	// The base model is untouched.
	if got := base.Perplexity(probe); got != before {
		t.Errorf("base perplexity changed from %v to %v", before, got)
	}
	if base.Stats() != baseStats {
		t.Errorf("base stats changed: %+v, then %+v", baseStats, base.Stats())
	}
	// Text in the base model's style is still modelled about as well.
	prose := "It is the duty of the Congress to provide for the common defense."
	if p, q := base.Perplexity(prose), adapted.Perplexity(prose); q > 1.5*p {
		t.Errorf("adapting raised the perplexity of base-style prose from %.1f to %.1f", p, q)
	}
	t.Logf("held-out ticket perplexity: base %.1f, adapted %.1f", before, after)
	// A larger weight leans further towards the customer's text, away from
	// the base model's.
	heavy, err := base.Adapt(tickets(150, 0), 20)
	if err != nil {
		t.Fatal(err)
	}
	if h, a := heavy.Perplexity(prose), adapted.Perplexity(prose); !(h > a) {
		t.Errorf("prose perplexity at weight 20 is %.1f, at weight 1 %.1f; want higher", h, a)
	}
	// The adapted model writes in the customer's style.
	cs, err := adapted.Generate(t.Context(), "Ticket 2001. Customer", Params{MaxTokens: 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cs[0].Text, "reports that the") {
		t.Errorf("adapted continuation %q is not in the tickets' style", cs[0].Text)
	}
}

// The overlay holds the customer's n-grams only; the base tables are
// shared, not copied.
func TestAdaptIsAnOverlay(t *testing.T) {
	t.Parallel()
	base := loadModel(t)
	texts := tickets(150, 0)
	adapted, err := base.Adapt(texts, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(adapted.layers) != 2 || adapted.layers[0].t != base.layers[0].t {
		t.Fatalf("adapted model does not share the base table")
	}
	bs, as := base.Stats(), adapted.Stats()
	tokens := 0
	for _, s := range texts {
		tokens += CountTokens(s) + 1
	}
	if as.OverlayNGrams == 0 || as.OverlayNGrams > base.Order()*tokens {
		t.Errorf("overlay holds %d n-grams for %d tokens", as.OverlayNGrams, tokens)
	}
	if as.NGrams != bs.NGrams+as.OverlayNGrams || as.Layers != 2 {
		t.Errorf("adapted stats %+v, base %+v", as, bs)
	}
	if overlay := as.TableBytes - bs.TableBytes; overlay > bs.TableBytes/100 {
		t.Errorf("overlay takes %d bytes, more than 1%% of the base's %d", overlay, bs.TableBytes)
	}
	// Adapting an adapted model adds another overlay on the same base.
	again, err := adapted.Adapt([]string{"Ticket 9999. Customer Odile reports that the Fjord repeater hums."}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.layers) != 3 || again.layers[0].t != base.layers[0].t || len(adapted.layers) != 2 {
		t.Errorf("second Adapt: %d layers (adapted still has %d)", len(again.layers), len(adapted.layers))
	}
}

func TestAdaptInvalid(t *testing.T) {
	t.Parallel()
	base := loadModel(t)
	tests := []struct {
		name   string
		texts  []string
		weight float64
		param  string
	}{
		{"zero weight", []string{"text"}, 0, "weight"},
		{"negative weight", []string{"text"}, -1, "weight"},
		{"NaN weight", []string{"text"}, math.NaN(), "weight"},
		{"infinite weight", []string{"text"}, math.Inf(1), "weight"},
		{"no texts", nil, 1, "texts"},
		{"empty texts", []string{"", ""}, 1, "texts"},
	}
	for _, tt := range tests {
		_, err := base.Adapt(tt.texts, tt.weight)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != tt.param {
			t.Errorf("%s: error %v, want a ParamError for %s", tt.name, err, tt.param)
		}
	}
}
