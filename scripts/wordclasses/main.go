// Command wordclasses derives the word-class table of Terroir's
// content-safety model (services/contentsafety/classifier/linear/
// wordclasses.txt.gz) from WordNet 3.0, so that words the training set
// never used share weight with words of the same meaning it did use
// ("slay", "butcher" and "murder" all lead to the class of "kill").
//
// For every single-word lemma of letters only, it takes the most frequent
// senses of each part of speech that is used at all (a part of speech
// whose senses were never seen in WordNet's tagged corpus is skipped when
// another one was), each sense's synset and its hypernyms up to four levels
// up (an adjective satellite's head counts as its hypernym), and writes
// the word and its inflected forms (regular endings and WordNet's
// exception lists) with the dense IDs of those synsets, the class the
// model adds to pairs of adjacent words first. Function words and words
// of fewer than three letters are left out. The output is deterministic.
//
// Run it from scripts/ with Debian's wordnet-base installed:
//
//	go run ./wordclasses
//
// WordNet 3.0 is © 2006 Princeton University and may be redistributed
// under its licence, which the table carries beside it
// (linear/WORDNET-LICENSE).
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wordclasses:", err)
		os.Exit(1)
	}
}

var candidates = []string{
	"services/contentsafety/classifier/linear",
	"../services/contentsafety/classifier/linear",
}

