package admit

import (
	"math"
	"testing"
)

// TestTokenEstimateCannotOverflow: prompt + limit × choices saturates at
// math.MaxInt instead of wrapping to a small or negative estimate.
func TestTokenEstimateCannotOverflow(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                   string
		prompt, limit, choices int
		want                   int
	}{
		{"small", 10, 100, 2, 210},
		{"largest limit", 10, math.MaxInt, 1, math.MaxInt},
		{"largest limit, many choices", 10, math.MaxInt, 128, math.MaxInt},
		{"product wraps", 0, math.MaxInt/2 + 1, 2, math.MaxInt},
		{"sum wraps", math.MaxInt - 5, 3, 2, math.MaxInt},
		{"fits exactly", math.MaxInt - 6, 3, 2, math.MaxInt},
	}
	for _, c := range cases {
		if got := tokenEstimate(c.prompt, c.limit, c.choices); got != c.want {
			t.Errorf("%s: tokenEstimate(%d, %d, %d) = %d, want %d", c.name, c.prompt, c.limit, c.choices, got, c.want)
		}
	}
}
