package main

import (
	"math/rand/v2"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Obfuscations applied to training sentences, harmful and benign alike,
// so the model learns the words and not that disguised spelling means
// harm. Each takes the sentence and a random source and returns the
// disguised sentence.
var obfuscations = []func(string, *rand.Rand) string{
	leet, spaced, dotted, zeroWidth, casing, typos, confusables,
}

// variants returns n disguised copies of s, each with one or two
// obfuscations.
func variants(s string, n int, rng *rand.Rand) []string {
	out := make([]string, 0, n)
	for range n {
		v := s
		for range 1 + rng.IntN(2) {
			v = obfuscations[rng.IntN(len(obfuscations))](v, rng)
		}
		out = append(out, v)
	}
	return out
}

// eachWord applies f to a few random words of at least three letters
// (each with probability p, and at least one word when there is one).
func eachWord(s string, rng *rand.Rand, p float64, f func(string) string) string {
	words := strings.Split(s, " ")
	var cand []int
	for i, w := range words {
		if letters(w) >= 3 {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return s
	}
	forced := cand[rng.IntN(len(cand))]
	for _, i := range cand {
		if i == forced || rng.Float64() < p {
			words[i] = f(words[i])
		}
	}
	return strings.Join(words, " ")
}

func letters(w string) int {
	n := 0
	for _, r := range w {
		if unicode.IsLetter(r) {
			n++
		}
	}
	return n
}

var leetMap = map[rune]string{'a': "4", 'e': "3", 'i': "1", 'o': "0", 's': "5", 't': "7", 'l': "1", 'b': "8", 'g': "9"}

func leet(s string, rng *rand.Rand) string {
	return eachWord(s, rng, 0.3, func(w string) string {
		var b strings.Builder
		for _, r := range w {
			if rep, ok := leetMap[unicode.ToLower(r)]; ok && rng.Float64() < 0.6 {
				b.WriteString(rep)
			} else {
				b.WriteRune(r)
			}
		}
		return b.String()
	})
}

// join puts sep between the letters of w, keeping trailing punctuation
// outside.
func join(w, sep string) string {
	core := strings.TrimRightFunc(w, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	tail := w[len(core):]
	var parts []string
	for _, r := range core {
		parts = append(parts, string(r))
	}
	return strings.Join(parts, sep) + tail
}

func spaced(s string, rng *rand.Rand) string {
	return eachWord(s, rng, 0.1, func(w string) string { return join(w, " ") })
}

func dotted(s string, rng *rand.Rand) string {
	sep := []string{".", "-", "_", "*"}[rng.IntN(4)]
	return eachWord(s, rng, 0.1, func(w string) string { return join(w, sep) })
}

func zeroWidth(s string, rng *rand.Rand) string {
	zw := []string{"\u200b", "\u200c", "\u200d", "\u2060", "\u00ad"}[rng.IntN(5)]
	return eachWord(s, rng, 0.3, func(w string) string {
		var b strings.Builder
		for i, r := range w {
			if i > 0 && rng.Float64() < 0.5 {
				b.WriteString(zw)
			}
			b.WriteRune(r)
		}
		return b.String()
	})
}

func casing(s string, rng *rand.Rand) string {
	switch rng.IntN(3) {
	case 0:
		return strings.ToUpper(s)
	case 1:
		return strings.ToLower(s)
	}
	return eachWord(s, rng, 0.5, func(w string) string {
		var b strings.Builder
		k := 0
		for _, r := range w {
			if k%2 == 0 {
				r = unicode.ToUpper(r)
			} else {
				r = unicode.ToLower(r)
			}
			k++
			b.WriteRune(r)
		}
		return b.String()
	})
}

// typos swaps, drops or doubles one letter in a few words.
func typos(s string, rng *rand.Rand) string {
	return eachWord(s, rng, 0.15, func(w string) string {
		rs := []rune(w)
		if len(rs) < 4 {
			return w
		}
		i := 1 + rng.IntN(len(rs)-2)
		switch rng.IntN(3) {
		case 0:
			rs[i], rs[i+1] = rs[i+1], rs[i]
		case 1:
			rs = append(rs[:i], rs[i+1:]...)
		default:
			rs = append(rs[:i+1], rs[i:]...)
		}
		return string(rs)
	})
}

var lookAlike = map[rune]rune{'a': 'а', 'e': 'е', 'o': 'о', 'p': 'р', 'c': 'с', 'x': 'х', 'y': 'у', 'i': 'і'}

func confusables(s string, rng *rand.Rand) string {
	return eachWord(s, rng, 0.3, func(w string) string {
		b := make([]byte, 0, len(w)+8)
		for _, r := range w {
			if la, ok := lookAlike[r]; ok && rng.Float64() < 0.5 {
				r = la
			}
			b = utf8.AppendRune(b, r)
		}
		return string(b)
	})
}
