package builtin_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/terroir-ai/terroir/services/inference/builtin"
)

func Example() {
	m, err := builtin.Load()
	if err != nil {
		panic(err)
	}
	messages := []builtin.Message{
		{Role: builtin.RoleSystem, Content: "You are a helpful assistant."},
		{Role: builtin.RoleUser, Content: "Tell me about the whale and the sea."},
	}
	var streamed strings.Builder
	choices, err := m.Chat(context.Background(), messages, builtin.Params{MaxTokens: 40}, func(_ int, delta string) error {
		streamed.WriteString(delta)
		return nil
	})
	if err != nil {
		panic(err)
	}
	c := choices[0]
	fmt.Println(c.FinishReason, c.Text == streamed.String())
	fmt.Println("prompt tokens:", builtin.CountChatTokens(messages))
	// Output:
	// stop true
	// prompt tokens: 26
}

func ExampleEmbed() {
	v, tokens, err := builtin.Embed("The whale surfaced beside the ship.", 256)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(v), tokens)
	// Output: 256 7
}
