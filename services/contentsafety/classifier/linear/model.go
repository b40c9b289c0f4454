// Package linear is the trained stage of Terroir's content-safety
// classifier: logistic-regression heads over hashed word, word-pair and
// character n-gram features of normalised text and, when the weights say
// so, the WordNet classes of each word and of adjacent pairs
// (WordClasses, wordclasses.txt.gz, embedded). For each harm category it
// has three ordinal heads (severity at least low, at least medium, at
// least high), and one head detects jailbreak attempts.
//
// The weights are trained by scripts/safetytrain and shipped in this
// package (weights.bin.gz, embedded), quantised to one signed byte per
// weight with a scale per head. A Model is immutable and safe for
// concurrent use; scoring allocates nothing.
package linear

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

//go:embed weights.bin.gz
var shipped []byte

// Categories are the harm categories in head order; they follow
// control.Categories.
var Categories = [NumCategories]string{"hate", "sexual", "violence", "self_harm"}

// Head layout: category c, severity level l (1 low, 2 medium, 3 high) is
// head c*3+l-1; then the jailbreak head, and the harmful head (any
// category at medium or above).
const (
	NumCategories = 4
	NumLevels     = 3
	HeadJailbreak = NumCategories * NumLevels
	HeadHarmful   = HeadJailbreak + 1
	NumHeads      = HeadHarmful + 1
)

// Head returns the index of the head for category c at level l (1–3).
func Head(c, l int) int { return c*NumLevels + l - 1 }

// Bits bounds the size of the hashed feature table.
const (
	MinBits = 10
	MaxBits = 24
)

var magic = [4]byte{'T', 'L', 'I', 'N'}

const version = 3

// Weights is the content of a weights file.
type Weights struct {
	// Bits is log2 of the number of feature buckets.
	Bits uint
	// Bias, Scale and Threshold are per head: a head's logit is
	// Bias + Scale·Σ W, and the head fires when its logit is at least
	// Threshold.
	Bias, Scale, Threshold [NumHeads]float32
	// JailbreakVeto is how far below its threshold the jailbreak head's
	// logit must be for the classifier to clear a jailbreak that only
	// the rules found (a prompt that talks about jailbreaks, sudo or
	// content filters without attempting one); 0 clears none.
	JailbreakVeto float32
	// Features names the optional features the weights were trained
	// with (none in files written before word classes existed).
	Features FeatureSet
	// W holds NumHeads weights per bucket, bucket after bucket.
	W []int8
}

// Marshal encodes w as a gzip-compressed weights file.
func (w *Weights) Marshal() ([]byte, error) {
	if w.Bits < MinBits || w.Bits > MaxBits || len(w.W) != NumHeads<<w.Bits {
		return nil, fmt.Errorf("weights: %d bits with %d weights", w.Bits, len(w.W))
	}
	if w.Features&^knownFeatures != 0 {
		return nil, fmt.Errorf("weights: unknown features %#x", w.Features)
	}
	var raw bytes.Buffer
	raw.Write(magic[:])
	raw.Write([]byte{version, byte(w.Bits), NumHeads, byte(w.Features)})
	for _, v := range [][NumHeads]float32{w.Bias, w.Scale, w.Threshold} {
		if err := binary.Write(&raw, binary.LittleEndian, v); err != nil {
			return nil, err
		}
	}
	if err := binary.Write(&raw, binary.LittleEndian, w.JailbreakVeto); err != nil {
		return nil, err
	}
	for _, v := range w.W {
		raw.WriteByte(byte(v))
	}
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	// a fixed header keeps the file byte-identical across runs
	zw.Header = gzip.Header{OS: 255}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Unmarshal decodes a weights file written by Marshal.
func Unmarshal(data []byte) (*Weights, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading weights: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("reading weights: %w", err)
	}
	if len(raw) < 8 || !bytes.Equal(raw[:4], magic[:]) {
		return nil, errors.New("reading weights: not a weights file")
	}
	if raw[4] != version || raw[6] != NumHeads {
		return nil, fmt.Errorf("reading weights: version %d with %d heads, want version %d with %d", raw[4], raw[6], version, NumHeads)
	}
	w := &Weights{Bits: uint(raw[5]), Features: FeatureSet(raw[7])}
	if w.Bits < MinBits || w.Bits > MaxBits {
		return nil, fmt.Errorf("reading weights: %d bits", w.Bits)
	}
	if w.Features&^knownFeatures != 0 {
		return nil, fmt.Errorf("reading weights: unknown features %#x", w.Features)
	}
	r := bytes.NewReader(raw[8:])
	for _, v := range []*[NumHeads]float32{&w.Bias, &w.Scale, &w.Threshold} {
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			return nil, fmt.Errorf("reading weights: %w", err)
		}
	}
	if err := binary.Read(r, binary.LittleEndian, &w.JailbreakVeto); err != nil {
		return nil, fmt.Errorf("reading weights: %w", err)
	}
	if v := float64(w.JailbreakVeto); math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return nil, fmt.Errorf("reading weights: jailbreak veto %g", v)
	}
	rest := raw[len(raw)-r.Len():]
	if len(rest) != NumHeads<<w.Bits {
		return nil, fmt.Errorf("reading weights: %d weights, want %d", len(rest), NumHeads<<w.Bits)
	}
	w.W = make([]int8, len(rest))
	for i, b := range rest {
		w.W[i] = int8(b)
	}
	for h := range NumHeads {
		for _, v := range []float32{w.Bias[h], w.Scale[h], w.Threshold[h]} {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("reading weights: head %d is not finite", h)
			}
		}
	}
	return w, nil
}

