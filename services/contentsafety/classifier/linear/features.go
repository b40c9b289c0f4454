package linear

import "encoding/binary"

// Feature hashing. A feature is a bucket index in the low bits and a sign
// in the top bit: the sign, taken from another bit of the hash, makes
// collisions cancel on average instead of adding up. Buckets come from
// multiply-shift hashing of 64-bit keys, one multiplication per feature.

// signBit marks a feature that counts negatively.
const signBit = 1 << 31

// Seeds keep the kinds of feature apart, so the word "kill" and the
// character 4-gram "kill" land in different buckets.
const (
	seedWord   uint64 = 0x9e3779b97f4a7c15
	seedBigram uint64 = 0xc2b2ae3d27d4eb4f
	seedGram4  uint64 = 0x27d4eb2f165667c5
	seedGram5  uint64 = 0x94d049bb133111eb
	multiplier uint64 = 0xff51afd7ed558ccd
)

// Character n-grams are taken from words of at most maxCharWord bytes,
// with a boundary marker on each side; longer words (URLs, encoded
// blobs) contribute their word feature only.
const (
	maxCharWord = 24
	boundary    = '#'
)

func feature(key uint64, bits uint) uint32 {
	h := key * multiplier
	h ^= h >> 29
	h *= multiplier
	f := uint32(h >> (64 - bits))
	if h&(1<<20) != 0 {
		f |= signBit
	}
	return f
}

// wordKey hashes a word (FNV-1a, 64 bits).
func wordKey(w []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range w {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// AppendFeatures appends to dst the hashed features of norm, a normalised
// text (lower-case words separated by single spaces, as
// classifier.Classifier.Normalize returns it), for a table of 2^bits
// buckets: every word, every pair of adjacent words, and the character
// 4- and 5-grams of every word with a boundary marker on each side. The
// trainer and the runtime both call it, so the two cannot drift apart.
//
// Character 3-grams were left out: on the training set's dev hold-out
// they changed neither the log loss nor recall at a given false-positive
// rate, and they are a third of all features, so scoring without them
// takes half the time.
func AppendFeatures(dst []uint32, norm []byte, bits uint) []uint32 {
	var prev uint64
	havePrev := false
	// #word# and 8 bytes of zeros, so every n-gram is one 64-bit load
	var buf [maxCharWord + 2 + 8]byte
	for i := 0; i < len(norm); {
		j := i
		for j < len(norm) && norm[j] != ' ' {
			j++
		}
		if j > i {
			w := norm[i:j]
			h := wordKey(w)
			dst = append(dst, feature(h^seedWord, bits))
			if havePrev {
				dst = append(dst, feature((prev*seedBigram)^h, bits))
			}
			prev, havePrev = h, true
			if len(w) <= maxCharWord {
				buf[0] = boundary
				n := copy(buf[1:], w) + 2
				buf[n-1] = boundary
				clear(buf[n : n+8])
				for s := 0; s+4 <= n; s++ {
					k := binary.LittleEndian.Uint64(buf[s:])
					dst = append(dst, feature(k&0xffffffff^seedGram4, bits))
					if s+5 <= n {
						dst = append(dst, feature(k&0xffffffffff^seedGram5, bits))
					}
				}
			}
		}
		i = j + 1
	}
	return dst
}
