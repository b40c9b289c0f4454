package builtin

import "testing"

// maxRequestAllocs bounds the allocations of one small request: the
// tokenizer's own (a few per prompt), the request's scratch space and its
// results, but nothing per generated token.
const maxRequestAllocs = 40

// TestGenerationAllocatesPerRequestNotPerToken: a 32-token answer, streamed
// or not, allocates a bounded handful of objects, however many tokens it
// samples.
func TestGenerationAllocatesPerRequestNotPerToken(t *testing.T) {
	m := loadModel(t)
	msgs := []Message{
		{Role: RoleSystem, Content: "You are a helpful assistant."},
		{Role: RoleUser, Content: "Tell me about the whale, the sea and the ship that sailed from Nantucket in winter."},
	}
	discard := func(int, string) error { return nil }
	tests := []struct {
		name string
		run  func() ([]Choice, error)
	}{
		{"chat", func() ([]Choice, error) {
			return m.Chat(t.Context(), msgs, Params{MaxTokens: 32, Temperature: 1, Seed: ptr(int64(7))}, nil)
		}},
		{"chat streamed", func() ([]Choice, error) {
			return m.Chat(t.Context(), msgs, Params{MaxTokens: 32, Temperature: 1, Seed: ptr(int64(7))}, discard)
		}},
		{"chat greedy", func() ([]Choice, error) { return m.Chat(t.Context(), msgs, Params{MaxTokens: 32}, nil) }},
		{"chat top_p", func() ([]Choice, error) {
			return m.Chat(t.Context(), msgs, Params{MaxTokens: 32, Temperature: 0.8, TopP: 0.9, Seed: ptr(int64(7))}, nil)
		}},
		{"completion", func() ([]Choice, error) {
			return m.Generate(t.Context(), "The state of our Union is strong, and the whale", Params{MaxTokens: 32, Temperature: 1, Seed: ptr(int64(7))}, discard)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			if cs[0].CompletionTokens < 8 {
				t.Fatalf("only %d tokens generated; the test needs a longer answer", cs[0].CompletionTokens)
			}
			if n := testing.AllocsPerRun(20, func() { _, _ = tt.run() }); n > maxRequestAllocs {
				t.Errorf("%.0f allocations for %d tokens, want at most %d", n, cs[0].CompletionTokens, maxRequestAllocs)
			}
		})
	}
}

// TestCountChatTokensAllocations: counting a chat prompt tokenises its
// contents only; roles are not tokenised again for every request.
func TestEncodeAllocations(t *testing.T) {
	v, err := vocab()
	if err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(20, func() { v.encode("Tell me about the whale, the sea and the ship that sailed from Nantucket in winter.") })
	t.Logf("encode: %.0f allocations", n)
}