type config struct {
	wordnet string
	senses  int // senses per part of speech
	levels  int // hypernym levels above each sense
	max     int // classes per word form
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("wordclasses", flag.ContinueOnError)
	wn := fs.String("wordnet", "/usr/share/wordnet", "WordNet 3.0 database directory (Debian package wordnet-base)")
	outPath := fs.String("out", "", "output (default services/contentsafety/classifier/linear/wordclasses.txt.gz)")
	senses := fs.Int("senses", 1, "most frequent senses taken per part of speech")
	levels := fs.Int("levels", 4, "hypernym levels taken above each sense")
	maxClasses := fs.Int("max", 12, "classes kept per word form")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *outPath == "" {
		for _, c := range candidates {
			if _, err := os.Stat(c); err == nil {
				*outPath = filepath.Join(c, "wordclasses.txt.gz")
				break
			}
		}
		if *outPath == "" {
			return errors.New("cannot find the linear package; run from the repository root or scripts/, or pass -out")
		}
	}
	cfg := config{wordnet: *wn, senses: *senses, levels: *levels, max: *maxClasses}
	data, stats, err := build(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*outPath, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s (%d bytes): %s\n", *outPath, len(data), stats)
	return nil
}

// poses are WordNet's parts of speech in the order a word's classes are
// listed.
var poses = []struct {
	name string
	tag  byte
}{{"noun", 'n'}, {"verb", 'v'}, {"adj", 'a'}, {"adv", 'r'}}

type synsetKey struct {
	pos    byte
	offset int
}

type indexEntry struct {
	tagged  int // senses seen in the tagged corpus
	offsets []int
}

func build(cfg config) ([]byte, string, error) {
	// lemma → part of speech → index entry
	index := map[string]map[byte]indexEntry{}
	hyper := map[synsetKey][]synsetKey{}
	for _, p := range poses {
		if err := readIndex(filepath.Join(cfg.wordnet, "index."+p.name), p.tag, index); err != nil {
			return nil, "", err
		}
		if err := readData(filepath.Join(cfg.wordnet, "data."+p.name), p.tag, hyper); err != nil {
			return nil, "", err
		}
	}
	classesOf := func(lemma string) []synsetKey {
		entries := index[lemma]
		anyTagged := false
		for _, e := range entries {
			anyTagged = anyTagged || e.tagged > 0
		}
		var out []synsetKey
		add := func(k synsetKey) {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		for _, p := range poses {
			e, ok := entries[p.tag]
			if !ok || (anyTagged && e.tagged == 0) {
				continue
			}
			for _, off := range e.offsets[:min(cfg.senses, len(e.offsets))] {
				k := synsetKey{p.tag, off}
				// the first hypernym leads, so the first class of a word
				// (which pairs use) is the more general one
				chain := []synsetKey{}
				cur := k
				for range cfg.levels {
					h := hyper[cur]
					if len(h) == 0 {
						break
					}
					cur = h[0]
					chain = append(chain, cur)
				}
				if len(chain) > 0 {
					add(chain[0])
				}
				add(k)
				for _, c := range chain[min(1, len(chain)):] {
					add(c)
				}
			}
		}
		return out
	}
	// word form → lemmas it may be a form of, own lemma first
	forms := map[string][]string{}
	addForm := func(form, lemma string) {
		if !usable(form) || !usable(lemma) || slices.Contains(forms[form], lemma) {
			return
		}
		forms[form] = append(forms[form], lemma)
	}
	lemmas := make([]string, 0, len(index))
	for l := range index {
		lemmas = append(lemmas, l)
	}
	slices.Sort(lemmas)
	for _, l := range lemmas {
		addForm(l, l)
	}
	for _, l := range lemmas {
		for _, p := range poses {
			if _, ok := index[l][p.tag]; ok {
				for _, f := range inflect(l, p.tag) {
					addForm(f, l)
				}
			}
		}
	}
	for _, p := range poses[:3] {
		if err := readExceptions(filepath.Join(cfg.wordnet, p.name+".exc"), addForm); err != nil {
			return nil, "", err
		}
	}
	words := make([]string, 0, len(forms))
	for f := range forms {
		words = append(words, f)
	}
	slices.Sort(words)
	ids := map[synsetKey]int{}
	var buf bytes.Buffer
	buf.WriteString("# Word classes for Terroir's content-safety model, derived from WordNet 3.0\n")
	buf.WriteString("# (c) 2006 Princeton University, under the WordNet 3.0 licence in WORDNET-LICENSE\n")
	fmt.Fprintf(&buf, "# by scripts/wordclasses -senses %d -levels %d -max %d: word, then dense class IDs\n", cfg.senses, cfg.levels, cfg.max)
	n := 0
	for _, w := range words {
		var cls []synsetKey
		for _, l := range forms[w] {
			for _, k := range classesOf(l) {
				if !slices.Contains(cls, k) {
					cls = append(cls, k)
				}
			}
		}
		if len(cls) == 0 {
			continue
		}
		cls = cls[:min(len(cls), cfg.max)]
		buf.WriteString(w)
		for _, k := range cls {
			id, ok := ids[k]
			if !ok {
				id = len(ids)
				ids[k] = id
			}
			buf.WriteByte(' ')
			buf.WriteString(strconv.Itoa(id))
		}
		buf.WriteByte('\n')
		n++
	}
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, "", err
	}
	zw.Header = gzip.Header{OS: 255}
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), fmt.Sprintf("%d word forms, %d classes, %d bytes uncompressed", n, len(ids), buf.Len()), nil
}

// stopWords are function words WordNet lists as rare nouns or verbs
// ("will", "can", "may", "might", "does", "its"...), which would add
// noise to every sentence.
var stopWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`the and for you your yours are was were not but can could will would shall should
	may might must have has had having does did done doing its this that these those there then than they them their
	what which who whom whose when where why how all any some one ones own our out off per via yet also just only
	very too with from into onto upon about above below over under again once here each few more most other such
	nor both either neither being been she her hers him his himself herself myself yourself itself ourselves
	themselves let get got gets like well even still much many lot lots way new now see say said`) {
		m[w] = true
	}
	return m
}()

// usable reports a word the normaliser can produce and worth a class:
// lower-case letters only, at least three, not a function word.
func usable(w string) bool {
	if len(w) < 3 || stopWords[w] {
		return false
	}
	for i := range len(w) {
		if w[i] < 'a' || w[i] > 'z' {
			return false
		}
	}
	return true
}

func isVowel(c byte) bool { return strings.IndexByte("aeiou", c) >= 0 }

