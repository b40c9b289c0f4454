package linear_test

import (
	"compress/gzip"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/services/contentsafety/classifier/linear"
)

func TestShippedWeightsLoad(t *testing.T) {
	t.Parallel()
	m, err := linear.Shipped()
	if err != nil {
		t.Fatal(err)
	}
	if m.Bits() < linear.MinBits {
		t.Errorf("bits %d", m.Bits())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	w := &linear.Weights{Bits: linear.MinBits, W: make([]int8, linear.NumHeads<<linear.MinBits)}
	for i := range w.W {
		w.W[i] = int8(i%255 - 127)
	}
	for h := range linear.NumHeads {
		w.Bias[h], w.Scale[h], w.Threshold[h] = float32(h)-6, 0.01*float32(h+1), float32(h)/10
	}
	w.JailbreakVeto = 2.5
	data, err := w.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := linear.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Bits != w.Bits || got.Bias != w.Bias || got.Scale != w.Scale || got.Threshold != w.Threshold || got.JailbreakVeto != w.JailbreakVeto || string(int8Bytes(got.W)) != string(int8Bytes(w.W)) {
		t.Error("weights differ after a round trip")
	}
	if _, err := linear.Unmarshal(data[:len(data)/2]); err == nil {
		t.Error("a truncated file was accepted")
	}
	m, err := linear.New(got)
	if err != nil {
		t.Fatal(err)
	}
	// the jailbreak head's threshold is 1.2: the veto clears below -1.3
	for _, c := range []struct {
		logit float32
		veto  bool
	}{{-1.4, true}, {-1.2, false}, {1.3, false}} {
		var lg [linear.NumHeads]float32
		lg[linear.HeadJailbreak] = c.logit
		if got := m.VetoesJailbreak(&lg); got != c.veto {
			t.Errorf("VetoesJailbreak at logit %g = %v, want %v", c.logit, got, c.veto)
		}
	}
}

func int8Bytes(w []int8) []byte {
	b := make([]byte, len(w))
	for i, v := range w {
		b[i] = byte(v)
	}
	return b
}

func TestFeatures(t *testing.T) {
	t.Parallel()
	a := linear.AppendFeatures(nil, []byte("kill the process"), 18)
	b := linear.AppendFeatures(nil, []byte("kill the process"), 18)
	if len(a) == 0 || string(uint32Bytes(a)) != string(uint32Bytes(b)) {
		t.Fatal("features are not deterministic")
	}
	// 3 words, 2 pairs, and the 4- and 5-grams of #kill#, #the# and
	// #process#
	want := 3 + 2
	for _, w := range []string{"kill", "the", "process"} {
		n := len(w) + 2
		for g := 4; g <= 5; g++ {
			want += max(0, n-g+1)
		}
	}
	if len(a) != want {
		t.Errorf("%d features, want %d", len(a), want)
	}
	for _, f := range a {
		if f&^(1<<31) >= 1<<18 {
			t.Fatalf("feature %x outside the table", f)
		}
	}
	if len(linear.AppendFeatures(nil, nil, 18)) != 0 {
		t.Error("features of empty text")
	}
}

func uint32Bytes(v []uint32) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x), byte(x>>8), byte(x>>16), byte(x>>24))
	}
	return b
}

// BenchmarkScore hashes and scores 1 KB chunks of lower-cased corpus text
// with the shipped model's features, as Classify does (the linear model's
// share of Classify), and reports µs per KB.
func BenchmarkScore(b *testing.B) {
	m, err := linear.Shipped()
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open("../testdata/corpus/moby-dick.txt.gz")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	data, err := io.ReadAll(io.LimitReader(gz, 64<<10))
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Join(strings.Fields(strings.ToLower(string(data))), " ")
	var chunks [][]byte
	for i := 0; i+1024 <= len(text); i += 1024 {
		chunks = append(chunks, []byte(text[i:i+1024]))
	}
	var feats []uint32
	var lg [linear.NumHeads]float32
	b.SetBytes(1024)
	n := 0
	for b.Loop() {
		var s linear.Sums
		feats = m.AddText(feats, chunks[n%len(chunks)], &s)
		m.LogitsOf(&s, &lg)
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(n), "µs/KB")
}

// TestLogitsAgainstNaive checks the lane arithmetic of Logits against a
// plain sum over the weights, with more features than one lane flush.
func TestLogitsAgainstNaive(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	w := &linear.Weights{Bits: linear.MinBits, W: make([]int8, linear.NumHeads<<linear.MinBits)}
	for i := range w.W {
		w.W[i] = int8(rng.IntN(255) - 127)
	}
	for h := range linear.NumHeads {
		w.Bias[h], w.Scale[h] = rng.Float32()-0.5, rng.Float32()/100
	}
	m, err := linear.New(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 255, 256, 257, 1000} {
		feats := make([]uint32, n)
		for i := range feats {
			feats[i] = uint32(rng.IntN(1<<linear.MinBits)) | uint32(rng.IntN(2))<<31
		}
		var got [linear.NumHeads]float32
		m.Logits(feats, &got)
		for h := range linear.NumHeads {
			var sum int64
			for _, f := range feats {
				v := int64(w.W[int(f&^(1<<31))*linear.NumHeads+h])
				if f>>31 != 0 {
					v = -v
				}
				sum += v
			}
			want := w.Bias[h] + w.Scale[h]*float32(sum)
			if math.Abs(float64(got[h]-want)) > 1e-4 {
				t.Fatalf("%d features, head %d: %v, want %v", n, h, got[h], want)
			}
		}
	}
}

// BenchmarkShipped decodes the shipped weights and word classes and
// builds the model with its table of known words (the cost of loading).
func BenchmarkShipped(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := linear.Shipped(); err != nil {
			b.Fatal(err)
		}
	}
}
