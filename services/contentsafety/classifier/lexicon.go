package classifier

import (
	"bufio"
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/events"
)

// The lexicon (lexicon.txt, embedded) is line-based:
//
//	# comment
//	class NAME = alternative | alternative | ...
//	rule ID SEVERITY[, ID SEVERITY ...] = PATTERN
//
// A class alternative is a phrase of one or more words, or @OTHER to
// include another class. A rule ID starts with its category (hate, sexual,
// violence, self_harm, jailbreak, profanity); the four harm categories
// take a severity (low, medium, high, or safe for a context rule that
// clears low and medium findings of its category in the same sentence, or
// safe_all for one that clears every finding), jailbreak
// and profanity take none. A PATTERN is a sequence of elements separated by
// spaces:
//
//	word        one word
//	a|b_c|d     alternatives; _ joins the words of a multi-word alternative
//	@NAME       any alternative of a class
//	*N          a gap of 0 to N words (a gap never skips a negation word)
//	X?          element X is optional
//	!X          the next word is not X (matches no word itself)
//	$           as an alternative: the end of the sentence
//
// Words may carry one brace group of suffixes, kill{,s,ed,ing}, and are
// normalised exactly like the text, so a rule may be written with
// contractions or capitals. A rule fires when its pattern matches inside
// one sentence and, except for profanity, neither of the two words before
// the match is a negation (the class NEG).

// category indices; the first four follow control.Categories.
const (
	catHate = iota
	catSexual
	catViolence
	catSelfHarm
	catJailbreak
	catProfanity
	numCats
)

var catNames = [numCats]string{"hate", "sexual", "violence", "self_harm", "jailbreak", "profanity"}

// severity ranks; sevSafe on a rule output marks a context rule.
const (
	sevNone int8 = iota
	sevLow
	sevMedium
	sevHigh
	sevSafe    = -1 // context rule: clears low and medium findings
	sevSafeAll = -2 // context rule: clears every finding
)

var sevNames = [...]events.Severity{events.SeveritySafe, events.SeverityLow, events.SeverityMedium, events.SeverityHigh}

// vocab is every word the lexicon mentions, numbered from 1.
type vocab struct {
	ids      map[string]int32
	words    []string         // words[id]
	squeezed map[string]int32 // squeezed spelling -> id, for "kiiill"
	// index and squeezedIndex are ids and squeezed for the tokenizer,
	// built once the vocabulary is complete
	index, squeezedIndex wordIndex
}

func (v *vocab) add(w string) int32 {
	if id, ok := v.ids[w]; ok {
		return id
	}
	id := int32(len(v.words))
	v.ids[w] = id
	v.words = append(v.words, w)
	return id
}

// bitset is a set of vocabulary IDs.
type bitset []uint64

func (b bitset) has(id int32) bool {
	i := int(id >> 6)
	return i < len(b) && b[i]&(1<<(uint(id)&63)) != 0
}

func (b bitset) set(id int32) { b[id>>6] |= 1 << (uint(id) & 63) }

// element is one position of a compiled pattern.
type element struct {
	isGap  bool
	gap    int       // maximum words skipped, for a gap
	opt    bool      // may match nothing
	not    bool      // negative lookahead: matches nothing, and only where no alternative follows
	end    bool      // "$": may match the end of the sentence
	single bitset    // one-word alternatives
	multi  [][]int32 // multi-word alternatives
	first  bitset    // first words of all alternatives, to fail fast
	key    bitset    // the least common word of each alternative
	keys   []int32   // key as a list, to check a sentence for them
}

// output is what a rule reports when it fires.
type output struct {
	id  string
	cat int
	sev int8
}

type rule struct {
	outs  []output
	elems []element
	// required lists the elements that must match a word, rarest first,
	// so a sentence lacking one of their words is skipped at once
	required []int
}

// parsed forms, before the vocabulary is complete
type phrase []string

type parsedElem struct {
	isGap bool
	gap   int
	opt   bool
	not   bool
	end   bool
	alts  []phrase
}

