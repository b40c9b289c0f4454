package classifier

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Normalisation turns text into a sequence of word tokens that the lexicon
// and the blocklists match on. It runs in two passes:
//
//  1. fold: case folding, compatibility decomposition (NFKD, which also
//     folds fullwidth forms, ligatures, circled and mathematical letters),
//     a table of confusable Cyrillic and Greek letters, removal of
//     invisible characters (every format character, variation selectors,
//     blank filler letters) and combining marks, and mapping of every other
//     non-ASCII punctuation or space to an ASCII equivalent;
//  2. tokenise: words are runs of letters, digits and the leetspeak symbols
//     @ and $, with ! | * ' allowed inside a word; leetspeak is undone in
//     words that contain a letter (so years and prices stay numbers);
//     contractions are expanded ("don't" and "dont" both become "do not");
//     runs of three or more single letters separated by spaces or
//     punctuation ("k i l l", "k.i.l.l", "k-1-l-l") are joined into one
//     word; sentences end at . ! ? ; and blank lines.
//
// A word that is not in the lexicon's vocabulary is retried with the
// alternative reading of ambiguous leetspeak (1 and | as l or i), with a
// masking asterisk removed or read as a vowel ("f*ck"), and with letters
// repeated three or more times squeezed ("kiiiill"). The normalised text
// is the resolved words joined by single spaces, so every match on it is by
// word boundary.

// confusables maps letters that look like Latin letters to them. It is
// consulted before and after lower-casing, because upper- and lower-case
// look-alikes differ (Greek capital eta looks like H, small eta like n).
var confusables = map[rune]byte{
	// Cyrillic capitals
	'А': 'a', 'В': 'b', 'Е': 'e', 'К': 'k', 'М': 'm', 'Н': 'h', 'О': 'o',
	'Р': 'p', 'С': 'c', 'Т': 't', 'Х': 'x', 'У': 'y', 'Ѕ': 's', 'І': 'i',
	'Ј': 'j', 'Ԁ': 'd', 'Ԛ': 'q', 'Ԝ': 'w',
	// Cyrillic small letters
	'а': 'a', 'в': 'b', 'е': 'e', 'к': 'k', 'м': 'm', 'н': 'h', 'о': 'o',
	'р': 'p', 'с': 'c', 'т': 't', 'х': 'x', 'у': 'y', 'ѕ': 's', 'і': 'i',
	'ј': 'j', 'ԁ': 'd', 'ԛ': 'q', 'ԝ': 'w', 'һ': 'h', 'ь': 'b', 'ѵ': 'v',
	'ӏ': 'l', 'ɡ': 'g', 'ё': 'e', 'ї': 'i',
	// Greek capitals
	'Α': 'a', 'Β': 'b', 'Ε': 'e', 'Ζ': 'z', 'Η': 'h', 'Ι': 'i', 'Κ': 'k',
	'Μ': 'm', 'Ν': 'n', 'Ο': 'o', 'Ρ': 'p', 'Τ': 't', 'Υ': 'y', 'Χ': 'x',
	// Greek small letters
	'α': 'a', 'β': 'b', 'γ': 'y', 'ε': 'e', 'η': 'n', 'ι': 'i', 'κ': 'k',
	'ν': 'v', 'ο': 'o', 'ρ': 'p', 'τ': 't', 'υ': 'u', 'χ': 'x', 'ω': 'w',
	'ς': 's', 'μ': 'u',
	// Latin letters without a decomposition, and small capitals
	'ı': 'i', 'ł': 'l', 'ø': 'o', 'đ': 'd', 'ħ': 'h', 'ŀ': 'l',
	'ᴀ': 'a', 'ʙ': 'b', 'ᴄ': 'c', 'ᴅ': 'd', 'ᴇ': 'e', 'ɢ': 'g', 'ʜ': 'h',
	'ɪ': 'i', 'ᴊ': 'j', 'ᴋ': 'k', 'ʟ': 'l', 'ᴍ': 'm', 'ɴ': 'n', 'ᴏ': 'o',
	'ᴘ': 'p', 'ʀ': 'r', 'ꜱ': 's', 'ᴛ': 't', 'ᴜ': 'u', 'ᴠ': 'v', 'ᴡ': 'w',
	'ʏ': 'y', 'ᴢ': 'z',
	// Symbols used as letters
	'€': 'e', '£': 'l', '¢': 'c', '¥': 'y',
}

// multiFold are letters that fold to more than one Latin letter.
var multiFold = map[rune]string{'ß': "ss", 'æ': "ae", 'œ': "oe", 'Æ': "ae", 'Œ': "oe"}

