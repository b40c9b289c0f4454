package classifier

import "math/bits"

// wordIndex maps words to positive numbers: the lexicon's vocabulary to
// IDs, contractions to their expansions. The tokenizer looks up every
// word of the text, so the index is a read-only open-addressing table
// probed with the word's bytes, without converting them to a string or
// hashing them twice the way a Go map lookup per table would: it is
// several times faster than map[string]int32 on the benchmark's text.
type wordIndex struct {
	shift uint // 64 - log2(len(slots))
	slots []indexSlot
}

type indexSlot struct {
	word string
	fp   uint32 // low bits of the word's hash, to skip most comparisons
	val  int32  // 0: empty slot
}

// newWordIndex builds the index of words, whose values must be positive.
func newWordIndex(words map[string]int32) wordIndex {
	if len(words) == 0 {
		return wordIndex{}
	}
	// at most half full, so a probe for an unknown word ends soon
	logSlots := bits.Len(uint(2*len(words) - 1))
	x := wordIndex{shift: uint(64 - logSlots), slots: make([]indexSlot, 1<<logSlots)}
	mask := uint64(len(x.slots) - 1)
	for w, v := range words {
		if v <= 0 {
			panic("wordIndex: values must be positive")
		}
		h := hashWord([]byte(w))
		i := x.home(h)
		for x.slots[i].val != 0 {
			i = (i + 1) & mask
		}
		x.slots[i] = indexSlot{word: w, fp: uint32(h), val: v}
	}
	return x
}

// hashWord is FNV-1a over w.
func hashWord(w []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range w {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

func (x *wordIndex) home(h uint64) uint64 { return (h * 0x9e3779b97f4a7c15) >> x.shift }

// get returns w's value, or 0 when w is not in the index.
func (x *wordIndex) get(w []byte) int32 {
	if len(x.slots) == 0 {
		return 0
	}
	h := hashWord(w)
	mask := uint64(len(x.slots) - 1)
	for i := x.home(h); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.val == 0 {
			return 0
		}
		if s.fp == uint32(h) && s.word == string(w) {
			return s.val
		}
	}
}
