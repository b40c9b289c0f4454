package classifier

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"

	"github.com/terroir-ai/terroir/pkg/control"
)

// Blocklists is a compiled set of custom blocklists. Literal items are
// normalised like the text (case, compatibility forms, confusables,
// leetspeak, spaced-out spelling) and matched as whole words on the
// normalised text by one Aho–Corasick automaton over all lists; regular
// expression items (RE2 syntax) are matched on both the raw text and the
// normalised text. Blocklists is immutable and safe for concurrent use.
type Blocklists struct {
	names  []string
	byName map[string]int
	ac     *automaton
	pats   []literal // automaton pattern index -> item
	res    [][]regexItem
}

type literal struct {
	list int
	id   string
	n    int // length of the normalised pattern in bytes
}

type regexItem struct {
	id string
	re *regexp.Regexp
}

// CompileBlocklists compiles lists, with the literal items normalised
// as c normalises text. It fails on an invalid regular
// expression or a literal item that normalises to nothing, naming the list
// and item ID; a later list with the same name as an earlier one replaces
// it.
func (c *Classifier) CompileBlocklists(lists []control.Blocklist) (*Blocklists, error) {
	b := &Blocklists{byName: map[string]int{}}
	// literal items resolve against the lexicon's vocabulary as the text
	// they are matched with does: an item "f*ck", "kiiill" or "ki1l" must
	// normalise to the word the same spelling in a text does, or it never
	// matches it
	z := &tokenizer{voc: &c.lx.voc}
	var trie acBuilder
	trie.init()
	for _, l := range lists {
		idx, ok := b.byName[l.Name]
		if !ok {
			idx = len(b.names)
			b.byName[l.Name] = idx
			b.names = append(b.names, l.Name)
			b.res = append(b.res, nil)
		} else {
			b.res[idx] = nil
			for i := range b.pats {
				if b.pats[i].list == idx {
					b.pats[i].list = -1
				}
			}
		}
		for _, it := range l.Items {
			if it.IsRegex {
				re, err := regexp.Compile(it.Pattern)
				if err != nil {
					return nil, fmt.Errorf("blocklist %s item %s: invalid regular expression: %w", l.Name, it.ID, err)
				}
				b.res[idx] = append(b.res[idx], regexItem{id: it.ID, re: re})
				continue
			}
			z.run(it.Pattern)
			if len(z.norm) == 0 {
				return nil, fmt.Errorf("blocklist %s item %s: pattern has no letters or digits", l.Name, it.ID)
			}
			trie.add(z.norm, int32(len(b.pats)))
			b.pats = append(b.pats, literal{list: idx, id: it.ID, n: len(z.norm)})
		}
	}
	b.ac = trie.build()
	return b, nil
}

// Names returns the names of the compiled lists.
func (b *Blocklists) Names() []string { return slices.Clone(b.names) }

// match returns the hits of the named lists in text, whose normalised form
// is norm.
func (b *Blocklists) match(text string, norm []byte, names []string) []BlocklistHit {
	var want []bool
	for _, n := range names {
		if i, ok := b.byName[n]; ok {
			if want == nil {
				want = make([]bool, len(b.names))
			}
			want[i] = true
		}
	}
	if want == nil {
		return nil
	}
	var hits []BlocklistHit
	b.ac.scan(norm, func(p int32, end int) {
		lit := b.pats[p]
		if lit.list < 0 || !want[lit.list] {
			return
		}
		start := end - lit.n
		if (start == 0 || norm[start-1] == ' ') && (end == len(norm) || norm[end] == ' ') {
			hits = append(hits, BlocklistHit{List: b.names[lit.list], ItemID: lit.id})
		}
	})
	for li, items := range b.res {
		if !want[li] {
			continue
		}
		for _, it := range items {
			if it.re.MatchString(text) || it.re.Match(norm) {
				hits = append(hits, BlocklistHit{List: b.names[li], ItemID: it.id})
			}
		}
	}
	slices.SortFunc(hits, compareHits)
	return slices.Compact(hits)
}

func compareHits(x, y BlocklistHit) int {
	return cmp.Or(cmp.Compare(x.List, y.List), cmp.Compare(x.ItemID, y.ItemID))
}

// automaton is an Aho–Corasick automaton compiled to a full transition
// table over an alphabet of the bytes that occur in its patterns; every
// other byte leads back to the root.
type automaton struct {
	class  [256]uint16
	stride int
	delta  []int32   // state*stride + class -> state
	outs   [][]int32 // state -> patterns ending here, via suffix links too
}

// scan calls found for every occurrence of a pattern in s, with the index
// just past its end.
func (a *automaton) scan(s []byte, found func(p int32, end int)) {
	state := int32(0)
	for i, c := range s {
		state = a.delta[int(state)*a.stride+int(a.class[c])]
		for _, p := range a.outs[state] {
			found(p, i+1)
		}
	}
}

// acBuilder builds the trie, then the automaton.
type acBuilder struct {
	next []map[byte]int32
	outs [][]int32
}

func (t *acBuilder) init() {
	t.next = []map[byte]int32{{}}
	t.outs = [][]int32{nil}
}

func (t *acBuilder) add(p []byte, idx int32) {
	s := int32(0)
	for _, c := range p {
		n, ok := t.next[s][c]
		if !ok {
			n = int32(len(t.next))
			t.next[s][c] = n
			t.next = append(t.next, map[byte]int32{})
			t.outs = append(t.outs, nil)
		}
		s = n
	}
	t.outs[s] = append(t.outs[s], idx)
}

func (t *acBuilder) build() *automaton {
	a := &automaton{}
	var bytesUsed []byte
	for _, m := range t.next {
		for c := range m {
			if a.class[c] == 0 {
				bytesUsed = append(bytesUsed, c)
				a.class[c] = 1 // numbered below
			}
		}
	}
	slices.Sort(bytesUsed)
	for i, c := range bytesUsed {
		a.class[c] = uint16(i + 1)
	}
	a.stride = len(bytesUsed) + 1
	n := len(t.next)
	a.delta = make([]int32, n*a.stride)
	a.outs = make([][]int32, n)
	fail := make([]int32, n)
	queue := make([]int32, 0, n)
	for _, c := range bytesUsed {
		if s, ok := t.next[0][c]; ok {
			a.delta[int(a.class[c])] = s
			queue = append(queue, s)
		}
	}
	a.outs[0] = t.outs[0]
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		a.outs[s] = append(slices.Clone(t.outs[s]), a.outs[fail[s]]...)
		for _, c := range bytesUsed {
			cl := int(a.class[c])
			if child, ok := t.next[s][c]; ok {
				fail[child] = a.delta[int(fail[s])*a.stride+cl]
				a.delta[int(s)*a.stride+cl] = child
				queue = append(queue, child)
			} else {
				a.delta[int(s)*a.stride+cl] = a.delta[int(fail[s])*a.stride+cl]
			}
		}
	}
	return a
}