// isInvisible reports characters that draw nothing and must neither show
// nor split a word: every format character (category Cf: zero-width space
// and joiners, soft hyphen, bidi embeddings, overrides and isolates, the
// Arabic letter mark, tag characters, interlinear annotations, shorthand
// format controls), variation selectors, the combining grapheme joiner,
// and the filler letters of Hangul and Braille that render as blanks.
// An attacker puts them inside a word ("ki\u202Ell") so that a filter
// reading words sees two harmless halves; they are dropped before
// tokenising.
func isInvisible(r rune) bool {
	switch {
	case r == 0x034F, r == 0x180E: // combining grapheme joiner, Mongolian vowel separator
		return true
	case r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0, r == 0x2800: // fillers
		return true
	case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF: // variation selectors
		return true
	case r >= 0xE0000 && r <= 0xE007F: // tags, including unassigned ones
		return true
	}
	return unicode.Is(unicode.Cf, r)
}

// fold appends the folded form of s to dst: ASCII lower case, non-ASCII
// letters and digits lower-cased in UTF-8, everything else ASCII.
func fold(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			dst = append(dst, b)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		dst = foldRune(dst, r, s[i:i+size], 0)
		i += size
	}
	return dst
}

func foldRune(dst []byte, r rune, enc string, depth int) []byte {
	if r < utf8.RuneSelf {
		b := byte(r)
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		return append(dst, b)
	}
	if isInvisible(r) || unicode.In(r, unicode.Mn, unicode.Me) {
		return dst
	}
	if c, ok := confusables[r]; ok {
		return append(dst, c)
	}
	if m, ok := multiFold[r]; ok {
		return append(dst, m...)
	}
	if r == 0x3000 {
		// the ideographic space is as wide as two letters: a word gap
		// between spaced-out letters, not a letter gap
		return append(dst, ' ', ' ')
	}
	if depth < 3 {
		if enc == "" {
			var buf [utf8.UTFMax]byte
			enc = string(buf[:utf8.EncodeRune(buf[:], r)])
		}
		if d := norm.NFKD.PropertiesString(enc).Decomposition(); len(d) > 0 {
			for j := 0; j < len(d); {
				r2, n := utf8.DecodeRune(d[j:])
				dst = foldRune(dst, r2, "", depth+1)
				j += n
			}
			return dst
		}
	}
	lr := unicode.ToLower(r)
	if c, ok := confusables[lr]; ok {
		return append(dst, c)
	}
	switch {
	case lr == 0x2019 || lr == 0x2018 || lr == 0x02BC || lr == 0x2032 || lr == 0x00B4:
		return append(dst, '\'')
	case unicode.IsLetter(lr) || unicode.IsDigit(lr):
		return utf8.AppendRune(dst, lr)
	case lr == 0x2028 || lr == 0x2029 || lr == 0x0085:
		return append(dst, '\n')
	case unicode.IsSpace(lr):
		return append(dst, ' ')
	case unicode.Is(unicode.Pd, lr), lr == 0x00B7, lr == 0x2022, lr == 0x2027:
		return append(dst, '-')
	case lr == 0x3002 || lr == 0x2026 || lr == 0x0964:
		return append(dst, '.')
	}
	return append(dst, ',')
}

// byte classes of the folded text
const (
	clSep      = iota // separator that can sit inside a spaced-out word
	clWord            // letter, digit, @ or $; any byte of a non-ASCII letter
	clInterior        // ! | * ' : part of a word only between word bytes
	clBreak           // ends a sentence: ? ; (and . ! when not joining)
	clOther           // other punctuation: separates words, stops joining
)

var byteClass = func() (t [256]uint8) {
	for i := range t {
		t[i] = clOther
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = clWord
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = clWord
	}
	for i := 0x80; i < 256; i++ {
		t[i] = clWord
	}
	t['@'], t['$'] = clWord, clWord
	t['!'], t['|'], t['*'], t['\''] = clInterior, clInterior, clInterior, clInterior
	for _, c := range " \t\r\n.-_/~,+:\"" {
		t[c] = clSep
	}
	t['?'], t[';'] = clBreak, clBreak
	return t
}()

// leet maps leetspeak symbols to the letter they usually stand for; leetAlt
// is the second reading of the ambiguous ones.
var leet, leetAlt = func() (l, a [256]byte) {
	for _, p := range []string{"0o", "1i", "3e", "4a", "5s", "7t", "8b", "9g", "@a", "$s", "!i", "|l"} {
		l[p[0]] = p[1]
		a[p[0]] = p[1]
	}
	a['1'], a['|'], a['!'] = 'l', 'i', 'l'
	return l, a
}()

