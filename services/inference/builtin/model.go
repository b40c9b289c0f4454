package builtin

import (
	"embed"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// DefaultOrder is the n-gram order of the default model: it predicts each
// token from the four before it.
const DefaultOrder = 5

// maxOrder is the largest n-gram order Train accepts.
const maxOrder = 8

//go:embed corpus/*.txt
var corpusFS embed.FS

// corpusFiles are the training texts of the default model, in training order.
var corpusFiles = []string{"corpus/moby-dick.txt", "corpus/state-of-the-union-1946-2021.txt"}

// Model is an interpolated Kneser-Ney n-gram language model over
// o200k_base token ids. A Model is immutable once built: every method is
// safe for concurrent use, and nothing a caller passes in is kept.
type Model struct {
	v      *vocabulary
	order  int
	layers []layer   // layers[0] is the base; later layers are Adapt overlays
	disc   []float64 // per context length, the base model's discount
	uni    []float32 // per token id, the interpolated unigram probability
	top    []uint32  // the most probable tokens, ascending ids: fallback candidates
	mix    *mixture  // sampling tables of a model without overlays; nil otherwise
	// maxCands bounds the candidates of a prediction: the most successors
	// of any one-token context, or the fallback candidates.
	maxCands int
	// chatStops match the role markers that end a chat reply; immutable,
	// their state lives in each request's stream.
	chatStops []*matcher
}

// layer is one body of counts and how much it weighs in the sum.
type layer struct {
	t *table
	w float64
}

// Load builds the default model: DefaultOrder, trained on the public-domain
// corpus embedded in the binary (Moby-Dick and the U.S. State of the Union
// addresses 1946-2021, about 0.84 million tokens). It takes about a second
// on two cores and keeps about 57 MB of heap; call it once per process and
// share the Model.
func Load() (*Model, error) {
	texts := make([]string, 0, len(corpusFiles))
	for _, name := range corpusFiles {
		b, err := corpusFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading embedded corpus %s: %w", name, err)
		}
		texts = append(texts, paragraphs(string(b))...)
	}
	return Train(texts, DefaultOrder)
}

var blankLines = regexp.MustCompile(`\n[ \t\r]*\n`)

// paragraphs splits a corpus file at blank lines: each paragraph (a
// Moby-Dick paragraph or chapter heading, a whole address) is one text.
func paragraphs(s string) []string {
	var out []string
	for _, p := range blankLines.Split(s, -1) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Train builds a model of the given order (2 to 8) from texts, each an
// independent document: n-grams do not cross from one text to the next,
// and the model learns how texts begin and end.
func Train(texts []string, order int) (*Model, error) {
	if order < 2 || order > maxOrder {
		return nil, fmt.Errorf("n-gram order %d out of range 2..%d", order, maxOrder)
	}
	v, err := vocab()
	if err != nil {
		return nil, err
	}
	toks, n := encodeAll(v, texts)
	if n == 0 {
		return nil, errors.New("training texts hold no tokens")
	}
	t := buildTable(toks, order)
	m := &Model{v: v, order: order, layers: []layer{{t: t, w: 1}}, chatStops: chatStops()}
	m.disc = make([]float64, order)
	for k := range order {
		m.disc[k] = t.levels[k].discount()
	}
	m.finish()
	m.mix = m.buildMixture()
	return m, nil
}

// encodeAll tokenizes texts on every CPU; the result is in input order.
func encodeAll(v *vocabulary, texts []string) ([][]uint32, int) {
	out := make([][]uint32, len(texts))
	workers := min(runtime.GOMAXPROCS(0), len(texts))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(texts); i += workers {
				out[i] = v.encode(texts[i])
			}
		})
	}
	wg.Wait()
	n := 0
	for _, t := range out {
		n += len(t)
	}
	return out, n
}

// finish derives the unigram distribution and the fallback candidates from
// the layers.
func (m *Model) finish() {
	d := m.disc[0]
	counts := make([]float64, vocabSize)
	var total float64
	for _, l := range m.layers {
		lv := &l.t.levels[0]
		for i, tok := range lv.tok {
			c := l.w * float64(lv.cnt[i])
			counts[tok] += c
			total += c
		}
	}
	var floor float64
	for _, c := range counts {
		floor += min(c, d)
	}
	floor /= total * vocabSize
	m.uni = make([]float32, vocabSize)
	for tok, c := range counts {
		m.uni[tok] = float32(max(c-d, 0)/total + floor)
	}
	const fallback = 256
	ids := make([]uint32, 0, vocabSize)
	for tok, c := range counts {
		if c > 0 {
			ids = append(ids, uint32(tok))
		}
	}
	slices.SortFunc(ids, func(a, b uint32) int {
		if m.uni[a] != m.uni[b] {
			if m.uni[a] > m.uni[b] {
				return -1
			}
			return 1
		}
		return int(a) - int(b)
	})
	m.top = slices.Clip(ids[:min(fallback, len(ids))])
	slices.Sort(m.top)
	m.maxCands = len(m.top)
	if m.order > 1 {
		sum := 0
		for _, l := range m.layers {
			lv := &l.t.levels[1]
			most := 0
			for i := range lv.ctx {
				most = max(most, int(lv.off[i+1]-lv.off[i]))
			}
			sum += most
		}
		m.maxCands = max(m.maxCands, sum)
	}
}
