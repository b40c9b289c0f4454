package linear

import "math/bits"

// The runtime reads a word it knows in one step. For every word form of
// the word-class table, and for the commonest English words (which have
// no classes), the model precomputes at load what the word adds to the
// sums by itself — its word feature, its class features, its character
// n-grams — and keeps it, with the word's first class for the class
// pairs, in an open-addressing table keyed by the word's hash. Scoring
// then costs, per known word, one probe and one add of NumHeads numbers
// instead of a map lookup and a score per feature (about twenty for a
// six-letter word); only the word pair and the class pair, which depend
// on the neighbour, are scored per feature. The sums are exactly those
// of Features.Append: the weights are integers.

// noClass marks a known word without classes.
const noClass = ^uint32(0)

// wordSlot is one slot of the table, holding a word's sums itself so
// that a known word costs one cache miss, not two.
type wordSlot struct {
	key   uint64 // the word's hash; wordTable.empty in an empty slot
	first uint32 // the word's first class, or noClass
	// sums holds the sum of the word's own features' quantised weights
	// per head (at most 61 features of ±128, so no overflow)
	sums [NumHeads]int16
}

// wordTable is immutable after newWordTable.
type wordTable struct {
	shift uint // 64 - log2(len(slots))
	slots []wordSlot
	// empty is the key of empty slots: a key no word of the table has,
	// so a probe stops at the first slot holding it
	empty uint64
}

// commonWords are frequent words the word-class table leaves out
// (function words, short words); precomputing them only saves time.
var commonWords = [...]string{
	"a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at",
	"be", "because", "been", "before", "but", "by", "could", "did", "do", "does", "for",
	"from", "had", "has", "have", "he", "her", "him", "his", "how", "i", "if", "in",
	"into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "she",
	"so", "some", "than", "that", "the", "their", "them", "then", "there", "these",
	"they", "this", "those", "to", "up", "us", "was", "we", "were", "what", "when",
	"where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
	"can", "may", "should", "shall", "might", "must", "yours", "myself", "yourself",
	"himself", "herself", "themselves", "ourselves", "itself", "out", "over", "just",
}

// slot finds key's slot: the one holding it, or the empty one where it
// would go.
func (t *wordTable) slot(key uint64) *wordSlot {
	mask := uint64(len(t.slots) - 1)
	for i := (key * multiplier) >> t.shift; ; i = (i + 1) & mask {
		if s := &t.slots[i]; s.key == t.empty || s.key == key {
			return s
		}
	}
}

// newWordTable precomputes the words of wc (which may be nil) and
// commonWords for features f.
func newWordTable(f *Features, rows []uint64) *wordTable {
	n := len(commonWords)
	if f.Classes != nil {
		n += len(f.Classes.ends)
	}
	// at most half full, so a probe for an unknown word ends soon
	logSlots := bits.Len(uint(2*n - 1))
	t := &wordTable{shift: uint(64 - logSlots), slots: make([]wordSlot, 1<<logSlots)}
	type word struct {
		w   []byte
		key uint64
		cls []uint32
	}
	var words []word
	keys := make(map[uint64]bool, n)
	collect := func(w []byte, key uint64, cls []uint32) {
		if !keys[key] {
			keys[key] = true
			words = append(words, word{w, key, cls})
		}
	}
	if f.Classes != nil {
		f.Classes.each(collect)
	}
	for _, w := range commonWords {
		collect([]byte(w), wordKey([]byte(w)), nil)
	}
	for keys[t.empty] {
		t.empty++
	}
	for i := range t.slots {
		t.slots[i].key = t.empty
	}
	var feats []uint32
	for _, w := range words {
		s := t.slot(w.key)
		feats = feats[:0]
		feats = append(feats, feature(w.key^seedWord, f.Bits))
		if f.Set&FeatClasses != 0 {
			for _, c := range w.cls {
				feats = append(feats, feature(uint64(c)^seedClass, f.Bits))
			}
		}
		feats = appendGrams(feats, w.w, f.Bits)
		var sum [NumHeads]int32
		for _, x := range feats {
			b := int(x&^signBit) * 2
			sign := int32(1) - 2*int32(x>>31)
			for h := range NumHeads {
				word := rows[b+h/8]
				sum[h] += sign * (int32(word>>(8*(h%8))&0xff) - 128)
			}
		}
		for h, v := range sum {
			s.sums[h] = int16(v)
		}
		s.key, s.first = w.key, noClass
		if len(w.cls) > 0 && f.Set.needsClasses() {
			s.first = w.cls[0]
		}
	}
	return t
}

// Word is one word of a normalised text with its entry in the model's
// table of known words, looked up by Model.Word. A caller that meets the
// same words again and again (the classifier, for the words of its
// lexicon) looks them up once and keeps them.
type Word struct {
	text []byte
	key  uint64
	slot *wordSlot // nil when the table does not know the word
}

// Word looks w, one word of a normalised text, up in m's table of known
// words. The Word refers to w, which must not change while it is used.
func (m *Model) Word(w []byte) Word {
	h := wordKey(w)
	out := Word{text: w, key: h}
	if sl := m.words.slot(h); sl.key != m.words.empty {
		out.slot = sl
	}
	return out
}

// wordPairs is the state AddText and AddWords carry from one word to the
// next: the word pair and class pair features need the previous word.
type wordPairs struct {
	prev, prevClass        uint64
	havePrev, prevHasClass bool
}

// add adds w's features to s (its precomputed sums when the table knows
// it) and appends those that are not precomputed to dst.
func (m *Model) add(dst []uint32, st *wordPairs, w Word, s *Sums) []uint32 {
	bits := m.feats.Bits
	h := w.key
	if st.havePrev {
		dst = append(dst, feature((st.prev*seedBigram)^h, bits))
	}
	cur, hasClass := h, false
	if sl := w.slot; sl != nil {
		for k := range s {
			s[k] += int32(sl.sums[k])
		}
		if sl.first != noClass {
			cur, hasClass = uint64(sl.first)|1<<63, true
		}
	} else {
		// not in the word-class table, so without classes
		dst = append(dst, feature(h^seedWord, bits))
		dst = appendGrams(dst, w.text, bits)
	}
	if m.pairs && st.havePrev && (hasClass || st.prevHasClass) {
		dst = append(dst, feature((st.prevClass*seedCPair)^cur, bits))
	}
	st.prev, st.prevClass, st.havePrev, st.prevHasClass = h, cur, true, hasClass
	return dst
}

// AddText adds to s the sums of the features of norm, a normalised text,
// as m.AppendFeatures and m.Accumulate would, using dst as scratch space
// (returned for reuse).
func (m *Model) AddText(dst []uint32, norm []byte, s *Sums) []uint32 {
	dst = dst[:0]
	var st wordPairs
	for i := 0; i < len(norm); {
		j := i
		for j < len(norm) && norm[j] != ' ' {
			j++
		}
		if j > i {
			dst = m.add(dst, &st, m.Word(norm[i:j]), s)
		}
		i = j + 1
	}
	m.Accumulate(dst, s)
	return dst
}

// AddWords is AddText for a text given as its words, looked up by
// m.Word: AddWords(dst, ws, s) adds what AddText(dst, words joined by
// spaces, s) adds.
func (m *Model) AddWords(dst []uint32, ws []Word, s *Sums) []uint32 {
	dst = dst[:0]
	var st wordPairs
	for _, w := range ws {
		dst = m.add(dst, &st, w, s)
	}
	m.Accumulate(dst, s)
	return dst
}