// contractions without an apostrophe that are expanded like their
// apostrophe forms.
var bareContractions = map[string][]string{
	"dont": {"do", "not"}, "didnt": {"did", "not"}, "doesnt": {"does", "not"},
	"cant": {"can", "not"}, "wont": {"will", "not"}, "isnt": {"is", "not"},
	"arent": {"are", "not"}, "wasnt": {"was", "not"}, "werent": {"were", "not"},
	"wouldnt": {"would", "not"}, "shouldnt": {"should", "not"}, "couldnt": {"could", "not"},
	"havent": {"have", "not"}, "hasnt": {"has", "not"}, "aint": {"is", "not"},
	"im": {"i", "am"}, "ive": {"i", "have"}, "youre": {"you", "are"},
	"theyre": {"they", "are"}, "gonna": {"going", "to"}, "wanna": {"want", "to"},
	"gotta": {"got", "to"}, "cannot": {"can", "not"}, "idk": {"i", "do", "not", "know"},
	"imma": {"i", "am", "going", "to"}, "ima": {"i", "am", "going", "to"}, "finna": {"going", "to"},
	"tryna": {"trying", "to"},
}

// bareIndex numbers the keys of bareContractions (from 1) for the
// tokenizer's lookup of every word; bareExpansions[n-1] is the
// expansion of number n. bareFirst[len][last letter] has the bit of the
// first letter of every key of that length and last letter set, so that
// most words are ruled out without a lookup.
var bareIndex, bareExpansions, bareFirst = func() (wordIndex, [][]string, *[maxBare + 1][26]uint32) {
	nums := make(map[string]int32, len(bareContractions))
	var exp [][]string
	first := new([maxBare + 1][26]uint32)
	for w, e := range bareContractions {
		exp = append(exp, e)
		nums[w] = int32(len(exp))
		first[len(w)][w[len(w)-1]-'a'] |= 1 << (w[0] - 'a')
	}
	return newWordIndex(nums), exp, first
}()

// maxBare is the length of the longest key of bareContractions.
const maxBare = 8

// bareContraction returns the expansion of w when it is a key of
// bareContractions.
func bareContraction(w []byte) []string {
	n := len(w)
	if n == 0 || n > maxBare {
		return nil
	}
	f, l := w[0]-'a', w[n-1]-'a'
	if f >= 26 || l >= 26 || bareFirst[n][l]&(1<<f) == 0 {
		return nil
	}
	if i := bareIndex.get(w); i != 0 {
		return bareExpansions[i-1]
	}
	return nil
}

// suffixes expand the contracted verbs after an apostrophe.
var suffixes = map[string]string{"ll": "will", "re": "are", "m": "am", "ve": "have", "d": "would"}

// negativePrefix maps the part before n't to the verb it negates where
// dropping the n is wrong.
var negativePrefix = map[string]string{"ca": "can", "wo": "will", "ai": "is", "sha": "shall"}

// tok is one word of the normalised text.
type tok struct {
	id         int32 // vocabulary ID, 0 when the word is not in the lexicon
	start, end int32 // the word's bytes in scratch.norm
}

// pendingLetter is one single-letter word held back in case it starts a
// spaced-out word.
type pendingLetter struct {
	c        byte
	brk      bool // a sentence break preceded it
	joinable bool // the separator before it may sit inside a spaced-out word
	sep      sep  // the separator before it, when joinable
}

// sep is the separator between two single letters: at most three bytes
// (a longer one is never joinable), held without allocating.
type sep struct {
	b [3]byte
	n uint8
}

func sepOf(b []byte) (s sep) {
	s.n = uint8(copy(s.b[:], b))
	return s
}

// tokenizer state, reused across calls through scratch.
type tokenizer struct {
	voc     *vocab // nil while the lexicon itself is compiled
	tmp     []byte
	exp     []byte
	fold    []byte
	norm    []byte
	toks    []tok
	sents   []int32 // index of the first token of each sentence
	wbuf    []byte
	alt     []byte
	part    []byte
	pending []pendingLetter
	brk     bool // a sentence break is waiting for the next token
}

func (z *tokenizer) reset() {
	z.fold = z.fold[:0]
	z.norm = z.norm[:0]
	z.toks = z.toks[:0]
	z.sents = z.sents[:0]
	z.pending = z.pending[:0]
	z.brk = true
}

