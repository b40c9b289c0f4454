package linear_test

import (
	"bytes"
	"compress/gzip"
	"slices"
	"testing"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

// TestShippedWordClasses checks that the embedded table gives words of
// like meaning, including inflected forms, a class in common, and leaves
// function words without one.
func TestShippedWordClasses(t *testing.T) {
	t.Parallel()
	wc, err := linear.ShippedWordClasses()
	if err != nil {
		t.Fatal(err)
	}
	if wc.Len() < 50_000 {
		t.Errorf("%d word forms", wc.Len())
	}
	shares := func(a, b string) bool {
		for _, c := range wc.Of([]byte(a)) {
			if slices.Contains(wc.Of([]byte(b)), c) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct{ a, b string }{
		{"slay", "murder"},
		{"slain", "murder"},
		{"murdered", "kill"},
		{"butcher", "kill"},
		{"pistol", "rifle"},
		{"stabbed", "stab"},
		{"whore", "prostitute"},
	} {
		if !shares(c.a, c.b) {
			t.Errorf("%q and %q share no class (%v, %v)", c.a, c.b, wc.Of([]byte(c.a)), wc.Of([]byte(c.b)))
		}
	}
	for _, w := range []string{"the", "will", "can", "a", "zzzqx"} {
		if got := wc.Of([]byte(w)); got != nil {
			t.Errorf("%q has classes %v", w, got)
		}
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestParseWordClassesRejects(t *testing.T) {
	t.Parallel()
	for name, table := range map[string]string{
		"empty":        "# nothing\n",
		"no classes":   "kill\n",
		"not a number": "kill x\n",
		"repeated":     "kill 1\nkill 2\n",
	} {
		if _, err := linear.ParseWordClasses(gz(t, table)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := linear.ParseWordClasses([]byte("not gzip")); err == nil {
		t.Error("accepted a file that is not gzip")
	}
}

// TestClassFeatures checks that word classes make sentences with
// synonyms share features the plain features do not give them, and that
// the optional features only add to the plain ones.
func TestClassFeatures(t *testing.T) {
	t.Parallel()
	wc, err := linear.ParseWordClasses(gz(t, "slay 7 9\nmurder 7\nhim 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	const bits = 18
	common := func(f *linear.Features) int {
		a := f.Append(nil, []byte("slay him now"))
		b := f.Append(nil, []byte("murder him now"))
		n := 0
		for _, x := range a {
			if slices.Contains(b, x) {
				n++
			}
		}
		return n
	}
	plain := &linear.Features{Bits: bits}
	classes := &linear.Features{Bits: bits, Set: linear.FeatClasses, Classes: wc}
	pairs := &linear.Features{Bits: bits, Set: linear.FeatClasses | linear.FeatClassPairs, Classes: wc}
	p, c, cp := common(plain), common(classes), common(pairs)
	// classes 7 and 3
	if c != p+2 {
		t.Errorf("with classes %d features in common, without %d; want two more", c, p)
	}
	// both pair class 7 with class 3, and class 3 with "now"
	if cp != c+2 {
		t.Errorf("with class pairs %d features in common, with classes alone %d; want two more", cp, c)
	}
	base := plain.Append(nil, []byte("slay him now"))
	got := pairs.Append(nil, []byte("slay him now"))
	// slay: 2 classes; him: 1; pairs slay-him and him-now
	if len(got) != len(base)+3+2 {
		t.Errorf("%d features with classes and pairs, %d without", len(got), len(base))
	}
	if string(uint32Bytes(linear.AppendFeatures(nil, []byte("slay him now"), bits))) != string(uint32Bytes(base)) {
		t.Error("AppendFeatures differs from Features without options")
	}
}

func TestWeightsFeatureSet(t *testing.T) {
	t.Parallel()
	w := &linear.Weights{Bits: linear.MinBits, W: make([]int8, linear.NumHeads<<linear.MinBits), Features: linear.FeatClasses | linear.FeatClassPairs}
	data, err := w.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := linear.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Features != w.Features {
		t.Errorf("features %#x after a round trip, want %#x", got.Features, w.Features)
	}
	if _, err := linear.NewWithClasses(got, nil); err == nil {
		t.Error("a model using word classes was built without a table")
	}
	if _, err := linear.New(got); err != nil {
		t.Errorf("New with the embedded table: %v", err)
	}
	w.Features = 0x80
	if _, err := w.Marshal(); err == nil {
		t.Error("unknown feature bits were written")
	}
}
