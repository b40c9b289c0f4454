package builtin

import (
	"fmt"
	"math"
	"slices"
)

// successor is a token that followed a context, with its count summed over
// the model's layers (each layer's count times the layer's weight).
type successor struct {
	tok uint32
	c   float64
}

// scorer holds the scratch space of one sequence of predictions. A Model is
// shared and immutable; each generation or scoring run gets its own scorer,
// so no state passes between requests.
type scorer struct {
	m     *Model
	hs    []uint64
	a, b  []successor
	cands []uint32
	probs []float64
	keep  []float64

	// The mixture sampler's: the contexts found per level, the level-1
	// context's index, the shaped tokens and the banned ones.
	lv     [maxOrder]ctxLevel
	ctx1   int
	shaped []shaped
	banned []uint32
	// pick's scratch.
	nucleus []ranked
}

func (m *Model) newScorer() *scorer {
	return &scorer{m: m, hs: make([]uint64, m.order)}
}

// successors returns the successors of the context with hash h among
// contexts of k tokens, merged over the layers and ascending by token, and
// the sum of their counts. It returns nil if no layer saw the context. The
// list is valid until the next call.
func (s *scorer) successors(k int, h uint64) ([]successor, float64) {
	out := s.a[:0]
	var total float64
	found := false
	for _, l := range s.m.layers {
		lv := &l.t.levels[k]
		i, ok := slices.BinarySearch(lv.ctx, h)
		if !ok {
			continue
		}
		lo, hi := lv.off[i], lv.off[i+1]
		total += l.w * float64(lv.sum[i])
		if !found {
			for j := lo; j < hi; j++ {
				out = append(out, successor{lv.tok[j], l.w * float64(lv.cnt[j])})
			}
			found = true
			continue
		}
		merged := s.b[:0]
		a := 0
		for j := lo; j < hi; j++ {
			tok, c := lv.tok[j], l.w*float64(lv.cnt[j])
			for a < len(out) && out[a].tok < tok {
				merged = append(merged, out[a])
				a++
			}
			if a < len(out) && out[a].tok == tok {
				c += out[a].c
				a++
			}
			merged = append(merged, successor{tok, c})
		}
		merged = append(merged, out[a:]...)
		s.b = out
		out = merged
	}
	s.a = out
	if !found {
		return nil, 0
	}
	return out, total
}

// backoff returns the interpolation weight a context leaves to the shorter
// context: the mass the discount d took from its successors. With integer
// counts it is d*N1+(h)/c(h), the usual Kneser-Ney weight; taking min(c, d)
// keeps the distribution normalised when weighted overlay counts fall
// below d.
func backoff(list []successor, total, d float64) float64 {
	// Summed as d times the number of counts of at least d, plus the
	// smaller ones: for a model without overlays that is d*n/total, the
	// weight the mixture sampler computes from the context's size alone,
	// to the last bit.
	var small float64
	n := 0
	for _, e := range list {
		if e.c >= d {
			n++
		} else {
			small += e.c
		}
	}
	return (d*float64(n) + small) / total
}

// dist returns the candidate next tokens after history (which holds at
// least order-1 tokens, start-padded with eos) and their interpolated
// Kneser-Ney probabilities. Candidates are every token seen after the last
// token of history (the successor sets of longer contexts are subsets of
// it), or the most probable tokens overall when the last token was never
// seen; the long tail of tokens only the unigram level gives mass to is
// left out, as top-k truncation would do. The slices are valid until the
// next call.
func (s *scorer) dist(history []uint32) ([]uint32, []float64) {
	m := s.m
	if cap(s.cands) < m.maxCands {
		// Once per request, at full size: growing on demand would
		// allocate again and again over the first tokens.
		s.cands = make([]uint32, 0, m.maxCands)
		s.probs = make([]float64, 0, m.maxCands)
		s.keep = make([]float64, 0, m.maxCands)
		s.a = make([]successor, 0, m.maxCands)
	}
	contextHashes(history[len(history)-(m.order-1):], s.hs)
	s.cands = s.cands[:0]
	first, _ := s.successors(1, s.hs[1])
	if first == nil {
		s.cands = append(s.cands, m.top...)
	} else {
		for _, e := range first {
			s.cands = append(s.cands, e.tok)
		}
	}
	s.probs = slices.Grow(s.probs[:0], len(s.cands))[:len(s.cands)]
	for i, tok := range s.cands {
		s.probs[i] = float64(m.uni[tok])
	}
	if first == nil {
		return s.cands, s.probs
	}
	for k := 1; k < m.order; k++ {
		list, total := s.successors(k, s.hs[k])
		if list == nil {
			break // longer contexts contain this one, so none was seen either
		}
		d := m.disc[k]
		g := backoff(list, total, d)
		j := 0
		for i, tok := range s.cands {
			for j < len(list) && list[j].tok < tok {
				j++
			}
			var c float64
			if j < len(list) && list[j].tok == tok {
				c = list[j].c
			}
			s.probs[i] = max(c-d, 0)/total + g*s.probs[i]
		}
	}
	return s.cands, s.probs
}

