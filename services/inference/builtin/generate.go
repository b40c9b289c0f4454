package builtin

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits and defaults of Params.
const (
	// DefaultMaxTokens applies when Params.MaxTokens is 0.
	DefaultMaxTokens = 256
	// MaxMaxTokens is the largest MaxTokens accepted.
	MaxMaxTokens = 4096
	// MaxChoices is the largest N accepted, as in the OpenAI API.
	MaxChoices = 128
	// MaxStops is the largest number of stop sequences, as in the OpenAI API.
	MaxStops = 4
	// MaxTemperature is the largest Temperature accepted.
	MaxTemperature = 2
)

// Finish reasons of a Choice.
const (
	// FinishStop: the text reached a natural end, a stop sequence, or the
	// model's end of text.
	FinishStop = "stop"
	// FinishLength: the text was cut at MaxTokens.
	FinishLength = "length"
)

// Params are the sampling parameters of a request. The zero value is valid:
// greedy decoding of one choice of at most DefaultMaxTokens tokens.
type Params struct {
	// MaxTokens caps the tokens generated per choice, 1..MaxMaxTokens; 0
	// means DefaultMaxTokens.
	MaxTokens int
	// Temperature, 0..MaxTemperature, flattens (above 1) or sharpens (below
	// 1) the next-token distribution; 0 means greedy decoding (always the
	// most probable token). The OpenAI API's default is 1: callers map an
	// absent temperature to 1, not 0.
	Temperature float64
	// TopP, in (0, 1], samples only from the most probable tokens whose
	// probabilities add up to TopP (nucleus sampling); 0 means 1.
	TopP float64
	// Seed makes sampling repeatable: the same prompt, parameters and seed
	// give the same choices, each choice index its own random stream. Nil
	// draws a fresh seed per request.
	Seed *int64
	// Stop holds up to MaxStops sequences; the text ends before the first
	// one generated (empty strings are ignored).
	Stop []string
	// N is the number of choices, 1..MaxChoices; 0 means 1.
	N int
}

// Choice is one generated text.
type Choice struct {
	// Index is the choice's position, 0..N-1.
	Index int
	// Text is the generated text (never including a stop sequence); the
	// deltas streamed for this choice concatenate to it.
	Text string
	// FinishReason is FinishStop or FinishLength.
	FinishReason string
	// CompletionTokens is the number of tokens the model generated for this
	// choice, at most MaxTokens. Tokens of a stop sequence count (they were
	// generated, then cut); the end-of-text token does not.
	CompletionTokens int
}

// normalize applies defaults and checks ranges.
func (p Params) normalize() (Params, error) {
	switch {
	case p.MaxTokens == 0:
		p.MaxTokens = DefaultMaxTokens
	case p.MaxTokens < 0 || p.MaxTokens > MaxMaxTokens:
		return p, errParam("max_tokens", "must be between 1 and %d", MaxMaxTokens)
	}
	if !(p.Temperature >= 0 && p.Temperature <= MaxTemperature) {
		return p, errParam("temperature", "must be between 0 and %d", MaxTemperature)
	}
	switch {
	case p.TopP == 0:
		p.TopP = 1
	case !(p.TopP > 0 && p.TopP <= 1):
		return p, errParam("top_p", "must be greater than 0 and at most 1")
	}
	switch {
	case p.N == 0:
		p.N = 1
	case p.N < 0 || p.N > MaxChoices:
		return p, errParam("n", "must be between 1 and %d", MaxChoices)
	}
	if len(p.Stop) > MaxStops {
		return p, errParam("stop", "at most %d sequences", MaxStops)
	}
	stops := make([]string, 0, len(p.Stop))
	for _, s := range p.Stop {
		if s != "" {
			stops = append(stops, s)
		}
	}
	p.Stop = stops
	return p, nil
}

// request is a validated generation request.
type request struct {
	p        Params
	prompt   []uint32   // start-padded context of the first token
	affinity []uint32   // ascending ids of the prompt's informative words
	stops    []*matcher // the caller's and, for chat, the role markers
	chat     bool
	seed     uint64
}

