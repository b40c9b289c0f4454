package linear_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// TestAddTextMatchesFeatures checks that the runtime paths (AddText, and
// AddWords on words looked up in advance), which add the
// precomputed sums of the table's words, give exactly the sums of the
// features the trainer sees, for words in and out of the word-class
// table, with and without classes and class pairs.
func TestAddTextMatchesFeatures(t *testing.T) {
	t.Parallel()
	wc, err := linear.ParseWordClasses(gz(t, "slay 7 9\nmurder 7\nhim 3\nnow 4 5 6\nabcdefghijklmnopqrstuvwxyzabc 8\n"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := linear.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	texts := []string{
		"", "slay", "slay him now", "murder murder him", "i will slay him now or never",
		"the quick brown fox", "abcdefghijklmnopqrstuvwxyzabc slay", "a b c slay him",
		strings.Repeat("kill the process and murder him now ", 40),
		"they want to butcher the whole village tonight with an axe",
	}
	for range 50 {
		var b strings.Builder
		for j := range rng.IntN(80) + 1 {
			if j > 0 {
				b.WriteByte(' ')
			}
			for range rng.IntN(30) + 1 {
				b.WriteByte(byte('a' + rng.IntN(26)))
			}
		}
		texts = append(texts, b.String())
	}
	for _, set := range []linear.FeatureSet{0, linear.FeatClasses, linear.FeatClassPairs, linear.FeatClasses | linear.FeatClassPairs} {
		w := &linear.Weights{Bits: linear.MinBits, W: make([]int8, linear.NumHeads<<linear.MinBits), Features: set}
		for i := range w.W {
			w.W[i] = int8(rng.IntN(255) - 127)
		}
		m, err := linear.NewWithClasses(w, wc)
		if err != nil {
			t.Fatal(err)
		}
		checkAddText(t, m, texts)
	}
	checkAddText(t, shipped, texts)
}

func checkAddText(t *testing.T, m *linear.Model, texts []string) {
	t.Helper()
	var scratch []uint32
	for _, text := range texts {
		var want, got linear.Sums
		m.Accumulate(m.AppendFeatures(nil, []byte(text)), &want)
		scratch = m.AddText(scratch, []byte(text), &got)
		if got != want {
			t.Errorf("AddText(%.40q) = %v, want %v", text, got, want)
		}
		var words []linear.Word
		for _, w := range strings.Fields(text) {
			words = append(words, m.Word([]byte(w)))
		}
		got = linear.Sums{}
		scratch = m.AddWords(scratch, words, &got)
		if got != want {
			t.Errorf("AddWords(%.40q) = %v, want %v", text, got, want)
		}
	}
}
