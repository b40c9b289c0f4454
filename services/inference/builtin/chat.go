package builtin

import (
	"context"
	"slices"
	"strings"
)

// Chat roles.
const (
	RoleSystem    = "system"
	RoleDeveloper = "developer"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

var roleLabels = map[string]string{
	RoleSystem:    "System",
	RoleDeveloper: "Developer",
	RoleUser:      "User",
	RoleAssistant: "Assistant",
	RoleTool:      "Tool",
}

// Message is one message of a chat conversation.
type Message struct {
	// Role is RoleSystem, RoleDeveloper, RoleUser, RoleAssistant or
	// RoleTool.
	Role string
	// Content is the message text.
	Content string
	// Name optionally names the participant; it appears in the prompt and
	// counts towards billed tokens (see CountChatTokens).
	Name string
}

// FormatChat renders messages as the prompt the model continues: one
// paragraph per message, "Role: content" (or "Role (name): content"),
// ending with "Assistant:" for the reply. Roles are written as given if
// unknown; Chat rejects them.
func FormatChat(messages []Message) string {
	var b strings.Builder
	for _, m := range messages {
		b.WriteString(label(m.Role))
		if m.Name != "" {
			b.WriteString(" (")
			b.WriteString(m.Name)
			b.WriteString(")")
		}
		b.WriteString(": ")
		b.WriteString(strings.TrimSpace(m.Content))
		b.WriteString("\n\n")
	}
	b.WriteString(roleLabels[RoleAssistant])
	b.WriteString(":")
	return b.String()
}

func label(role string) string {
	if l, ok := roleLabels[role]; ok {
		return l
	}
	return role
}

// chatStops end a reply where the model would start another message.
func chatStops() []*matcher {
	out := make([]*matcher, 0, len(roleLabels))
	for _, r := range []string{RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool} {
		out = append(out, newMatcher("\n"+roleLabels[r]+":"))
	}
	return out
}

// Chat generates the assistant's reply to messages (at least one; roles as
// in Message) with the same parameters, limits and streaming as Generate.
// The reply is what the model writes after FormatChat(messages). Since the
// role markers are not text the model has learned, its first token is
// predicted from the end of the last user message (or, without one, of the
// last message), as the next sentence; the informative words of that
// message are favoured throughout, so the reply keeps to its topic. A reply
// starts without white space and never contains a role marker.
func (m *Model) Chat(ctx context.Context, messages []Message, p Params, emit func(choice int, delta string) error) ([]Choice, error) {
	p, err := p.normalize()
	if err != nil {
		return nil, err
	}
	if len(messages) == 0 {
		return nil, errParam("messages", "at least one message is required")
	}
	for _, msg := range messages {
		if _, ok := roleLabels[msg.Role]; !ok {
			return nil, errParam("messages", "role must be one of system, developer, user, assistant, tool")
		}
	}
	topic := messages[len(messages)-1].Content
	for _, msg := range slices.Backward(messages) {
		if msg.Role == RoleUser {
			topic = msg.Content
			break
		}
	}
	topicToks := m.v.encode(topic)
	if !sentenceEnd([]byte(strings.TrimSpace(topic))) {
		// Start the reply as a new sentence even after an unpunctuated
		// message.
		topicToks = append(topicToks, m.v.period...)
	}
	stops := m.chatStops
	if len(p.Stop) > 0 {
		stops = append(matchers(p.Stop), m.chatStops...)
	}
	r := &request{
		p:        p,
		prompt:   m.startHistory(topicToks),
		affinity: m.affinity(topicToks[max(0, len(topicToks)-affinityWindow):]),
		stops:    stops,
		chat:     true,
		seed:     seedOf(p.Seed),
	}
	return m.run(ctx, r, emit)
}