// Generate continues prompt, returning p.N choices (see Params for the
// defaults and limits). Each choice is generated token by token from the
// last tokens of the prompt, and ends at the model's end of text, at the
// first sentence end after about half of MaxTokens (at most 48 tokens),
// at a stop sequence (FinishStop), or at MaxTokens (FinishLength).
//
// emit, if not nil, receives each choice's text as it is produced, in
// order, choice after choice; the deltas of a choice concatenate to its
// Text, and text that could be the start of a stop sequence is held back
// until it is known not to be one. An error from emit ends generation and
// is returned. Generation stops with the context's error when ctx ends.
//
// Generate only reads the model: it keeps nothing from the prompt or the
// output once it returns.
func (m *Model) Generate(ctx context.Context, prompt string, p Params, emit func(choice int, delta string) error) ([]Choice, error) {
	p, err := p.normalize()
	if err != nil {
		return nil, err
	}
	toks := m.v.encode(prompt)
	tail := toks[max(0, len(toks)-affinityWindow):]
	r := &request{
		p:        p,
		prompt:   m.startHistory(toks),
		affinity: m.affinity(tail),
		stops:    matchers(p.Stop),
		seed:     seedOf(p.Seed),
	}
	return m.run(ctx, r, emit)
}

// matchers returns a matcher per stop sequence.
func matchers(stops []string) []*matcher {
	if len(stops) == 0 {
		return nil
	}
	out := make([]*matcher, len(stops))
	for i, p := range stops {
		out[i] = newMatcher(p)
	}
	return out
}

// affinityWindow is how many prompt tokens the topic boost looks at.
const affinityWindow = 256

func seedOf(seed *int64) uint64 {
	if seed == nil {
		return rand.Uint64()
	}
	return uint64(*seed)
}

