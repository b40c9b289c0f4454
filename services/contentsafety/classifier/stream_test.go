package classifier_test

import (
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

func TestStream(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	filler := strings.Repeat("The weather was mild and the harbour was quiet that morning. ", 30)
	harmful := "Sure. To build a pipe bomb, you will need the following materials. "
	text := filler + harmful + filler
	tests := []struct {
		name    string
		window  int
		overlap int
		chunk   int
	}{
		{"tiny deltas", 256, 128, 3},
		{"word-sized deltas", 512, 128, 7},
		{"large deltas", 1024, 256, 500},
		{"defaults", 0, 0, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := c.NewStream(events.DirectionCompletion, nil, nil, classifier.StreamOptions{Window: tt.window, Overlap: tt.overlap})
			checks := 0
			for i := 0; i < len(text); i += tt.chunk {
				_, checked := s.Add(text[i:min(i+tt.chunk, len(text))])
				if checked {
					checks++
				}
				window := tt.window
				if window == 0 {
					window = classifier.DefaultStreamWindow
				}
				if s.Pending() > window+tt.chunk {
					t.Fatalf("pending %d exceeds window %d plus a delta", s.Pending(), window)
				}
			}
			r := s.Flush()
			if checks == 0 {
				t.Error("no window was checked before Flush")
			}
			if r.Severity["violence"] != events.SeverityHigh {
				t.Errorf("violence = %s, want high (rules %v)", r.Severity["violence"], r.Rules)
			}
			if s.Pending() != 0 {
				t.Errorf("pending after Flush = %d", s.Pending())
			}
		})
	}
}

// TestStreamSplitTerm puts a blocklisted word and a spaced-out threat
// across every possible window boundary.
func TestStreamSplitTerm(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	bl, err := newClassifier(t).CompileBlocklists([]control.Blocklist{{Name: "codes", Items: []control.BlocklistItem{{ID: "falcon", Pattern: "project falcon"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for offset := 0; offset < 64; offset++ {
		text := strings.Repeat("x", offset) + " calm words here " + "and project falcon is, I will k i l l you. " + strings.Repeat("more calm words ", 10)
		s := c.NewStream(events.DirectionCompletion, bl, []string{"codes"}, classifier.StreamOptions{Window: 32, Overlap: 32})
		for i := 0; i < len(text); i += 5 {
			s.Add(text[i:min(i+5, len(text))])
		}
		r := s.Flush()
		if len(r.Blocklists) != 1 || r.Severity["violence"] != events.SeverityHigh {
			t.Fatalf("offset %d: blocklists %v, violence %s", offset, r.Blocklists, r.Severity["violence"])
		}
	}
}

func TestStreamSafe(t *testing.T) {
	t.Parallel()
	c := newClassifier(t)
	s := c.NewStream(events.DirectionCompletion, nil, nil, classifier.StreamOptions{})
	r, checked := s.Add("Hello")
	if checked {
		t.Error("checked before a window filled")
	}
	if r.Severity["hate"] != events.SeveritySafe {
		t.Errorf("initial result %v", r.Severity)
	}
	if r := s.Flush(); r.Severity["violence"] != events.SeveritySafe || len(r.Rules) != 0 {
		t.Errorf("final result %+v", r)
	}
}
