package builtin

import (
	"errors"
	"math"
	"testing"
)

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestEmbedShape(t *testing.T) {
	t.Parallel()
	text := "The whale surfaced beside the ship."
	full, n, err := Embed(text, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != EmbeddingDimensions {
		t.Fatalf("default length %d, want %d", len(full), EmbeddingDimensions)
	}
	if n != CountTokens(text) {
		t.Errorf("tokens = %d, want %d", n, CountTokens(text))
	}
	for _, dims := range []int{1, 2, 3, 7, 64, 256, 1000, 1024, 1536} {
		v, _, err := Embed(text, dims)
		if err != nil {
			t.Fatalf("dims %d: %v", dims, err)
		}
		if len(v) != dims {
			t.Errorf("dims %d: length %d", dims, len(v))
		}
		if d := math.Abs(norm(v) - 1); d > 1e-5 {
			t.Errorf("dims %d: norm off by %g", dims, d)
		}
		// Shortening keeps the prefix of the full vector, re-normalised.
		prefix := norm(full[:dims])
		for i := range v {
			if want := float64(full[i]) / prefix; math.Abs(float64(v[i])-want) > 1e-5 {
				t.Fatalf("dims %d: component %d = %v, want %v", dims, i, v[i], want)
			}
		}
	}
	again, _, _ := Embed(text, 0)
	for i := range full {
		if full[i] != again[i] {
			t.Fatalf("embedding not deterministic at %d", i)
		}
	}
}

func TestEmbedInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text  string
		dims  int
		param string
	}{
		{"whale", -1, "dimensions"},
		{"whale", EmbeddingDimensions + 1, "dimensions"},
		{"", 0, "input"},
		{" \n\t", 8, "input"},
	}
	for _, tt := range tests {
		_, _, err := Embed(tt.text, tt.dims)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != tt.param {
			t.Errorf("Embed(%q, %d) error %v, want a ParamError for %s", tt.text, tt.dims, err, tt.param)
		}
	}
}

func TestEmbedSimilarity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text, similar, unrelated string
		dims                     []int
	}{
		{
			"The whale swam beside the ship.",
			"A huge whale was swimming next to our ship.",
			"Congress passed the budget for the next fiscal year.",
			[]int{1536, 256, 64},
		},
		{
			"How do I reset my password?",
			"I forgot my password and need to reset it.",
			"The harpooneer sharpened his iron on the deck.",
			[]int{1536, 256, 64},
		},
		{
			"Inflation and unemployment hurt the economy.",
			"The economy suffers from high unemployment and inflation.",
			"Queequeg sat by the fire carving his idol.",
			[]int{1536, 256, 64},
		},
		{
			// A single word has few features: only the full vector separates
			// them reliably from collisions.
			"whales",
			"whale",
			"budget",
			[]int{1536},
		},
	}
	for _, tt := range tests {
		for _, dims := range tt.dims {
			a, _, _ := Embed(tt.text, dims)
			b, _, _ := Embed(tt.similar, dims)
			c, _, _ := Embed(tt.unrelated, dims)
			sim, unrel := cosine(a, b), cosine(a, c)
			if sim <= unrel+0.1 {
				t.Errorf("dims %d: %q: similar %.3f, unrelated %.3f", dims, tt.text, sim, unrel)
			}
		}
	}
}