// Model scores normalised text.
type Model struct {
	w     *Weights
	feats Features
	// rows holds the weights of each bucket as 16 bytes (two words),
	// each weight plus 128 so that it is unsigned, the last three
	// bytes unused: Logits adds eight heads at a time in 16-bit lanes.
	rows []uint64
	// words holds the precomputed sums of known words (vocab.go)
	words *wordTable
	// pairs: the features include class pairs
	pairs bool
}

// New builds a Model from weights, with the embedded word-class table
// when the weights use word classes.
func New(w *Weights) (*Model, error) {
	var wc *WordClasses
	if w != nil && w.Features.needsClasses() {
		var err error
		if wc, err = ShippedWordClasses(); err != nil {
			return nil, err
		}
	}
	return NewWithClasses(w, wc)
}

// NewWithClasses builds a Model from weights and the word-class table
// they were trained with (nil when they use none).
func NewWithClasses(w *Weights, wc *WordClasses) (*Model, error) {
	if w == nil || len(w.W) != NumHeads<<w.Bits {
		return nil, errors.New("linear model: incomplete weights")
	}
	if w.Features.needsClasses() && wc == nil {
		return nil, errors.New("linear model: the weights use word classes and there is no table")
	}
	m := &Model{w: w, rows: make([]uint64, 2<<w.Bits), feats: Features{Bits: w.Bits, Set: w.Features, Classes: wc}}
	for b := range 1 << w.Bits {
		var row [16]byte
		for h := range NumHeads {
			row[h] = byte(int(w.W[b*NumHeads+h]) + 128)
		}
		m.rows[2*b] = binary.LittleEndian.Uint64(row[:8])
		m.rows[2*b+1] = binary.LittleEndian.Uint64(row[8:])
	}
	m.words = newWordTable(&m.feats, m.rows)
	m.pairs = m.feats.Set&FeatClassPairs != 0 && m.feats.Classes != nil
	return m, nil
}

// Shipped decodes the weights embedded in this package.
func Shipped() (*Model, error) {
	w, err := Unmarshal(shipped)
	if err != nil {
		return nil, err
	}
	return New(w)
}

// Bits is log2 of the model's number of feature buckets.
func (m *Model) Bits() uint { return m.w.Bits }

// AppendFeatures appends the hashed features of norm, a normalised text,
// as this model reads them (Features.Append).
func (m *Model) AppendFeatures(dst []uint32, norm []byte) []uint32 {
	return m.feats.Append(dst, norm)
}

// lanes selects the even bytes of a word, each into a 16-bit lane.
const lanes = 0x00ff00ff00ff00ff

// flushEvery is how many features fit in a 16-bit lane: each adds at
// most 255.
const flushEvery = 256

