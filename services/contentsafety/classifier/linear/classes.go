package linear

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"strconv"
)

// wordclasses.txt.gz is derived from WordNet 3.0 by scripts/wordclasses:
// a line per word form (lower-case letters), then the dense IDs of its
// classes (synsets of its most frequent senses and their hypernyms), the
// most general class of its first sense first. WordNet 3.0 is © 2006
// Princeton University; its licence is in WORDNET-LICENSE.
//
//go:embed wordclasses.txt.gz
var shippedClasses []byte

// maxClassesPerWord bounds the classes a word form may have in a table.
const maxClassesPerWord = 15

// WordClasses maps word forms to classes of words of related meaning, so
// that the model can give "slay", "butcher" and "murder" some of the
// weight of "kill". It is immutable and safe for concurrent use.
type WordClasses struct {
	// index maps a word's key (wordKey) to where its classes start in
	// ids (high bits) and how many there are (low 4 bits).
	index map[uint64]uint32
	ids   []uint32
	// words holds the word forms one after another, in table order;
	// ends[i] is where form i ends and keys[i] is its wordKey.
	words []byte
	ends  []uint32
	keys  []uint64
}

// ShippedWordClasses decodes the table embedded in this package.
func ShippedWordClasses() (*WordClasses, error) { return ParseWordClasses(shippedClasses) }

// ParseWordClasses decodes a gzip-compressed table in the format
// scripts/wordclasses writes: lines "word id id …", '#' lines ignored.
func ParseWordClasses(data []byte) (*WordClasses, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading word classes: %w", err)
	}
	wc := &WordClasses{index: map[uint64]uint32{}}
	sc := bufio.NewScanner(zr)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) < 2 || len(fields) > 1+maxClassesPerWord {
			return nil, fmt.Errorf("reading word classes: line %d has %d fields", n, len(fields))
		}
		start := len(wc.ids)
		for _, f := range fields[1:] {
			id, err := strconv.ParseUint(string(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("reading word classes: line %d: %w", n, err)
			}
			wc.ids = append(wc.ids, uint32(id))
		}
		k := wordKey(fields[0])
		if _, dup := wc.index[k]; dup {
			return nil, fmt.Errorf("reading word classes: line %d repeats a word", n)
		}
		wc.index[k] = uint32(start)<<4 | uint32(len(fields)-1)
		wc.words = append(wc.words, fields[0]...)
		wc.ends = append(wc.ends, uint32(len(wc.words)))
		wc.keys = append(wc.keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading word classes: %w", err)
	}
	if len(wc.index) == 0 {
		return nil, fmt.Errorf("reading word classes: empty table")
	}
	return wc, nil
}

// Len is the number of word forms in the table.
func (wc *WordClasses) Len() int { return len(wc.index) }

// Of returns the classes of a normalised word (nil when it has none).
// The slice must not be modified.
func (wc *WordClasses) Of(word []byte) []uint32 { return wc.of(wordKey(word)) }

// each calls fn with every word form of the table, its key and its
// classes, in table order.
func (wc *WordClasses) each(fn func(word []byte, key uint64, cls []uint32)) {
	start := uint32(0)
	for i, end := range wc.ends {
		fn(wc.words[start:end], wc.keys[i], wc.of(wc.keys[i]))
		start = end
	}
}

func (wc *WordClasses) of(key uint64) []uint32 {
	v, ok := wc.index[key]
	if !ok {
		return nil
	}
	start := v >> 4
	return wc.ids[start : start+v&15 : start+v&15]
}
