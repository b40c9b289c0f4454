package builtin

import "testing"

// TestGenerationAllocatesPerRequestNotPerToken: what a request allocates
// (the tokenizer's work on the prompt, the request's scratch space, its
// results) does not grow with the tokens it generates, streamed or not.
func TestGenerationAllocatesPerRequestNotPerToken(t *testing.T) {
	m := loadModel(t)
	msgs := []Message{
		{Role: RoleSystem, Content: "You are a helpful assistant."},
		{Role: RoleUser, Content: "Tell me about the whale, the sea and the ship that sailed from Nantucket in winter."},
	}
	discard := func(int, string) error { return nil }
	tests := []struct {
		name string
		p    Params
		emit func(int, string) error
	}{
		{"sampled", Params{Temperature: 1, Seed: ptr(int64(7))}, nil},
		{"sampled, streamed", Params{Temperature: 1, Seed: ptr(int64(7))}, discard},
		{"greedy", Params{}, nil},
		{"top_p", Params{Temperature: 0.8, TopP: 0.9, Seed: ptr(int64(7))}, discard},
	}
	// Growing scratch space (candidate lists, the text) may take a few
	// allocations more for a longer answer; the generation this test
	// guards against took about two per token. The bound is half of one,
	// or one under the race detector, whose sync.Pool drops pooled
	// scratch space at random.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func(maxTokens int) (tokens int, allocs float64) {
				p := tt.p
				p.MaxTokens = maxTokens
				cs, err := m.Chat(t.Context(), msgs, p, tt.emit)
				if err != nil {
					t.Fatal(err)
				}
				return cs[0].CompletionTokens, testing.AllocsPerRun(10, func() { _, _ = m.Chat(t.Context(), msgs, p, tt.emit) })
			}
			shortTokens, short := run(1)
			longTokens, long := run(40)
			if longTokens < 10 {
				t.Fatalf("only %d tokens generated; the test needs a longer answer", longTokens)
			}
			perToken := 0.5
			if raceEnabled {
				perToken = 1
			}
			if slack := max(8, perToken*float64(longTokens)); long > short+slack {
				t.Errorf("%.0f allocations for %d tokens, %.0f for %d: a cost per token", long, longTokens, short, shortTokens)
			}
		})
	}
}