type parsedRule struct {
	line  int
	outs  []output
	elems []parsedElem
}

// commonWords are frequent words; a rule is indexed under its least common
// element so that it is only tried on sentences that can match it.
var commonWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`i me my mine myself you your yours he him his she her hers it its we us our they them their
		the a an to of and or in on at for with from by as if so up out about into over then than there here this that these those
		is am are was were be been being do does did done not no will would can could should shall may might must have has had
		how what why when where who which all some any every each one just really very too more most much many
		want wanna going go gonna get got make take give tell know think say said like need let now ever never
		people person man men woman women someone everyone anyone something thing things way good bad time day`) {
		m[w] = true
	}
	return m
}()

// keyWord is the word a phrase is indexed under: its first uncommon word,
// else its last.
func keyWord(p phrase) string {
	for _, w := range p {
		if !commonWords[w] {
			return w
		}
	}
	return p[len(p)-1]
}

// normWords normalises one lexicon word into the words the text would
// contain (a contraction becomes two).
func normWords(z *tokenizer, w string) []string {
	z.run(w)
	var out []string
	for _, t := range z.toks {
		out = append(out, string(z.norm[t.start:t.end]))
	}
	return out
}

// expandBraces expands one-or-more brace groups: "kill{,s}" -> kill, kills.
func expandBraces(w string) ([]string, error) {
	open := strings.IndexByte(w, '{')
	if open < 0 {
		if strings.ContainsAny(w, "}") {
			return nil, fmt.Errorf("unbalanced brace in %q", w)
		}
		return []string{w}, nil
	}
	closeIdx := strings.IndexByte(w[open:], '}')
	if closeIdx < 0 {
		return nil, fmt.Errorf("unbalanced brace in %q", w)
	}
	closeIdx += open
	rest, err := expandBraces(w[closeIdx+1:])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(w[open+1:closeIdx], ",") {
		for _, r := range rest {
			out = append(out, w[:open]+s+r)
		}
	}
	return out, nil
}

// phrases expands one alternative (words separated by sep) into the
// normalised phrases it stands for.
func phrases(z *tokenizer, alt string, sep string, classes map[string][]phrase) ([]phrase, error) {
	words := strings.FieldsFunc(alt, func(r rune) bool { return strings.ContainsRune(sep, r) })
	if len(words) == 0 {
		return nil, fmt.Errorf("empty alternative")
	}
	out := []phrase{nil}
	for _, w := range words {
		var forms []phrase
		if strings.HasPrefix(w, "@") {
			c, ok := classes[w[1:]]
			if !ok {
				return nil, fmt.Errorf("unknown class %s", w)
			}
			forms = c
		} else {
			expanded, err := expandBraces(w)
			if err != nil {
				return nil, err
			}
			for _, f := range expanded {
				forms = append(forms, normWords(z, f))
			}
		}
		var next []phrase
		for _, p := range out {
			for _, f := range forms {
				next = append(next, append(append(phrase{}, p...), f...))
			}
		}
		out = next
	}
	kept := out[:0]
	for _, p := range out {
		if len(p) > 0 {
			kept = append(kept, p)
		}
	}
	return kept, nil
}

// lexicon is the compiled lexicon.
type lexicon struct {
	voc     vocab
	rules   []rule
	anchors [][]int32 // vocabulary ID -> rules anchored on it
	neg     bitset
}

