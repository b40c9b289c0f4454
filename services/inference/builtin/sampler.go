package builtin

import (
	"math/rand/v2"
	"slices"
)

// The interpolated Kneser-Ney distribution after a history is a mixture:
//
//	p(w) = sum over found levels k of W_k * (c_k(w) - d_k) / T_k  +  W_0 * uni(w)
//
// where W_k is the product of the backoff weights of the levels longer
// than k. Each term is a distribution over one context's successors that
// depends on that context alone, so it can be drawn from with tables built
// once at load time: pick a level by its weight, then a successor within
// it by binary search in the context's cumulative counts. A draw costs a
// few binary searches, however many candidates the history has, instead of
// scoring every candidate. The shaping of the distribution (end pull,
// topic boost, no repeats, no leading white space) touches few tokens, whose
// exact probabilities are computed one by one; the rest are drawn from the
// mixture and drawn again if they land on one of those few (rejection
// sampling). The result follows exactly the distribution that scoring every
// candidate gives, at temperature 1 and top_p 1, the API's defaults; other
// settings score every candidate.

// cumLevels is how many of the shortest context levels (from 1) keep
// cumulative counts; longer contexts have few successors (about one on
// average) and are scanned.
const cumLevels = 2

// maxRejections bounds the redraws of one token; past it the token is
// drawn by scoring every candidate. Redraws are needed only when the
// shaped tokens hold most of the mass.
const maxRejections = 32

// mixture holds the tables of a single-layer model that make drawing from
// the mixture cheap. It is built once, is immutable, and holds nothing of
// any request.
type mixture struct {
	// cum[k][j] is the sum of the counts of the successors of j's context
	// up to and including j, for levels 1..cumLevels (cum[0] is unused).
	cum [][]uint32
	// ucum[j] is, for level 1, the sum of the unigram probabilities of
	// the successors of j's context up to and including j.
	ucum []float64
	// special lists, per level-1 context (offsets specialOff[i] to
	// specialOff[i+1]), the successor positions whose tokens shaping may
	// change: end of text, sentence ends, white space and line breaks.
	special    []uint32
	specialOff []uint32
}

func (m *Model) buildMixture() *mixture {
	if len(m.layers) != 1 || m.order < 2 {
		return nil
	}
	t := m.layers[0].t
	mx := &mixture{cum: make([][]uint32, min(cumLevels, m.order-1)+1)}
	for k := 1; k < len(mx.cum); k++ {
		lv := &t.levels[k]
		cum := make([]uint32, len(lv.tok))
		for i := range lv.ctx {
			var acc uint32
			for j := lv.off[i]; j < lv.off[i+1]; j++ {
				acc += lv.cnt[j]
				cum[j] = acc
			}
		}
		mx.cum[k] = cum
	}
	lv := &t.levels[1]
	mx.ucum = make([]float64, len(lv.tok))
	mx.specialOff = make([]uint32, 0, len(lv.ctx)+1)
	for i := range lv.ctx {
		mx.specialOff = append(mx.specialOff, uint32(len(mx.special)))
		var acc float64
		for j := lv.off[i]; j < lv.off[i+1]; j++ {
			tok := lv.tok[j]
			acc += float64(m.uni[tok])
			mx.ucum[j] = acc
			if tok == eos || m.v.flags[tok]&(flagSentence|flagSpace|flagNewline) != 0 {
				mx.special = append(mx.special, j)
			}
		}
	}
	mx.specialOff = append(mx.specialOff, uint32(len(mx.special)))
	mx.special = slices.Clip(mx.special)
	return mx
}

// draws is a choice's random stream.
type draws struct{ src rand.PCG }

func newDraws(seed uint64, choice int) *draws {
	d := &draws{}
	d.src.Seed(seed, mix64(uint64(choice)+0x5851f42d4c957f2d))
	return d
}

// Float64 is uniform in [0, 1), as rand.Rand.Float64 draws it.
func (d *draws) Float64() float64 { return float64(d.src.Uint64()<<11>>11) / (1 << 53) }

// ctxLevel is a found context of the current history.
type ctxLevel struct {
	lo, hi int     // successor range
	total  float64 // sum of the counts
	g      float64 // backoff weight
	w      float64 // W_k: product of the backoff weights of longer levels
}