// Sums holds per-head sums of quantised weights over a text's features,
// before bias and scale. The sums of two texts add up to those of the two
// together (but for the word pair that would join them), so a caller can
// score every run of adjacent sentences while hashing each word once.
type Sums [NumHeads]int32

// Add adds o to s.
func (s *Sums) Add(o *Sums) {
	for h := range s {
		s[h] += o[h]
	}
}

// Accumulate adds the weights of feats (from m.AppendFeatures) to s.
func (m *Model) Accumulate(feats []uint32, s *Sums) {
	// acc[sign] holds, for features counted positively (0) and
	// negatively (1), heads 0-7 in words 0 (even heads) and 1 (odd)
	// and heads 8-15 in words 2 and 3, four 16-bit lanes each
	var acc [2][4]uint64
	var count [2]int32
	rows := m.rows
	flush := func() {
		for sign, mul := range [2]int32{1, -1} {
			for k, word := range acc[sign] {
				for lane := range 4 {
					if h := (k/2)*8 + lane*2 + k%2; h < NumHeads {
						s[h] += mul * int32(word>>(16*lane)&0xffff)
					}
				}
			}
		}
		acc = [2][4]uint64{}
	}
	n := 0
	for _, f := range feats {
		b := int(f&^signBit) * 2
		lo, hi := rows[b], rows[b+1]
		a := &acc[f>>31]
		a[0] += lo & lanes
		a[1] += lo >> 8 & lanes
		a[2] += hi & lanes
		a[3] += hi >> 8 & lanes
		count[f>>31]++
		if n++; n == flushEvery {
			flush()
			n = 0
		}
	}
	flush()
	// every stored weight is offset by 128
	for h := range s {
		s[h] -= 128 * (count[0] - count[1])
	}
}

// LogitsOf sets out to each head's logit for the sums s.
func (m *Model) LogitsOf(s *Sums, out *[NumHeads]float32) {
	for h := range out {
		out[h] = m.w.Bias[h] + m.w.Scale[h]*float32(s[h])
	}
}

// Logits sets out to each head's logit for the features feats (from
// m.AppendFeatures).
func (m *Model) Logits(feats []uint32, out *[NumHeads]float32) {
	var s Sums
	m.Accumulate(feats, &s)
	m.LogitsOf(&s, out)
}

// Levels turns logits into a severity level per category (0 safe, 1 low,
// 2 medium, 3 high) and the jailbreak decision. The medium head of a
// category decides whether it is rated medium or above (the level a
// default policy blocks); the high head only raises a medium rating to
// high, and the low head rates low what the medium head does not. The
// harmful head, trained on every category at once, decides when no
// medium head does: it rates medium the category whose medium head has
// the highest logit. (Not the one closest to its threshold: each head's
// threshold reflects how the trainer spent the false-positive budget,
// not how likely the category is.)
func (m *Model) Levels(logits *[NumHeads]float32) (levels [NumCategories]int8, jailbreak bool) {
	t := &m.w.Threshold
	found := false
	closest, gap := 0, float32(math.Inf(-1))
	for c := range NumCategories {
		lo, me, hi := Head(c, 1), Head(c, 2), Head(c, 3)
		switch {
		case logits[me] >= t[me] && logits[hi] >= t[hi]:
			levels[c] = 3
		case logits[me] >= t[me]:
			levels[c] = 2
		case logits[lo] >= t[lo]:
			levels[c] = 1
		}
		found = found || levels[c] >= 2
		if d := logits[me]; d > gap {
			closest, gap = c, d
		}
	}
	if !found && logits[HeadHarmful] >= t[HeadHarmful] {
		levels[closest] = 2
	}
	return levels, logits[HeadJailbreak] >= t[HeadJailbreak]
}

// VetoesJailbreak reports whether logits are far enough below the
// jailbreak head's threshold (Weights.JailbreakVeto) to clear a
// jailbreak found by the rules alone.
func (m *Model) VetoesJailbreak(logits *[NumHeads]float32) bool {
	v := m.w.JailbreakVeto
	return v > 0 && logits[HeadJailbreak] < m.w.Threshold[HeadJailbreak]-v
}

// Sigmoid maps a logit to a probability.
func Sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
