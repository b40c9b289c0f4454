package builtin

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// EmbeddingDimensions is the default (and largest) length of an embedding.
const EmbeddingDimensions = 1536

// Feature weights of the embedding. Words carry the meaning; word pairs
// add some word order; five-letter word prefixes let inflections of a word
// (whale, whales, whaling) meet; tokens add sub-word and punctuation
// evidence. Function words are weighted down so that two texts do not
// look alike for sharing "the" and "of".
const (
	weightWord     = 1.0
	weightStopword = 0.2
	weightPair     = 0.5
	weightPrefix   = 0.5
	weightToken    = 0.3
	prefixRunes    = 5
)

// Each feature lands in one dimension of every band below: bands of
// doubling width, [0,1), [1,2), [2,4) ... [512,1024), then [1024,1536).
// So any prefix of the vector already holds every feature (more coarsely
// the shorter it is), which is what lets a shortened embedding keep its
// meaning. A band's amplitude grows with the square root of its width, so
// the wide bands, where features rarely collide, dominate the full vector.
var bandStarts = []int{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, EmbeddingDimensions}

// Embed returns the embedding of text: an L2-normalised vector of dims
// float32 (1..EmbeddingDimensions; 0 means EmbeddingDimensions), and the
// number of tokens of text, as OpenAI counts embedding input.
//
// The embedding is a deterministic hashing model, not a learned one: the
// text's words, word pairs, word prefixes and tokens are hashed into the
// vector with a random sign each (signed feature hashing), so texts that
// share words have a high cosine similarity and unrelated texts one near
// zero. A shorter vector is the prefix of the full one, re-normalised, as
// with the OpenAI API's dimensions parameter. Text with nothing to embed
// (empty or only white space) is an error.
func Embed(text string, dims int) ([]float32, int, error) {
	if dims == 0 {
		dims = EmbeddingDimensions
	}
	if dims < 1 || dims > EmbeddingDimensions {
		return nil, 0, errParam("dimensions", "must be between 1 and %d", EmbeddingDimensions)
	}
	v, err := vocab()
	if err != nil {
		return nil, 0, err
	}
	toks := v.encode(text)
	if strings.TrimSpace(text) == "" {
		return nil, len(toks), errParam("input", "must not be empty")
	}
	acc := make([]float64, dims)
	add := func(kind byte, feature string, w float64) {
		addFeature(acc, featureHash(kind, feature), w)
	}
	words := splitWords(text)
	for i, w := range words {
		wt := weightWord
		if stopwords[w] {
			wt = weightStopword
		}
		add('w', w, wt)
		if utf8.RuneCountInString(w) >= prefixRunes && !stopwords[w] {
			add('p', firstRunes(w, prefixRunes), weightPrefix*wt)
		}
		if i > 0 {
			add('b', words[i-1]+" "+w, weightPair)
		}
	}
	for _, t := range toks {
		addFeature(acc, mix64(uint64(t)+'t'<<32), weightToken)
	}
	var norm float64
	for _, x := range acc {
		norm += x * x
	}
	out := make([]float32, dims)
	if norm == 0 {
		// Every feature cancelled out in a very short vector; any unit
		// vector is as good as another, so keep the result deterministic.
		out[0] = 1
		return out, len(toks), nil
	}
	inv := 1 / math.Sqrt(norm)
	for i, x := range acc {
		out[i] = float32(x * inv)
	}
	return out, len(toks), nil
}

// featureHash is FNV-1a over kind and feature, finished with mix64. It is
// fixed forever: the same text must give the same vector in every process
// and every release, or stored embeddings stop matching new ones.
func featureHash(kind byte, feature string) uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ uint64(kind)) * 1099511628211
	for i := 0; i < len(feature); i++ {
		h = (h ^ uint64(feature[i])) * 1099511628211
	}
	return mix64(h)
}

// addFeature adds a feature with hash h and weight w to every band of acc
// that acc reaches.
func addFeature(acc []float64, h uint64, w float64) {
	for b := 0; b+1 < len(bandStarts) && bandStarts[b] < len(acc); b++ {
		lo, hi := bandStarts[b], bandStarts[b+1]
		x := mix64(h + uint64(b)*0x9e3779b97f4a7c15)
		i := lo + int(x%uint64(hi-lo))
		if i >= len(acc) {
			continue
		}
		a := w * math.Sqrt(float64(hi-lo))
		if x>>63 == 1 {
			a = -a
		}
		acc[i] += a
	}
}

// splitWords returns the lower-cased words of text: runs of letters and
// digits (apostrophes inside a word kept).
func splitWords(text string) []string {
	var words []string
	f := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '\'' && r != '’'
	})
	for _, w := range f {
		w = strings.Trim(w, "'’")
		if w != "" {
			words = append(words, w)
		}
	}
	return words
}

func firstRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// stopwords are English function words.
var stopwords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`a about above after again against all am an and any are as at be because
		been before being below between both but by can could did do does doing down during each few for
		from further had has have having he her here hers herself him himself his how i if in into is it
		its itself just me more most my myself no nor not now of off on once only or other our ours
		ourselves out over own same she should so some such than that the their theirs them themselves
		then there these they this those through to too under until up very was we were what when where
		which while who whom why will with would you your yours yourself yourselves`) {
		m[w] = true
	}
	return m
}()