func (m *Model) run(ctx context.Context, r *request, emit func(int, string) error) ([]Choice, error) {
	out := make([]Choice, r.p.N)
	// One scorer, history, stream and token list per request, reused by
	// its choices: scratch space that never outlives the call.
	s := m.newScorer()
	st := newStream(r.stops, emit)
	hist := make([]uint32, 0, cap(r.prompt))
	gen := make([]uint32, 0, min(r.p.MaxTokens, 256))
	for i := range out {
		c, err := m.choice(ctx, r, i, s, st, hist, gen)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// Shaping of the next-token distribution.
const (
	// affinityBoost multiplies the probability of each informative word of
	// the prompt until the text has used it, so a continuation keeps to
	// the prompt's topic (a cache language model, in the literature) and
	// touches several of its words without repeating any.
	affinityBoost = 16
	// informative is the unigram probability under which a word of the
	// prompt counts as informative rather than a function word.
	informative = 1e-3
	// maxSoftTarget caps the length after which a text ends at its next
	// sentence end.
	maxSoftTarget = 48
	// endPull is how much the probability of ending (a sentence end or end
	// of text) grows per token beyond the soft target.
	endPull = 0.5
	// noRepeat is the length of n-grams a text may not repeat: a
	// continuation that would reproduce one of its own earlier n-grams of
	// this length is avoided when another candidate exists, which keeps
	// n-gram decoding (greedy above all) out of loops.
	noRepeat = 4
)

// affinity returns the informative words of toks as ascending unique ids.
func (m *Model) affinity(toks []uint32) []uint32 {
	var out []uint32
	for _, t := range toks {
		if m.v.flags[t]&flagWord != 0 && m.uni[t] < informative {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func softTarget(maxTokens int) int {
	return min(max(maxTokens/2, 1), maxSoftTarget)
}

// choice generates choice i of r with the request's scratch space.
func (m *Model) choice(ctx context.Context, r *request, i int, s *scorer, st *stream, hist, gen []uint32) (Choice, error) {
	rng := newDraws(r.seed, i)
	hist = append(hist[:0], r.prompt...)
	gen = gen[:0]
	st.reset(i, r.p.MaxTokens)
	soft := softTarget(r.p.MaxTokens)
	// At the API's default temperature and top_p, tokens are drawn from
	// the mixture tables; otherwise every candidate is scored.
	mixture := m.mix != nil && r.p.Temperature == 1 && r.p.TopP >= 1
	content := false
	finish := FinishLength
	n := 0
	for n < r.p.MaxTokens {
		if err := ctx.Err(); err != nil {
			return Choice{}, err
		}
		tok, ok := uint32(0), false
		if mixture {
			tok, ok = s.fastNext(r, hist, gen, content, n, soft, rng)
		}
		if !ok {
			cands, probs := s.dist(hist)
			s.shape(r, gen, content, n, soft)
			var k int
			k, s.nucleus = pick(probs, r.p.Temperature, r.p.TopP, rng, s.nucleus)
			tok = cands[k]
		}
		n++
		if tok == eos {
			finish = FinishStop
			break
		}
		piece := m.v.pieces[tok]
		if r.chat && !content {
			piece = strings.TrimLeftFunc(piece, unicode.IsSpace)
		}
		if !content && strings.TrimSpace(piece) != "" {
			content = true
		}
		gen = append(gen, tok)
		hist = append(hist, tok)
		if len(hist) >= cap(hist) {
			hist = append(hist[:0], hist[len(hist)-(m.order-1):]...)
		}
		stopped, err := st.push(piece)
		if err != nil {
			return Choice{}, err
		}
		if stopped {
			finish = FinishStop
			break
		}
		if n >= soft && m.v.flags[tok]&flagSentence != 0 && sentenceEnd(st.raw) {
			finish = FinishStop
			break
		}
	}
	if err := st.close(); err != nil {
		return Choice{}, err
	}
	return Choice{Index: i, Text: st.text.String(), FinishReason: finish, CompletionTokens: n}, nil
}

// shape adjusts the candidate probabilities for the request: no end of text
// (and, in a chat reply, no leading white space) before any content, the
// prompt's informative words boosted, no repeated n-grams, and a growing
// pull towards ending once the text is past its soft target length. A rule
// that would rule out every candidate is not applied.
func (s *scorer) shape(r *request, gen []uint32, content bool, n, soft int) {
	m, cands, probs := s.m, s.cands, s.probs
	s.keep = append(s.keep[:0], probs...)
	pull := 1.0
	if n >= soft {
		pull += endPull * float64(n-soft+1)
	}
	a := 0
	var left float64
	for i, tok := range cands {
		f := m.v.flags[tok]
		switch {
		case tok == eos:
			if !content {
				probs[i] = 0
			} else {
				probs[i] *= pull
			}
		case !content && r.chat && f&(flagSpace|flagNewline) != 0:
			probs[i] = 0
		case f&flagSentence != 0:
			probs[i] *= pull
		}
		for a < len(r.affinity) && r.affinity[a] < tok {
			a++
		}
		if a < len(r.affinity) && r.affinity[a] == tok && !slices.Contains(gen, tok) {
			probs[i] *= affinityBoost
		}
		left += probs[i]
	}
	if left == 0 {
		copy(probs, s.keep)
		return
	}
	if len(gen) < noRepeat-1 {
		return
	}
	s.banned = appendRepeats(s.banned[:0], gen, noRepeat)
	banned := s.banned
	if len(banned) == 0 {
		return
	}
	s.keep = append(s.keep[:0], probs...)
	left = 0
	for i, tok := range cands {
		if _, ok := slices.BinarySearch(banned, tok); ok {
			probs[i] = 0
		}
		left += probs[i]
	}
	if left == 0 {
		copy(probs, s.keep)
	}
}

// appendRepeats appends to out, ascending, the tokens that would complete
// an n-gram of length n that gen already contains, given gen's last n-1
// tokens.
func appendRepeats(out, gen []uint32, n int) []uint32 {
	suffix := gen[len(gen)-(n-1):]
	for i := 0; i+n <= len(gen); i++ {
		if slices.Equal(gen[i:i+n-1], suffix) {
			out = append(out, gen[i+n-1])
		}
	}
	slices.Sort(out)
	return out
}

// ranked is a candidate in the top-p ordering.
type ranked struct {
	p float64
	i int
}

// pick chooses a candidate: the most probable one (lowest id on ties) at
// temperature 0, otherwise a draw from the distribution raised to 1/temp
// and cut to its top-p nucleus. nucleus is scratch space, returned for
// reuse.
func pick(probs []float64, temp, topP float64, rng *draws, nucleus []ranked) (int, []ranked) {
	best := 0
	for i, p := range probs {
		if p > probs[best] {
			best = i
		}
	}
	if temp == 0 || probs[best] == 0 {
		return best, nucleus
	}
	if temp != 1 {
		// Relative to the best, so no probability underflows to zero for
		// all candidates at low temperatures.
		// exp(log(x)/temp) is math.Pow(x, 1/temp) without its special
		// cases, at twice the speed; x is in (0, 1].
		inv, top := 1/temp, probs[best]
		for i, p := range probs {
			if p > 0 {
				probs[i] = math.Exp(math.Log(p/top) * inv)
			}
		}
	}
	var total float64
	for _, p := range probs {
		total += p
	}
	if topP >= 1 {
		x := rng.Float64() * total
		last := best
		for i, p := range probs {
			if p > 0 {
				if x -= p; x < 0 {
					return i, nucleus
				}
				last = i
			}
		}
		return last, nucleus
	}
	// Candidates below floor hold less than 1-topP of the mass all
	// together, so the nucleus lies within the rest: only those are sorted.
	floor := (1 - topP) * total / float64(len(probs))
	nucleus = nucleus[:0]
	for i, p := range probs {
		if p > 0 && p >= floor {
			nucleus = append(nucleus, ranked{p, i})
		}
	}
	// Candidates are in ascending token order, so ties fall to the lower
	// token id: the order is total and sampling repeatable.
	slices.SortFunc(nucleus, func(a, b ranked) int {
		switch {
		case a.p > b.p:
			return -1
		case a.p < b.p:
			return 1
		}
		return a.i - b.i
	})
	var cum float64
	for j, r := range nucleus {
		cum += r.p
		if cum >= topP*total {
			nucleus = nucleus[:j+1]
			break
		}
	}
	var mass float64
	for _, r := range nucleus {
		mass += r.p
	}
	x := rng.Float64() * mass
	for _, r := range nucleus {
		if x -= r.p; x < 0 {
			return r.i, nucleus
		}
	}
	return nucleus[len(nucleus)-1].i, nucleus
}

// abbreviations end with a period that does not end a sentence.
var abbreviations = []string{"Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Mt", "vs", "etc", "No", "Gen", "Capt", "Col", "Gov", "Sen", "Rep", "Jan", "Feb", "Aug", "Sept", "Oct", "Nov", "Dec"}

// sentenceEnd reports whether text ends a sentence: with '.', '!' or '?'
// (closing quotes and brackets allowed after), not a period after a known
// abbreviation, a single letter (as in U.S.) or a digit.
func sentenceEnd(text []byte) bool {
	t := bytes.TrimRightFunc(text, closing)
	if len(t) == 0 {
		return false
	}
	switch t[len(t)-1] {
	case '!', '?':
		return true
	case '.':
	default:
		return false
	}
	t = t[:len(t)-1]
	word := t[bytes.LastIndexFunc(t, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })+1:]
	if len(word) == 0 {
		return true
	}
	if r, _ := utf8.DecodeLastRune(word); unicode.IsDigit(r) {
		return false
	}
	if utf8.RuneCount(word) == 1 {
		return false
	}
	return !slices.ContainsFunc(abbreviations, func(a string) bool { return string(word) == a })
}
