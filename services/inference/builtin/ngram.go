package builtin

import (
	"cmp"
	"slices"
)

// A table holds the n-gram counts of one body of text, compactly: for each
// context length k (0 to order-1) a level of sorted context hashes, each
// owning a run of successor token ids (ascending) with their counts. The
// top level holds raw counts; lower levels hold Kneser-Ney continuation
// counts (the number of distinct tokens seen before the n-gram). There are
// no maps and no pointers per n-gram, so a table costs about 12 bytes per
// distinct n-gram plus 16 bytes per distinct context.
type table struct {
	order  int
	levels []level
	tokens int // training positions (tokens plus one end-of-text per text)
}

type level struct {
	ctx []uint64 // sorted context hashes
	off []uint32 // len(ctx)+1; successors of ctx[i] are tok[off[i]:off[i+1]]
	tok []uint32 // successor token ids, ascending within a context
	cnt []uint32 // count of each successor
	sum []uint32 // per context, the sum of its counts
}

// find returns the successor range of the context with hash h.
func (l *level) find(h uint64) (lo, hi int, ok bool) {
	i, found := slices.BinarySearch(l.ctx, h)
	if !found {
		return 0, 0, false
	}
	return int(l.off[i]), int(l.off[i+1]), true
}

// entries is the number of distinct n-grams the level holds.
func (l *level) entries() int { return len(l.tok) }

// bytes is the memory the level's arrays use.
func (l *level) bytes() int {
	return 8*len(l.ctx) + 4*len(l.off) + 4*len(l.tok) + 4*len(l.cnt) + 4*len(l.sum)
}

// Context hashing: the hash of a context of k tokens is built from the
// nearest token outwards, so the hashes of every suffix of a context come
// out of one pass. 64-bit hashes make collisions between the few million
// contexts of a model vanishingly unlikely (about 1e-7 for the whole model).
const hashSeed uint64 = 0x243f6a8885a308d3

func extend(h uint64, tok uint32) uint64 {
	return mix64(h*0x9e3779b97f4a7c15 ^ (uint64(tok) + 1))
}

// mix64 is the splitmix64 finaliser, a bijection with good avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// contextHashes fills hs[k] with the hash of the last k tokens of history
// (hs[0] is the empty context). history must hold at least len(hs)-1
// tokens.
func contextHashes(history []uint32, hs []uint64) {
	hs[0] = hashSeed
	n := len(history)
	for k := 1; k < len(hs); k++ {
		hs[k] = extend(hs[k-1], history[n-k])
	}
}

// record is one training n-gram occurrence: its context hash, the token
// that followed, and where (so shorter contexts can be hashed later).
type record struct {
	h   uint64
	tok uint32
	pos uint32
}

func cmpRecord(a, b record) int {
	if c := cmp.Compare(a.h, b.h); c != 0 {
		return c
	}
	return cmp.Compare(a.tok, b.tok)
}

// padded lays texts out as one stream in which every text is preceded by
// order-1 end-of-text tokens (the start context) and followed by one (so
// the model learns where texts end), and returns the stream and the
// positions whose tokens are predicted.
func padded(texts [][]uint32, order int) (stream, predicted []uint32) {
	n := 0
	for _, t := range texts {
		n += len(t) + order
	}
	stream = make([]uint32, 0, n)
	predicted = make([]uint32, 0, n)
	for _, t := range texts {
		for range order - 1 {
			stream = append(stream, eos)
		}
		for _, tok := range t {
			predicted = append(predicted, uint32(len(stream)))
			stream = append(stream, tok)
		}
		predicted = append(predicted, uint32(len(stream)))
		stream = append(stream, eos)
	}
	return stream, predicted
}

// buildTable counts the n-grams of texts (token ids) up to order.
//
// The top level counts every occurrence. Each lower level k counts, for
// every distinct n-gram of level k+1, its suffix once: that is the
// Kneser-Ney continuation count, obtained by sorting and grouping with no
// hash maps. Positions carry over so each shorter context hash is computed
// from the stream on demand.
func buildTable(texts [][]uint32, order int) *table {
	stream, predicted := padded(texts, order)
	t := &table{order: order, levels: make([]level, order), tokens: len(predicted)}
	hashAt := func(pos uint32, k int) uint64 {
		h := hashSeed
		for i := 1; i <= k; i++ {
			h = extend(h, stream[int(pos)-i])
		}
		return h
	}
	recs := make([]record, len(predicted))
	for i, pos := range predicted {
		recs[i] = record{h: hashAt(pos, order-1), tok: stream[pos], pos: pos}
	}
	for k := order - 1; k >= 0; k-- {
		slices.SortFunc(recs, cmpRecord)
		lv := &t.levels[k]
		next := recs[:0]
		for i := 0; i < len(recs); {
			j := i + 1
			for j < len(recs) && recs[j].h == recs[i].h && recs[j].tok == recs[i].tok {
				j++
			}
			if len(lv.ctx) == 0 || lv.ctx[len(lv.ctx)-1] != recs[i].h {
				lv.ctx = append(lv.ctx, recs[i].h)
				lv.off = append(lv.off, uint32(len(lv.tok)))
				lv.sum = append(lv.sum, 0)
			}
			lv.tok = append(lv.tok, recs[i].tok)
			lv.cnt = append(lv.cnt, uint32(j-i))
			lv.sum[len(lv.sum)-1] += uint32(j - i)
			if k > 0 {
				// Writing at len(next) <= i never overwrites a record not
				// yet read.
				r := recs[i]
				next = append(next, record{h: hashAt(r.pos, k-1), tok: r.tok, pos: r.pos})
			}
			i = j
		}
		lv.off = append(lv.off, uint32(len(lv.tok)))
		lv.ctx = slices.Clip(lv.ctx)
		lv.off = slices.Clip(lv.off)
		lv.tok = slices.Clip(lv.tok)
		lv.cnt = slices.Clip(lv.cnt)
		lv.sum = slices.Clip(lv.sum)
		recs = next
	}
	return t
}

// maxDiscount caps the discounts. Ney's estimate for the longer contexts
// of a corpus this size is about 0.95 (most long n-grams are seen once),
// which gives a seen context's own continuations almost no weight: text
// generated that way reads like a trigram model's. Capping at 0.8 costs
// about 4% held-out perplexity (228 to 237 on a 5% held-out split of the
// corpus at order 5) and makes generated text markedly more fluent.
const maxDiscount = 0.8

// discount returns the absolute discount of a level: Ney's estimate
// n1/(n1+2*n2) from the number of n-grams seen once and twice, kept within
// [0.1, maxDiscount].
func (l *level) discount() float64 {
	var n1, n2 float64
	for _, c := range l.cnt {
		switch c {
		case 1:
			n1++
		case 2:
			n2++
		}
	}
	if n1+n2 == 0 {
		return 0.75
	}
	return min(max(n1/(n1+2*n2), 0.1), maxDiscount)
}