// inflect returns regular inflected forms of lemma for a part of speech:
// plurals of nouns; third person, past and -ing forms of verbs (with a
// doubled final consonant after a single short vowel, "stab" →
// "stabbed", since English spelling does not say when it is doubled);
// comparatives of adjectives. Forms English never uses do no harm.
func inflect(l string, pos byte) []string {
	n := len(l)
	last := l[n-1]
	consY := last == 'y' && n > 1 && !isVowel(l[n-2])
	sibilant := strings.HasSuffix(l, "s") || strings.HasSuffix(l, "x") || strings.HasSuffix(l, "z") || strings.HasSuffix(l, "ch") || strings.HasSuffix(l, "sh")
	plural := l + "s"
	switch {
	case consY:
		plural = l[:n-1] + "ies"
	case sibilant:
		plural = l + "es"
	}
	switch pos {
	case 'n':
		return []string{plural}
	case 'v':
		out := []string{plural}
		switch {
		case last == 'e':
			out = append(out, l+"d", l[:n-1]+"ing")
		case consY:
			out = append(out, l[:n-1]+"ied", l+"ing")
		default:
			out = append(out, l+"ed", l+"ing")
			if n >= 3 && !isVowel(last) && isVowel(l[n-2]) && !isVowel(l[n-3]) && strings.IndexByte("wxy", last) < 0 {
				out = append(out, l+string(last)+"ed", l+string(last)+"ing")
			}
		}
		return out
	case 'a':
		switch {
		case last == 'e':
			return []string{l + "r", l + "st"}
		case consY:
			return []string{l[:n-1] + "ier", l[:n-1] + "iest"}
		}
		return []string{l + "er", l + "est"}
	}
	return nil
}

func readIndex(path string, pos byte, index map[string]map[byte]indexEntry) error {
	return eachLine(path, func(line string) error {
		if strings.HasPrefix(line, "  ") {
			return nil // licence header
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return fmt.Errorf("%s: short line %q", path, line)
		}
		pcnt, err := strconv.Atoi(f[3])
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		i := 4 + pcnt
		if len(f) < i+2 {
			return fmt.Errorf("%s: short line %q", path, line)
		}
		senses, err1 := strconv.Atoi(f[i])
		tagged, err2 := strconv.Atoi(f[i+1])
		if err := errors.Join(err1, err2); err != nil || len(f) < i+2+senses {
			return fmt.Errorf("%s: bad line %q", path, line)
		}
		e := indexEntry{tagged: tagged}
		for _, s := range f[i+2 : i+2+senses] {
			off, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			e.offsets = append(e.offsets, off)
		}
		if index[f[0]] == nil {
			index[f[0]] = map[byte]indexEntry{}
		}
		index[f[0]][pos] = e
		return nil
	})
}

// readData records each synset's hypernyms (and an adjective
// satellite's head).
func readData(path string, pos byte, hyper map[synsetKey][]synsetKey) error {
	return eachLine(path, func(line string) error {
		if strings.HasPrefix(line, "  ") {
			return nil
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return fmt.Errorf("%s: short line", path)
		}
		off, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ssType := f[2]
		wcnt, err := strconv.ParseInt(f[3], 16, 32)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		i := 4 + 2*int(wcnt)
		pcnt, err := strconv.Atoi(f[i])
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		key := synsetKey{pos, off}
		for p := range pcnt {
			j := i + 1 + 4*p
			sym, target, tpos := f[j], f[j+1], f[j+2]
			up := sym == "@" || sym == "@i" || (ssType == "s" && sym == "&")
			if !up {
				continue
			}
			toff, err := strconv.Atoi(target)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			tp := tpos[0]
			if tp == 's' {
				tp = 'a'
			}
			hyper[key] = append(hyper[key], synsetKey{tp, toff})
		}
		return nil
	})
}

func readExceptions(path string, add func(form, lemma string)) error {
	return eachLine(path, func(line string) error {
		f := strings.Fields(line)
		for _, l := range f[1:] {
			add(f[0], l)
		}
		return nil
	})
}

func eachLine(path string, fn func(string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if err := fn(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}