// run normalises s into z.norm, z.toks and z.sents.
func (z *tokenizer) run(s string) {
	z.reset()
	z.fold = fold(z.fold, s)
	f := z.fold
	sepLen, sepBreak, sepJoin, newlines := 0, false, true, 0
	for i := 0; i < len(f); {
		c := f[i]
		cl := byteClass[c]
		if cl != clWord {
			switch cl {
			case clSep:
				if c == '\n' {
					newlines++
					if newlines >= 2 {
						sepBreak, sepJoin = true, false
					}
				} else if c == '.' {
					sepBreak = true
				} else if c != ' ' && c != '\t' && c != '\r' {
					newlines = 0
				}
			case clBreak:
				sepBreak, sepJoin = true, false
			case clInterior:
				if c == '!' {
					sepBreak = true
				}
				if c == '\'' {
					sepJoin = false
				}
			default:
				sepJoin = false
			}
			sepLen++
			i++
			continue
		}
		j := i + 1
		for j < len(f) {
			cj := byteClass[f[j]]
			if cj == clWord {
				j++
				continue
			}
			if cj == clInterior {
				k := j
				for k < len(f) && byteClass[f[k]] == clInterior {
					k++
				}
				if k < len(f) && byteClass[f[k]] == clWord {
					j = k
					continue
				}
			}
			break
		}
		joinable := sepJoin && sepLen <= 3
		var sp sep
		if joinable {
			sp = sepOf(f[i-sepLen : i])
		}
		z.word1(f[i:j], sepBreak, joinable, sp)
		sepLen, sepBreak, sepJoin, newlines = 0, false, true, 0
		i = j
	}
	z.flushPending()
}

// isSingle reports whether raw is one letter or leetspeak symbol.
func isSingle(raw []byte) bool {
	if len(raw) != 1 {
		return false
	}
	c := raw[0]
	return ('a' <= c && c <= 'z') || leet[c] != 0
}

// word1 takes one raw word with the separator that preceded it.
func (z *tokenizer) word1(raw []byte, brk, joinable bool, sep sep) {
	if isSingle(raw) {
		// a gap other than the one between the first two letters ends a
		// spaced-out word: "s e n d   n u d e s" and "k.i.l.l m.e" are
		// two words each
		if len(z.pending) > 0 && (!joinable || len(z.pending) >= 2 && sep != z.pending[1].sep) {
			z.flushPending()
		}
		z.pending = append(z.pending, pendingLetter{c: raw[0], brk: brk, joinable: joinable, sep: sep})
		return
	}
	z.flushPending()
	if brk {
		z.brk = true
	}
	z.word(raw)
}

// flushPending emits held-back single letters: joined into one word when
// there are three or more of them and at least one is a letter.
func (z *tokenizer) flushPending() {
	p := z.pending
	if len(p) == 0 {
		return
	}
	z.pending = p[:0]
	letters := 0
	for _, l := range p {
		if 'a' <= l.c && l.c <= 'z' {
			letters++
		}
	}
	if len(p) >= 3 && letters > 0 {
		if p[0].brk {
			z.brk = true
		}
		raw := z.part[:0]
		for _, l := range p {
			raw = append(raw, l.c)
		}
		z.part = raw
		z.word(raw)
		return
	}
	for _, l := range p {
		if l.brk {
			z.brk = true
		}
		z.part = append(z.part[:0], l.c)
		z.word(z.part)
	}
}

// word normalises one raw word (leetspeak, contractions) and emits it.
func (z *tokenizer) word(raw []byte) {
	hasLetter, hasLeet, amb, star, apos := false, false, false, false, false
	for _, c := range raw {
		switch {
		case 'a' <= c && c <= 'z', c >= 0x80:
			hasLetter = true
		case c == '*':
			star = true
		case c == '\'':
			apos = true
		case leet[c] != 0:
			hasLeet = true
			if leet[c] != leetAlt[c] {
				amb = true
			}
		}
	}
	w := append(z.wbuf[:0], raw...)
	var alt []byte
	if hasLetter && hasLeet {
		if amb {
			alt = append(z.alt[:0], raw...)
			for k, c := range alt {
				if m := leetAlt[c]; m != 0 {
					alt[k] = m
				}
			}
			z.alt = alt
		}
		for k, c := range w {
			if m := leet[c]; m != 0 {
				w[k] = m
			}
		}
	} else if hasLeet {
		// a digit-only word keeps its digits, but stray interior symbols
		// (which only leetspeak explains) go
		w = dropBytes(w, "!|")
	}
	z.wbuf = w
	if apos {
		z.contraction(w)
		return
	}
	if e := bareContraction(w); e != nil {
		for _, p := range e {
			z.emitString(p)
		}
		return
	}
	if star && spacedWithStars(w) {
		w = dropBytes(w, "*")
		star = false
	}
	z.emit(w, alt, star)
}

