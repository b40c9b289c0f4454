package builtin

import (
	"slices"
	"testing"
)

func TestStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		stops      []string
		pieces     []string
		wantDeltas []string
		wantText   string
		wantStop   bool
	}{
		{
			name:       "no stops",
			pieces:     []string{"Hel", "lo", " world"},
			wantDeltas: []string{"Hel", "lo", " world"},
			wantText:   "Hello world",
		},
		{
			name:       "stop inside one piece",
			stops:      []string{"lo"},
			pieces:     []string{"Hello", " world"},
			wantDeltas: []string{"Hel"},
			wantText:   "Hel",
			wantStop:   true,
		},
		{
			name:       "stop across pieces is held back, never emitted",
			stops:      []string{"o w"},
			pieces:     []string{"Hello", " ", "world"},
			wantDeltas: []string{"Hell"},
			wantText:   "Hell",
			wantStop:   true,
		},
		{
			name:       "held back text is released when the stop does not follow",
			stops:      []string{"cx"},
			pieces:     []string{"ab", "c", "d"},
			wantDeltas: []string{"ab", "cd"},
			wantText:   "abcd",
		},
		{
			name:       "partial stop at the end is released on close",
			stops:      []string{"world!"},
			pieces:     []string{"Hello", " wor"},
			wantDeltas: []string{"Hello", " ", "wor"},
			wantText:   "Hello wor",
		},
		{
			name:       "the stop completing first wins",
			stops:      []string{"bcdef", "cd"},
			pieces:     []string{"abcdefg"},
			wantDeltas: []string{"ab"},
			wantText:   "ab",
			wantStop:   true,
		},
		{
			name:       "of two completing together, the longer wins",
			stops:      []string{"d", "bcd"},
			pieces:     []string{"abcde"},
			wantDeltas: []string{"a"},
			wantText:   "a",
			wantStop:   true,
		},
		{
			name:       "self-overlapping stop",
			stops:      []string{"aab"},
			pieces:     []string{"xaa", "a", "ab"},
			wantDeltas: []string{"x", "a", "a"},
			wantText:   "xaa",
			wantStop:   true,
		},
		{
			name:       "stop at the very start",
			stops:      []string{"He"},
			pieces:     []string{"Hello"},
			wantDeltas: nil,
			wantText:   "",
			wantStop:   true,
		},
		{
			name:       "UTF-8 character split over pieces",
			pieces:     []string{"caf", "\xc3", "\xa9!"},
			wantDeltas: []string{"caf", "é!"},
			wantText:   "café!",
		},
		{
			name:       "invalid bytes become U+FFFD",
			pieces:     []string{"a\xff", "b"},
			wantDeltas: []string{"a\uFFFD", "b"},
			wantText:   "a\uFFFDb",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var deltas []string
			s := newStream(matchers(tt.stops), func(_ int, d string) error {
				deltas = append(deltas, d)
				return nil
			})
			s.reset(0, 16)
			stopped := false
			for _, p := range tt.pieces {
				var err error
				if stopped, err = s.push(p); err != nil {
					t.Fatal(err)
				}
				if stopped {
					break
				}
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			if stopped != tt.wantStop {
				t.Errorf("stopped = %v, want %v", stopped, tt.wantStop)
			}
			if !slices.Equal(deltas, tt.wantDeltas) {
				t.Errorf("deltas = %q, want %q", deltas, tt.wantDeltas)
			}
			if got := s.text.String(); got != tt.wantText {
				t.Errorf("text = %q, want %q", got, tt.wantText)
			}
		})
	}
}

func TestSentenceEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want bool
	}{
		{"The whale sank.", true},
		{"Is it a whale?", true},
		{"There she blows!\"", true},
		{"He said \"go.\" ", true},
		{"We spent $3.", false},
		{"Thank you, Mr.", false},
		{"the U.S.", false},
		{"and so on,", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := sentenceEnd([]byte(tt.text)); got != tt.want {
			t.Errorf("sentenceEnd(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}
