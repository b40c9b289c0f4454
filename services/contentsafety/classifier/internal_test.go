package classifier

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestAutomatonAgainstNaive checks the Aho–Corasick automaton against a
// naive search on random texts over a small alphabet, where overlaps and
// shared suffixes are frequent.
func TestAutomatonAgainstNaive(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abc "[rng.IntN(4)]
		}
		return string(b)
	}
	for round := 0; round < 200; round++ {
		var pats []string
		var tb acBuilder
		tb.init()
		for i := 0; i < 1+rng.IntN(8); i++ {
			p := strings.TrimSpace(word(1 + rng.IntN(4)))
			if p == "" {
				continue
			}
			tb.add([]byte(p), int32(len(pats)))
			pats = append(pats, p)
		}
		a := tb.build()
		text := word(40)
		var got, want []string
		a.scan([]byte(text), func(p int32, end int) { got = append(got, pats[p]+"@"+itoa(end)) })
		for i := range text {
			for _, p := range pats {
				if strings.HasPrefix(text[i:], p) {
					want = append(want, p+"@"+itoa(i+len(p)))
				}
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("patterns %q text %q: got %v want %v", pats, text, got, want)
		}
	}
}

func itoa(n int) string { return strings.Repeat("|", n) }

func TestLexiconErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, src, want string }{
		{"no equals", "rule violence.x high kill", "line 1"},
		{"unknown category", "rule weather.x high = rain", "category"},
		{"missing severity", "rule violence.x = kill", "severity"},
		{"detection with severity", "rule jailbreak.x high = dan", "no severity"},
		{"unknown class", "\nrule violence.x high = @NOPE", "line 2"},
		{"bad gap", "rule violence.x high = kill *99 you", "gap"},
		{"only optional", "rule violence.x high = kill?", "required"},
		{"duplicate class", "class A = a\nclass A = b", "twice"},
		{"unbalanced brace", "rule violence.x high = kill{s", "brace"},
	}
	for _, tt := range tests {
		_, err := parseLexicon(tt.src)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestLexiconSyntax(t *testing.T) {
	t.Parallel()
	c, err := newFromSource(`
class NEG = not
class WHO = you | my boss
rule violence.test high = hit @WHO !with_kindness
rule violence.end medium = bye $
rule violence.context.game safe = in_the_game`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		text string
		want string
	}{
		{"I will hit my boss", "high"},
		{"I will hit my boss with kindness", "safe"},
		{"I will not hit you", "safe"},
		{"bye", "medium"},
		{"bye now", "safe"},
		{"bye. see you", "medium"},
		{"i hit you in the game", "high"},
		{"bye in the game", "safe"},
	}
	for _, tt := range tests {
		if got := c.Classify(tt.text, "prompt").Severity["violence"]; string(got) != tt.want {
			t.Errorf("%q: violence = %s, want %s", tt.text, got, tt.want)
		}
	}
}

// TestBareContraction checks the quick rejection of words that are not
// bare contractions against the table itself.
func TestBareContraction(t *testing.T) {
	t.Parallel()
	for w, want := range bareContractions {
		if got := bareContraction([]byte(w)); !slices.Equal(got, want) {
			t.Errorf("bareContraction(%q) = %q, want %q", w, got, want)
		}
	}
	for _, w := range []string{"", "d", "don", "dont1", "want", "that", "shouldntt", "é", "DONT", "i"} {
		if got := bareContraction([]byte(w)); got != nil {
			t.Errorf("bareContraction(%q) = %q, want none", w, got)
		}
	}
}