// spacedWithStars reports a word spelled as single letters separated by
// asterisks ("k*i*l*l").
func spacedWithStars(w []byte) bool {
	if len(w) < 5 {
		return false
	}
	for k, c := range w {
		if (k%2 == 1) != (c == '*') {
			return false
		}
	}
	return true
}

func dropBytes(w []byte, set string) []byte {
	out := w[:0]
	for _, c := range w {
		drop := false
		for k := 0; k < len(set); k++ {
			if c == set[k] {
				drop = true
			}
		}
		if !drop {
			out = append(out, c)
		}
	}
	return out
}

// contraction expands a word with apostrophes.
func (z *tokenizer) contraction(w []byte) {
	last := -1
	count := 0
	for k, c := range w {
		if c == '\'' {
			last = k
			count++
		}
	}
	if count == 1 && last > 0 {
		pre, suf := w[:last], string(w[last+1:])
		switch suf {
		case "ll", "re", "m", "ve", "d", "s":
			z.emit(pre, nil, false)
			if exp := suffixes[suf]; exp != "" {
				z.emitString(exp)
			}
			return
		case "t":
			if len(pre) > 1 && pre[len(pre)-1] == 'n' {
				verb, ok := negativePrefix[string(pre[:len(pre)-1])]
				if !ok {
					verb = string(pre[:len(pre)-1])
				}
				z.emitString(verb)
				z.emitString("not")
				return
			}
		}
	}
	w = dropBytes(w, "'")
	if len(w) > 0 {
		z.emit(w, nil, false)
	}
}

// hasTriple reports a byte repeated three or more times in a row.
func hasTriple(w []byte) bool {
	for k := 2; k < len(w); k++ {
		if w[k] == w[k-1] && w[k] == w[k-2] {
			return true
		}
	}
	return false
}

// squeeze collapses every run of a repeated byte to one.
func squeeze(dst, w []byte) []byte {
	for k, c := range w {
		if k == 0 || c != w[k-1] {
			dst = append(dst, c)
		}
	}
	return dst
}

// emit resolves w against the vocabulary and appends it to the output.
func (z *tokenizer) emit(w, alt []byte, star bool) {
	if len(w) == 0 {
		return
	}
	if z.brk {
		z.sents = append(z.sents, int32(len(z.toks)))
		z.brk = false
	}
	var id int32
	canon := ""
	if z.voc != nil {
		id, canon = z.resolve(w, alt, star)
	}
	if len(z.norm) > 0 {
		z.norm = append(z.norm, ' ')
	}
	start := len(z.norm)
	if canon != "" {
		z.norm = append(z.norm, canon...)
	} else {
		z.norm = append(z.norm, w...)
	}
	z.toks = append(z.toks, tok{id: id, start: int32(start), end: int32(len(z.norm))})
}

// emitString emits a word the tokenizer made up itself (a contraction's
// expansion).
func (z *tokenizer) emitString(s string) {
	z.exp = append(z.exp[:0], s...)
	z.emit(z.exp, nil, false)
}

// resolve finds the vocabulary word w stands for, trying the alternative
// leetspeak reading, masking asterisks and squeezed repeated letters in
// turn. canon is the vocabulary word when it differs from w.
func (z *tokenizer) resolve(w, alt []byte, star bool) (id int32, canon string) {
	v := z.voc
	if id := v.index.get(w); id != 0 {
		return id, ""
	}
	if alt != nil {
		if id := v.index.get(alt); id != 0 {
			return id, v.words[id]
		}
	}
	if star {
		var b []byte
		for _, vowel := range []byte("uaeio") {
			b = append(z.tmp[:0], w...)
			for k, c := range b {
				if c == '*' {
					b[k] = vowel
				}
			}
			z.tmp = b
			if id := v.index.get(b); id != 0 {
				return id, v.words[id]
			}
		}
		b = dropBytes(append(z.tmp[:0], w...), "*")
		z.tmp = b
		if id := v.index.get(b); id != 0 {
			return id, v.words[id]
		}
	}
	for _, form := range [2][]byte{w, alt} {
		if form == nil || !hasTriple(form) {
			continue
		}
		z.tmp = squeeze(z.tmp[:0], form)
		if id := v.squeezedIndex.get(z.tmp); id != 0 {
			return id, v.words[id]
		}
	}
	return 0, ""
}