// parseLexicon compiles the lexicon source.
func parseLexicon(src string) (*lexicon, error) {
	z := &tokenizer{}
	classes := map[string][]phrase{}
	var prules []parsedRule
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		head, body, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("lexicon line %d: missing '='", lineNo)
		}
		fields := strings.Fields(head)
		if len(fields) < 2 {
			return nil, fmt.Errorf("lexicon line %d: malformed declaration", lineNo)
		}
		switch fields[0] {
		case "class":
			if len(fields) != 2 {
				return nil, fmt.Errorf("lexicon line %d: class takes one name", lineNo)
			}
			name := fields[1]
			if _, dup := classes[name]; dup {
				return nil, fmt.Errorf("lexicon line %d: class %s defined twice", lineNo, name)
			}
			var ps []phrase
			for _, alt := range strings.Split(body, "|") {
				alt = strings.TrimSpace(alt)
				if strings.HasPrefix(alt, "@") {
					inc, ok := classes[alt[1:]]
					if !ok {
						return nil, fmt.Errorf("lexicon line %d: unknown class %s", lineNo, alt)
					}
					ps = append(ps, inc...)
					continue
				}
				p, err := phrases(z, alt, " \t", classes)
				if err != nil {
					return nil, fmt.Errorf("lexicon line %d: %w", lineNo, err)
				}
				ps = append(ps, p...)
			}
			classes[name] = ps
		case "rule":
			pr := parsedRule{line: lineNo}
			for _, o := range strings.Split(strings.TrimSpace(head[len("rule"):]), ",") {
				f := strings.Fields(o)
				if len(f) == 0 || len(f) > 2 {
					return nil, fmt.Errorf("lexicon line %d: malformed rule output %q", lineNo, o)
				}
				out, err := parseOutput(f)
				if err != nil {
					return nil, fmt.Errorf("lexicon line %d: %w", lineNo, err)
				}
				pr.outs = append(pr.outs, out)
			}
			for _, e := range strings.Fields(body) {
				pe, err := parseElem(z, e, classes)
				if err != nil {
					return nil, fmt.Errorf("lexicon line %d: %w", lineNo, err)
				}
				pr.elems = append(pr.elems, pe)
			}
			if len(pr.elems) == 0 {
				return nil, fmt.Errorf("lexicon line %d: empty pattern", lineNo)
			}
			prules = append(prules, pr)
		default:
			return nil, fmt.Errorf("lexicon line %d: unknown declaration %q", lineNo, fields[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading lexicon: %w", err)
	}
	return compile(prules, classes["NEG"])
}

func parseOutput(f []string) (output, error) {
	cat := -1
	for i, n := range catNames {
		if strings.HasPrefix(f[0], n+".") {
			cat = i
		}
	}
	if cat < 0 {
		return output{}, fmt.Errorf("rule %s: ID must start with a category", f[0])
	}
	out := output{id: f[0], cat: cat}
	if cat >= catJailbreak {
		if len(f) != 1 {
			return output{}, fmt.Errorf("rule %s: detections take no severity", f[0])
		}
		out.sev = sevHigh
		return out, nil
	}
	if len(f) != 2 {
		return output{}, fmt.Errorf("rule %s: missing severity", f[0])
	}
	switch f[1] {
	case "low":
		out.sev = sevLow
	case "medium":
		out.sev = sevMedium
	case "high":
		out.sev = sevHigh
	case "safe":
		out.sev = sevSafe
	case "safe_all":
		out.sev = sevSafeAll
	default:
		return output{}, fmt.Errorf("rule %s: unknown severity %q", f[0], f[1])
	}
	return out, nil
}

func parseElem(z *tokenizer, e string, classes map[string][]phrase) (parsedElem, error) {
	var pe parsedElem
	if strings.HasPrefix(e, "*") {
		n := 0
		if _, err := fmt.Sscanf(e[1:], "%d", &n); err != nil || n <= 0 || n > 12 {
			return pe, fmt.Errorf("bad gap %q", e)
		}
		pe.isGap, pe.gap = true, n
		return pe, nil
	}
	if strings.HasPrefix(e, "!") {
		pe.not = true
		e = e[1:]
	} else if strings.HasSuffix(e, "?") {
		pe.opt = true
		e = e[:len(e)-1]
	}
	for _, alt := range strings.Split(e, "|") {
		if alt == "$" && !pe.not {
			pe.end = true
			continue
		}
		if strings.HasPrefix(alt, "@") {
			c, ok := classes[alt[1:]]
			if !ok {
				return pe, fmt.Errorf("unknown class %s", alt)
			}
			pe.alts = append(pe.alts, c...)
			continue
		}
		ps, err := phrases(z, alt, "_", classes)
		if err != nil {
			return pe, err
		}
		pe.alts = append(pe.alts, ps...)
	}
	if len(pe.alts) == 0 && !pe.end {
		return pe, fmt.Errorf("element %q has no alternatives", e)
	}
	return pe, nil
}

func compile(prules []parsedRule, neg []phrase) (*lexicon, error) {
	lx := &lexicon{voc: vocab{ids: map[string]int32{}, words: []string{""}, squeezed: map[string]int32{}}}
	for _, pr := range prules {
		for _, e := range pr.elems {
			for _, p := range e.alts {
				for _, w := range p {
					lx.voc.add(w)
				}
			}
		}
	}
	for _, p := range neg {
		for _, w := range p {
			lx.voc.add(w)
		}
	}
	// a squeezed spelling resolves to the word with doubled letters when
	// two words squeeze alike ("ass" rather than "as")
	for id, w := range lx.voc.words[1:] {
		sq := string(squeeze(nil, []byte(w)))
		if prev, ok := lx.voc.squeezed[sq]; ok && len(lx.voc.words[prev]) >= len(w) {
			continue
		}
		lx.voc.squeezed[sq] = int32(id + 1)
	}
	lx.voc.index = newWordIndex(lx.voc.ids)
	lx.voc.squeezedIndex = newWordIndex(lx.voc.squeezed)
	words := (len(lx.voc.words) + 63) / 64
	newSet := func() bitset { return make(bitset, words) }
	lx.neg = newSet()
	for _, p := range neg {
		if len(p) == 1 {
			lx.neg.set(lx.voc.ids[p[0]])
		}
	}
	lx.anchors = make([][]int32, len(lx.voc.words))
	for _, pr := range prules {
		r := rule{outs: pr.outs}
		anchor, best := -1, 1<<30
		for i, pe := range pr.elems {
			el := element{isGap: pe.isGap, gap: pe.gap, opt: pe.opt, not: pe.not, end: pe.end}
			if !pe.isGap {
				el.single = newSet()
				el.first = newSet()
				el.key = newSet()
				common := 0
				for _, p := range pe.alts {
					ids := make([]int32, len(p))
					for k, w := range p {
						ids[k] = lx.voc.ids[w]
					}
					el.first.set(ids[0])
					if k := lx.voc.ids[keyWord(p)]; !el.key.has(k) {
						el.key.set(k)
						el.keys = append(el.keys, k)
					}
					if len(ids) == 1 {
						el.single.set(ids[0])
					} else {
						el.multi = append(el.multi, ids)
					}
					if commonWords[keyWord(p)] {
						common++
					}
				}
				if score := common*1000 + len(pe.alts); !pe.opt && !pe.not && !pe.end && score < best {
					anchor, best = i, score
				}
			}
			// multi-word alternatives sorted by first word, so a match
			// only looks at those starting with the word at hand
			slices.SortFunc(el.multi, func(a, b []int32) int { return cmp.Compare(a[0], b[0]) })
			r.elems = append(r.elems, el)
		}
		if anchor < 0 {
			return nil, fmt.Errorf("lexicon line %d: pattern has no required word", pr.line)
		}
		for i, e := range r.elems {
			if !e.isGap && !e.opt && !e.not && i != anchor {
				r.required = append(r.required, i)
			}
		}
		ri := int32(len(lx.rules))
		seen := map[int32]bool{}
		for _, p := range pr.elems[anchor].alts {
			id := lx.voc.ids[keyWord(p)]
			if !seen[id] {
				seen[id] = true
				lx.anchors[id] = append(lx.anchors[id], ri)
			}
		}
		lx.rules = append(lx.rules, r)
	}
	return lx, nil
}

// match reports whether elems match toks starting at pos; with stopNeg, a
// gap never skips a negation.
func (lx *lexicon) match(elems []element, toks []tok, pos int, stopNeg bool) bool {
	if len(elems) == 0 {
		return true
	}
	e := &elems[0]
	if e.isGap {
		for k := 0; k <= e.gap && pos+k <= len(toks); k++ {
			if stopNeg && k > 0 && lx.neg.has(toks[pos+k-1].id) {
				break
			}
			if lx.match(elems[1:], toks, pos+k, stopNeg) {
				return true
			}
		}
		return false
	}
	if e.not {
		if pos < len(toks) && e.first.has(toks[pos].id) && (e.single.has(toks[pos].id) || lx.seqAt(e, toks, pos) > 0) {
			return false
		}
		return lx.match(elems[1:], toks, pos, stopNeg)
	}
	if e.end && pos == len(toks) && lx.match(elems[1:], toks, pos, stopNeg) {
		return true
	}
	if pos < len(toks) && e.first.has(toks[pos].id) {
		id := toks[pos].id
		if e.single.has(id) && lx.match(elems[1:], toks, pos+1, stopNeg) {
			return true
		}
		from, _ := slices.BinarySearchFunc(e.multi, id, func(seq []int32, id int32) int { return cmp.Compare(seq[0], id) })
	multi:
		for _, seq := range e.multi[from:] {
			if seq[0] != id {
				break
			}
			if pos+len(seq) > len(toks) {
				continue
			}
			for k, id := range seq {
				if toks[pos+k].id != id {
					continue multi
				}
			}
			if lx.match(elems[1:], toks, pos+len(seq), stopNeg) {
				return true
			}
		}
	}
	return e.opt && lx.match(elems[1:], toks, pos, stopNeg)
}

// seqAt returns the length of the first multi-word alternative of e at
// pos, or 0.
func (lx *lexicon) seqAt(e *element, toks []tok, pos int) int {
	from, _ := slices.BinarySearchFunc(e.multi, toks[pos].id, func(seq []int32, id int32) int { return cmp.Compare(seq[0], id) })
multi:
	for _, seq := range e.multi[from:] {
		if seq[0] != toks[pos].id {
			break
		}
		if pos+len(seq) > len(toks) {
			continue
		}
		for k, id := range seq {
			if toks[pos+k].id != id {
				continue multi
			}
		}
		return len(seq)
	}
	return 0
}

// matches reports whether rule r matches anywhere in the sentence toks,
// not right after a negation, and otherwise whether it would match if
// negations were ignored ("I do not want to kill myself"). seen[id] is
// gen for the vocabulary IDs of the sentence's words.
func (lx *lexicon) matches(r *rule, toks []tok, seen []uint32, gen uint32) (ok, negated bool) {
	for _, i := range r.required {
		e := &r.elems[i]
		found := e.end
		if found {
			continue
		}
		// whichever is shorter: the element's key words or the sentence
		if len(e.keys) <= len(toks) {
			for _, id := range e.keys {
				if seen[id] == gen {
					found = true
					break
				}
			}
		} else {
			for _, t := range toks {
				if e.key.has(t.id) {
					found = true
					break
				}
			}
		}
		if !found {
			return false, false
		}
	}
	e0 := &r.elems[0]
	plain := !e0.isGap && !e0.opt && !e0.not && !e0.end
	// profanity is profane whatever precedes it
	negatable := r.outs[0].cat != catProfanity
	hasNeg := false
	for p := range toks {
		if negatable && lx.neg.has(toks[p].id) {
			hasNeg = true
		}
		if plain && !e0.first.has(toks[p].id) {
			continue
		}
		if negatable && (p > 0 && lx.neg.has(toks[p-1].id) || p > 1 && lx.neg.has(toks[p-2].id)) {
			continue
		}
		if lx.match(r.elems, toks, p, true) {
			return true, false
		}
	}
	if !hasNeg {
		return false, false
	}
	for p := range toks {
		if (!plain || e0.first.has(toks[p].id)) && lx.match(r.elems, toks, p, false) {
			return false, true
		}
	}
	return false, false
}