// prob returns the interpolated Kneser-Ney probability of tok after
// history (at least order-1 tokens, start-padded with eos).
func (s *scorer) prob(history []uint32, tok uint32) float64 {
	m := s.m
	contextHashes(history[len(history)-(m.order-1):], s.hs)
	p := float64(m.uni[tok])
	for k := 1; k < m.order; k++ {
		list, total := s.successors(k, s.hs[k])
		if list == nil {
			break
		}
		d := m.disc[k]
		g := backoff(list, total, d)
		var c float64
		if i, ok := slices.BinarySearchFunc(list, tok, func(e successor, t uint32) int {
			return int(e.tok) - int(t)
		}); ok {
			c = list[i].c
		}
		p = max(c-d, 0)/total + g*p
	}
	return p
}

// startHistory returns the context the model predicts the first token of a
// text from: order-1 end-of-text tokens (the start of a text), followed by
// up to the last order-1 tokens of prefix.
func (m *Model) startHistory(prefix []uint32) []uint32 {
	k := m.order - 1
	h := make([]uint32, k, 2*k+64)
	for i := range h {
		h[i] = eos
	}
	if len(prefix) > k {
		prefix = prefix[len(prefix)-k:]
	}
	return append(h, prefix...)
}

// Perplexity returns the model's perplexity on text: exp of the mean
// negative log-probability of its tokens, each predicted from the tokens
// before it, the text taken as starting a new document. Lower means the
// text is more like what the model learned. It returns NaN for text with
// no tokens. It reads the model only.
func (m *Model) Perplexity(text string) float64 {
	toks := m.v.encode(text)
	if len(toks) == 0 {
		return math.NaN()
	}
	s := m.newScorer()
	hist := m.startHistory(nil)
	var nll float64
	for _, tok := range toks {
		nll -= math.Log(s.prob(hist, tok))
		hist = append(hist, tok)
		if len(hist) >= cap(hist) {
			hist = append(hist[:0], hist[len(hist)-(m.order-1):]...)
		}
	}
	return math.Exp(nll / float64(len(toks)))
}

// MaxAdaptWeight bounds the weight of an Adapt overlay.
const MaxAdaptWeight = 1e6

// Adapt returns a model whose counts are this model's plus weight times the
// counts of texts (each an independent document), for fine-tuning on a
// customer's data. The result shares this model's tables and adds a small
// overlay of the customer's n-grams (proportional to the size of texts,
// not to the base model); this model is not changed. weight is in
// (0, MaxAdaptWeight]: 1 counts every customer n-gram like a base one,
// larger values make the customer's style dominate sooner.
func (m *Model) Adapt(texts []string, weight float64) (*Model, error) {
	if !(weight > 0 && weight <= MaxAdaptWeight) {
		return nil, errParam("weight", "must be in (0, %g]", float64(MaxAdaptWeight))
	}
	toks, n := encodeAll(m.v, texts)
	if n == 0 {
		return nil, errParam("texts", "hold no tokens")
	}
	nonEmpty := toks[:0:0]
	for _, t := range toks {
		if len(t) > 0 {
			nonEmpty = append(nonEmpty, t)
		}
	}
	a := &Model{
		v:         m.v,
		order:     m.order,
		layers:    append(slices.Clip(m.layers), layer{t: buildTable(nonEmpty, m.order), w: weight}),
		disc:      m.disc,
		chatStops: m.chatStops,
	}
	a.finish()
	return a, nil
}

// Stats describes a model's size.
type Stats struct {
	// Order is the n-gram order: each token is predicted from Order-1
	// tokens before it.
	Order int
	// Layers is 1 for a base model plus one per Adapt.
	Layers int
	// TrainingTokens is the number of tokens counted, over all layers
	// (each text also counts one end-of-text token).
	TrainingTokens int
	// NGrams is the number of distinct n-grams stored, over all orders and
	// layers.
	NGrams int
	// OverlayNGrams is the part of NGrams that Adapt overlays hold.
	OverlayNGrams int
	// TableBytes is the memory the n-gram tables use, in bytes, counting
	// shared base tables once.
	TableBytes int
}

// Stats returns the model's size.
func (m *Model) Stats() Stats {
	st := Stats{Order: m.order, Layers: len(m.layers)}
	for i, l := range m.layers {
		st.TrainingTokens += l.t.tokens
		for k := range l.t.levels {
			lv := &l.t.levels[k]
			st.NGrams += lv.entries()
			if i > 0 {
				st.OverlayNGrams += lv.entries()
			}
			st.TableBytes += lv.bytes()
		}
	}
	return st
}

// Order returns the model's n-gram order.
func (m *Model) Order() int { return m.order }

// ParamError reports an invalid parameter. Its message names the parameter
// and the rule it broke, never the caller's text. Callers map it to an
// invalid-request error with errors.As.
type ParamError struct {
	// Param is the name of the parameter, as in the OpenAI API
	// (max_tokens, temperature, top_p, n, stop, messages, dimensions...).
	Param string
	// Message says what is wrong with it.
	Message string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Message }

// errParam builds a ParamError.
func errParam(param, format string, args ...any) error {
	return &ParamError{Param: param, Message: fmt.Sprintf(format, args...)}
}
