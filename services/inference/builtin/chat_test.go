package builtin

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

func TestFormatChat(t *testing.T) {
	t.Parallel()
	got := FormatChat([]Message{
		{Role: RoleSystem, Content: "Be brief."},
		{Role: RoleDeveloper, Content: "Answer in English."},
		{Role: RoleUser, Content: "  Where is the whale?\n", Name: "ishmael"},
		{Role: RoleAssistant, Content: "At sea."},
		{Role: RoleTool, Content: "{\"depth\": 300}"},
	})
	want := "System: Be brief.\n\n" +
		"Developer: Answer in English.\n\n" +
		"User (ishmael): Where is the whale?\n\n" +
		"Assistant: At sea.\n\n" +
		"Tool: {\"depth\": 300}\n\n" +
		"Assistant:"
	if got != want {
		t.Errorf("FormatChat =\n%q\nwant\n%q", got, want)
	}
}

var roleMarkers = []string{"System:", "Developer:", "User:", "Assistant:", "Tool:"}

func TestChatReplies(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	conversations := []struct {
		name     string
		messages []Message
	}{
		{"one user message", []Message{{Role: RoleUser, Content: "Tell me about the whale and the sea."}}},
		{"system and user", []Message{
			{Role: RoleSystem, Content: "You are a helpful assistant."},
			{Role: RoleUser, Content: "What should Congress do about jobs and the economy?"},
		}},
		{"multi-turn", []Message{
			{Role: RoleUser, Content: "Who is Captain Ahab?"},
			{Role: RoleAssistant, Content: "The captain of the Pequod."},
			{Role: RoleUser, Content: "what does he hunt"},
		}},
		{"ends with a tool result", []Message{
			{Role: RoleUser, Content: "What is the budget deficit?"},
			{Role: RoleTool, Content: "{\"deficit\": \"large\"}"},
		}},
	}
	for _, tt := range conversations {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range []Params{{}, {Temperature: 0.8, Seed: ptr(int64(3)), N: 3}} {
				emit, deltas := collect()
				cs, err := m.Chat(t.Context(), tt.messages, p, emit)
				if err != nil {
					t.Fatal(err)
				}
				for i, c := range cs {
					reply := c.Text
					if strings.TrimSpace(reply) == "" {
						t.Fatalf("choice %d: empty reply", i)
					}
					if r := []rune(reply)[0]; unicode.IsSpace(r) || unicode.IsLower(r) {
						t.Errorf("choice %d: reply does not start a sentence: %q", i, reply)
					}
					for _, marker := range roleMarkers {
						if strings.Contains(reply, marker) {
							t.Errorf("choice %d: reply contains role marker %q: %q", i, marker, reply)
						}
					}
					for _, msg := range tt.messages {
						if strings.Contains(reply, strings.TrimSpace(msg.Content)) {
							t.Errorf("choice %d: reply echoes a message: %q", i, reply)
						}
					}
					if c.FinishReason != FinishStop {
						t.Errorf("choice %d: finish %q, want a natural stop", i, c.FinishReason)
					}
					if got := strings.Join(deltas[i], ""); got != reply {
						t.Errorf("choice %d: deltas join to %q, reply is %q", i, got, reply)
					}
				}
			}
		})
	}
}

// A reply keeps to the topic of the user's message: it is closer, as an
// embedding, to its own question than to a question on another topic.
func TestChatKeepsToTopic(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	topics := []string{
		"Tell me about the whale, the harpoon and the ship at sea.",
		"What should Congress do about taxes, jobs and the economy?",
	}
	embed := func(s string) []float32 {
		v, _, err := Embed(s, 0)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	q := [][]float32{embed(topics[0]), embed(topics[1])}
	for i, topic := range topics {
		cs, err := m.Chat(t.Context(), []Message{{Role: RoleUser, Content: topic}}, Params{Temperature: 0.8, Seed: ptr(int64(17)), N: 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		closer := 0
		for _, c := range cs {
			r := embed(c.Text)
			if cosine(r, q[i]) > cosine(r, q[1-i]) {
				closer++
			}
			t.Logf("topic %d: %.3f vs %.3f %q", i, cosine(r, q[i]), cosine(r, q[1-i]), c.Text)
		}
		if closer < 6 {
			t.Errorf("topic %d: only %d of 8 replies are closer to their question than to the other", i, closer)
		}
	}
}

func TestChatInvalid(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	tests := []struct {
		name     string
		messages []Message
	}{
		{"no messages", nil},
		{"unknown role", []Message{{Role: "narrator", Content: "Once upon a time"}}},
		{"empty role", []Message{{Content: "hello"}}},
	}
	for _, tt := range tests {
		_, err := m.Chat(t.Context(), tt.messages, Params{}, nil)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != "messages" {
			t.Errorf("%s: error %v, want a ParamError for messages", tt.name, err)
		}
	}
}
