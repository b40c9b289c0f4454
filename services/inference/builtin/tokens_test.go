package builtin

import (
	"strings"
	"testing"
)

func TestCountTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want int
	}{
		{"", 0},
		{"hello world", 2},
		{"Hello.\n\nThe whale.", 5},
		{"Tell me about whales.", 5},
		{"Mr. Speaker, $3.5 billion—yes", 11},
		// Special-token text is ordinary text in user content.
		{"<|endoftext|>", 7},
	}
	for _, tt := range tests {
		if got := CountTokens(tt.text); got != tt.want {
			t.Errorf("CountTokens(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
}

func TestCountChatTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		messages []Message
		want     int
	}{
		{"none", nil, 3},
		// 3 per message + "user" (1) + "hello world" (2), + 3 reply priming.
		{"one", []Message{{Role: RoleUser, Content: "hello world"}}, 3 + 1 + 2 + 3},
		{"two", []Message{
			{Role: RoleSystem, Content: "hello world"},
			{Role: RoleUser, Content: "Tell me about whales."},
		}, (3 + 1 + 2) + (3 + 1 + 5) + 3},
		// A name costs 1 plus its tokens ("hello": 1).
		{"named", []Message{{Role: RoleUser, Content: "hello world", Name: "hello"}}, 3 + 1 + 2 + 1 + 1 + 3},
	}
	for _, tt := range tests {
		if got := CountChatTokens(tt.messages); got != tt.want {
			t.Errorf("%s: CountChatTokens = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// The model's token pieces must reproduce text byte for byte, or generated
// text would not be what the token ids say.
func TestPiecesRoundTrip(t *testing.T) {
	t.Parallel()
	v, err := vocab()
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		"Call me Ishmael. Some years ago—never mind how long precisely",
		"naïve café, 日本語のテキスト 🐋🐳 and \"quotes\"\n\n\tend",
	} {
		var b strings.Builder
		for _, id := range v.encode(text) {
			b.WriteString(v.pieces[id])
		}
		if b.String() != text {
			t.Errorf("pieces of %q join to %q", text, b.String())
		}
	}
}

func TestPieceFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		piece string
		want  uint8
	}{
		{" whale", flagWord},
		{" the", flagWord},
		{" at", 0},
		{"Whale", 0}, // no leading space: a sentence start or a word part
		{".", flagSentence},
		{".\n\n", flagSentence | flagNewline},
		{"?\"", flagSentence},
		{"\n", flagNewline | flagSpace},
		{"  ", flagSpace},
		{",", 0},
	}
	for _, tt := range tests {
		if got := pieceFlags(tt.piece); got != tt.want {
			t.Errorf("pieceFlags(%q) = %b, want %b", tt.piece, got, tt.want)
		}
	}
}