// shaped is a token whose probability shaping changes.
type shaped struct {
	tok    uint32
	p      float64 // unshaped probability
	q1, q2 float64 // shaped, before and after the no-repeat rule
}

// find locates the contexts of history; it returns the number of levels
// found (0 if the last token was never seen).
func (s *scorer) find(history []uint32) int {
	m := s.m
	t := m.layers[0].t
	contextHashes(history[len(history)-(m.order-1):], s.hs)
	found := 0
	for k := 1; k < m.order; k++ {
		lv := &t.levels[k]
		i, ok := slices.BinarySearch(lv.ctx, s.hs[k])
		if !ok {
			break
		}
		lo, hi := int(lv.off[i]), int(lv.off[i+1])
		total := float64(lv.sum[i])
		s.lv[k] = ctxLevel{lo: lo, hi: hi, total: total, g: m.disc[k] * float64(hi-lo) / total}
		if k == 1 {
			s.ctx1 = i
		}
		found = k
	}
	w := 1.0
	for k := found; k >= 1; k-- {
		s.lv[k].w = w
		w *= s.lv[k].g
	}
	s.lv[0].w = w
	return found
}

// exact returns the probability of tok with found levels, computed as
// dist computes it.
func (s *scorer) exact(tok uint32, found int) float64 {
	m := s.m
	t := m.layers[0].t
	p := float64(m.uni[tok])
	for k := 1; k <= found; k++ {
		c := &s.lv[k]
		lv := &t.levels[k]
		var cnt float64
		if j, ok := slices.BinarySearch(lv.tok[c.lo:c.hi], tok); ok {
			cnt = float64(lv.cnt[c.lo+j])
		}
		d := m.disc[k]
		p = max(cnt-d, 0)/c.total + c.g*p
	}
	return p
}

// inCands reports whether tok is a candidate (a successor of the level-1
// context).
func (s *scorer) inCands(tok uint32) bool {
	c := &s.lv[1]
	_, ok := slices.BinarySearch(s.m.layers[0].t.levels[1].tok[c.lo:c.hi], tok)
	return ok
}

// fastNext draws the next token at temperature 1 and top_p 1 from the
// distribution that dist, shape and pick give, without scoring every
// candidate. ok is false when the history's last token was never seen
// (the fallback candidates are few and scored instead).
func (s *scorer) fastNext(r *request, hist, gen []uint32, content bool, n, soft int, rng *draws) (tok uint32, ok bool) {
	m, mx := s.m, s.m.mix
	found := s.find(hist)
	if found == 0 {
		return 0, false
	}
	lv1 := &m.layers[0].t.levels[1]
	pull := 1.0
	if n >= soft {
		pull += endPull * float64(n-soft+1)
	}
	factor := func(tok uint32) float64 {
		f := m.v.flags[tok]
		x := 1.0
		switch {
		case tok == eos:
			if !content {
				x = 0
			} else {
				x *= pull
			}
		case !content && r.chat && f&(flagSpace|flagNewline) != 0:
			x = 0
		case f&flagSentence != 0:
			x *= pull
		}
		if _, ok := slices.BinarySearch(r.affinity, tok); ok && !slices.Contains(gen, tok) {
			x *= affinityBoost
		}
		return x
	}
	sh := s.shaped[:0]
	add := func(tok uint32, q1 float64) {
		p := s.exact(tok, found)
		sh = append(sh, shaped{tok: tok, p: p, q1: p * q1, q2: p * q1})
	}
	for _, j := range mx.special[mx.specialOff[s.ctx1]:mx.specialOff[s.ctx1+1]] {
		tok := lv1.tok[j]
		if f := factor(tok); f != 1 {
			add(tok, f)
		}
	}
	for _, tok := range r.affinity {
		if s.inCands(tok) && !slices.Contains(gen, tok) {
			add(tok, affinityBoost)
		}
	}
	if len(gen) >= noRepeat-1 {
		s.banned = appendRepeats(s.banned[:0], gen, noRepeat)
		for i, tok := range s.banned {
			if i > 0 && s.banned[i-1] == tok || !s.inCands(tok) {
				continue
			}
			at := slices.IndexFunc(sh, func(e shaped) bool { return e.tok == tok })
			if at < 0 {
				add(tok, 1)
				at = len(sh) - 1
			}
			sh[at].q2 = 0
		}
	}
	s.shaped = sh

	// The mass of the mixture over the candidates, and of the unshaped
	// rest: zero exactly when every candidate is shaped.
	var mass float64
	for k := 1; k <= found; k++ {
		c := &s.lv[k]
		mass += c.w * (c.total - m.disc[k]*float64(c.hi-c.lo)) / c.total
	}
	c1 := &s.lv[1]
	mass += s.lv[0].w * mx.ucum[c1.hi-1]
	var ps, q1, q2 float64
	for _, e := range sh {
		ps, q1, q2 = ps+e.p, q1+e.q1, q2+e.q2
	}
	rest := 0.0
	if len(sh) < c1.hi-c1.lo {
		rest = max(mass-ps, 0)
	}
	// As shape does: a rule that would rule out every candidate is not
	// applied.
	pickQ := func(e shaped) float64 { return e.q2 }
	sum := q2
	switch {
	case rest+q1 == 0:
		pickQ, sum = func(e shaped) float64 { return e.p }, ps
	case rest+q2 == 0:
		pickQ, sum = func(e shaped) float64 { return e.q1 }, q1
	}
	x := rng.Float64() * (rest + sum)
	if x < sum {
		last := -1
		for i, e := range sh {
			if q := pickQ(e); q > 0 {
				if x -= q; x < 0 {
					return e.tok, true
				}
				last = i
			}
		}
		if last >= 0 {
			return sh[last].tok, true
		}
	}
	for range maxRejections {
		tok := s.drawMixture(found, mass, rng)
		if !slices.ContainsFunc(sh, func(e shaped) bool { return e.tok == tok }) {
			return tok, true
		}
	}
	// The shaped tokens hold nearly all the mass: draw from the rest by
	// scoring it.
	cands, probs := s.dist(hist)
	var total float64
	for i, tok := range cands {
		if slices.ContainsFunc(sh, func(e shaped) bool { return e.tok == tok }) {
			probs[i] = 0
		}
		total += probs[i]
	}
	y := rng.Float64() * total
	for i, p := range probs {
		if p > 0 {
			if y -= p; y < 0 {
				return cands[i], true
			}
			tok = cands[i]
		}
	}
	return tok, true
}

// drawMixture draws a candidate from the unshaped mixture of found levels,
// whose mass over the candidates is mass.
func (s *scorer) drawMixture(found int, mass float64, rng *draws) uint32 {
	m, mx := s.m, s.m.mix
	t := m.layers[0].t
	y := rng.Float64() * mass
	k := found
	for ; k >= 1; k-- {
		c := &s.lv[k]
		a := c.w * (c.total - m.disc[k]*float64(c.hi-c.lo)) / c.total
		if y < a {
			break
		}
		y -= a
	}
	c1 := &s.lv[1]
	if k == 0 {
		// The unigram term, over the candidates only.
		u := mx.ucum[c1.lo:c1.hi]
		x := rng.Float64() * u[len(u)-1]
		j, _ := slices.BinarySearchFunc(u, x, func(v, x float64) int {
			if v <= x {
				return -1
			}
			return 1
		})
		return t.levels[1].tok[c1.lo+min(j, len(u)-1)]
	}
	c := &s.lv[k]
	lv := &t.levels[k]
	d := m.disc[k]
	x := rng.Float64() * (c.total - d*float64(c.hi-c.lo))
	if k < len(mx.cum) {
		// The first successor whose discounted cumulative count exceeds x.
		cum := mx.cum[k][c.lo:c.hi]
		lo, hi := 0, len(cum)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if float64(cum[mid])-d*float64(mid+1) <= x {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lv.tok[c.lo+min(lo, len(cum)-1)]
	}
	for j := c.lo; j < c.hi; j++ {
		if x -= float64(lv.cnt[j]) - d; x < 0 {
			return lv.tok[j]
		}
	}
	return lv.tok[c.hi-1]
}
