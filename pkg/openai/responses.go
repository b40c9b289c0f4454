package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Choice is a choice of a chat completion (Message), a chat completion
// chunk (Delta) or a text completion and its chunks (Text), as content
// safety reads it.
type Choice struct {
	Index        int               `json:"index"`
	Message      *AssistantMessage `json:"message,omitempty"`
	Delta        *AssistantMessage `json:"delta,omitempty"`
	Text         *string           `json:"text,omitempty"`
	FinishReason *string           `json:"finish_reason"`
	Logprobs     json.RawMessage   `json:"logprobs,omitempty"`
	// Other holds every other field of the choice an upstream sent:
	// content safety reads the text in them too.
	Other map[string]json.RawMessage `json:"-"`
}

// knownChoiceFields are the fields Choice reads itself (and the filter
// results content safety writes).
var knownChoiceFields = []string{"index", "message", "delta", "text", "finish_reason", "logprobs", "content_filter_results"}

// UnmarshalJSON reads the known fields and keeps the others in Other.
func (c *Choice) UnmarshalJSON(b []byte) error {
	type plain Choice
	var err error
	c.Other, err = decodeKnown(b, (*plain)(c), knownChoiceFields)
	return err
}

// AssistantMessage is what a model wrote in a choice, or a piece of it
// in a delta.
type AssistantMessage struct {
	Role string `json:"role,omitempty"`
	// Content is a string, null, or (from some upstreams) content parts.
	Content      json.RawMessage `json:"content,omitempty"`
	Refusal      *string         `json:"refusal,omitempty"`
	ToolCalls    []ToolCall      `json:"tool_calls,omitempty"`
	FunctionCall *FunctionCall   `json:"function_call,omitempty"`
	// Other holds every other field an upstream sent (reasoning_content,
	// reasoning, audio with its transcript, annotations, …): content
	// safety reads the text in them too, so no upstream's naming of
	// reasoning text escapes the filter.
	Other map[string]json.RawMessage `json:"-"`
}

// knownMessageFields are the fields AssistantMessage reads itself.
var knownMessageFields = []string{"role", "content", "refusal", "tool_calls", "function_call"}

// UnmarshalJSON reads the known fields and keeps the others in Other.
func (m *AssistantMessage) UnmarshalJSON(b []byte) error {
	type plain AssistantMessage
	var err error
	m.Other, err = decodeKnown(b, (*plain)(m), knownMessageFields)
	return err
}

// decodeKnown decodes b into v (a type without its own UnmarshalJSON)
// and returns b's fields that are not among known, nil when there are
// none.
func decodeKnown(b []byte, v any, known []string) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for k := range all {
		if slices.Contains(known, k) {
			delete(all, k)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// otherTexts calls fn with the text of every field of other, in key
// order, at param.<key>.
func otherTexts(param string, other map[string]json.RawMessage, fn func(param, text string, args bool)) {
	keys := make([]string, 0, len(other))
	for k := range other {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fn(param+"."+k, JSONText(other[k]), false)
	}
}

// ChoiceKind is the object a choice belongs to.
type ChoiceKind int

// Choice kinds.
const (
	ChatChoice ChoiceKind = iota
	ChatChunkChoice
	TextChoice
)

// KindOf returns the kind of the choices of an object of type object
// ("chat.completion", "chat.completion.chunk", "text_completion").
func KindOf(object string) ChoiceKind {
	switch object {
	case "chat.completion.chunk":
		return ChatChunkChoice
	case "text_completion":
		return TextChoice
	}
	return ChatChoice
}

// TextFields returns every text of the choice, in order: text, content
// (string or parts), refusal, tool calls (function names and the strings
// in their arguments), the legacy function_call, and the text of every
// other field of the message (reasoning and the like). Arguments are
// decoded whole (see ArgumentsText); a stream decodes its argument
// pieces with an ArgumentsDecoder instead, through Pieces. Logprobs are
// not read: they repeat the text's tokens, and a blocked choice drops
// them.
func (c *Choice) TextFields() []TextField {
	var s textSink
	c.each(func(param, text string, args bool) {
		if args {
			text = ArgumentsText(text)
		}
		s.add(param, text)
	})
	return s
}

// Pieces calls fn with every text of the choice as it came, marking
// tool-call arguments (which a stream receives in pieces of JSON text)
// with args set.
func (c *Choice) Pieces(fn func(param, text string, args bool)) { c.each(fn) }

func (c *Choice) each(fn func(param, text string, args bool)) {
	p := fmt.Sprintf("choices[%d]", c.Index)
	if c.Text != nil {
		fn(p+".text", *c.Text, false)
	}
	for _, nm := range [2]struct {
		name string
		m    *AssistantMessage
	}{{"message", c.Message}, {"delta", c.Delta}} {
		name, m := nm.name, nm.m
		if m == nil {
			continue
		}
		mp := p + "." + name
		text, parts, err := contentParts(m.Content)
		switch {
		case text != nil:
			fn(mp+".content", *text, false)
		case err != nil:
			fn(mp+".content", JSONText(m.Content), false)
		}
		for j, part := range parts {
			pp := fmt.Sprintf("%s.content[%d]", mp, j)
			switch {
			case part.Text != nil:
				fn(pp+".text", *part.Text, false)
			case part.Refusal != nil:
				fn(pp+".refusal", *part.Refusal, false)
			}
		}
		if m.Refusal != nil {
			fn(mp+".refusal", *m.Refusal, false)
		}
		for k, tc := range m.ToolCalls {
			i := k
			if tc.Index != nil {
				i = *tc.Index
			}
			tp := fmt.Sprintf("%s.tool_calls[%d].function", mp, i)
			fn(tp+".name", tc.Function.Name, false)
			fn(tp+".arguments", tc.Function.Arguments, true)
		}
		if m.FunctionCall != nil {
			fn(mp+".function_call.name", m.FunctionCall.Name, false)
			fn(mp+".function_call.arguments", m.FunctionCall.Arguments, true)
		}
		otherTexts(mp, m.Other, fn)
	}
	otherTexts(p, c.Other, fn)
}

// AlternativesText returns the tokens the model did not choose that the
// choice's logprobs offer (top_logprobs of chat and of completions),
// separated by spaces: text the app receives besides the choice's own,
// which content safety reads too. TextFields leaves logprobs out, as the
// chosen tokens repeat the text.
func (c *Choice) AlternativesText() string {
	if isNull(c.Logprobs) {
		return ""
	}
	var lp struct {
		Content []struct {
			TopLogprobs []struct {
				Token string `json:"token"`
			} `json:"top_logprobs"`
		} `json:"content"`
		Refusal []struct {
			TopLogprobs []struct {
				Token string `json:"token"`
			} `json:"top_logprobs"`
		} `json:"refusal"`
		// completions: one map of token to log probability per position
		TopLogprobs []map[string]float64 `json:"top_logprobs"`
	}
	if json.Unmarshal(c.Logprobs, &lp) != nil {
		return JSONText(c.Logprobs)
	}
	var b []byte
	add := func(tok string) {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, tok...)
	}
	for _, pos := range append(lp.Content, lp.Refusal...) {
		for _, alt := range pos.TopLogprobs {
			add(alt.Token)
		}
	}
	for _, pos := range lp.TopLogprobs {
		toks := make([]string, 0, len(pos))
		for t := range pos {
			toks = append(toks, t)
		}
		slices.Sort(toks)
		for _, t := range toks {
			add(t)
		}
	}
	return string(b)
}

// BlockedChoice is the whole of a choice that content safety withheld:
// built from this allow-list of fields, so that nothing else a model
// returned (content, refusal, tool calls, reasoning, logprobs, audio)
// can carry the blocked text to the app.
type BlockedChoice struct {
	Index                int                   `json:"index"`
	Message              *BlockedMessage       `json:"message,omitempty"`
	Delta                *BlockedDelta         `json:"delta,omitempty"`
	Text                 *string               `json:"text,omitempty"`
	Logprobs             *struct{}             `json:"logprobs"`
	FinishReason         string                `json:"finish_reason"`
	ContentFilterResults *ContentFilterResults `json:"content_filter_results"`
}

// BlockedMessage is the message of a blocked choice: content and refusal
// null.
type BlockedMessage struct {
	Role    string  `json:"role"`
	Content *string `json:"content"`
	Refusal *string `json:"refusal"`
}

// BlockedDelta is the last delta of a blocked streamed choice: empty, or
// naming the role when nothing of the choice reached the app.
type BlockedDelta struct {
	Role string `json:"role,omitempty"`
}

// NewBlockedChoice returns choice index of kind, withheld with the given
// filter results and finish_reason "content_filter". For a chunk, role
// names the assistant when none of the choice reached the app yet, as
// the SDKs expect a choice's first delta to.
func NewBlockedChoice(kind ChoiceKind, index int, results ContentFilterResults, role bool) BlockedChoice {
	b := BlockedChoice{Index: index, FinishReason: "content_filter", ContentFilterResults: &results}
	switch kind {
	case ChatChoice:
		b.Message = &BlockedMessage{Role: "assistant"}
	case ChatChunkChoice:
		b.Delta = &BlockedDelta{}
		if role {
			b.Delta.Role = "assistant"
		}
	default:
		empty := ""
		b.Text = &empty
	}
	return b
}

// Completion is a chat completion, a chat completion chunk or a text
// completion (Object says which) as content safety passes it on: its
// choices, each read with Choice, and prompt_filter_results are typed;
// every other field (id, created, model, usage, system_fingerprint,
// service_tier, an upstream's own) is kept as the model sent it.
type Completion struct {
	Object string
	// Choices are the choices as sent; nil when the object has none
	// (an embeddings list).
	Choices []json.RawMessage
	// PromptFilterResults is set by content safety on a non-streamed
	// answer.
	PromptFilterResults []PromptFilterResult
	rest                map[string]json.RawMessage
}

// UnmarshalJSON reads a completion object.
func (c *Completion) UnmarshalJSON(b []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	if raw, ok := all["object"]; ok {
		if err := json.Unmarshal(raw, &c.Object); err != nil {
			return fmt.Errorf("object: %w", err)
		}
	}
	if raw, ok := all["choices"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &c.Choices); err != nil {
			return fmt.Errorf("choices: %w", err)
		}
		if c.Choices == nil {
			c.Choices = []json.RawMessage{}
		}
	}
	if raw, ok := all["prompt_filter_results"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &c.PromptFilterResults); err != nil {
			return fmt.Errorf("prompt_filter_results: %w", err)
		}
	}
	delete(all, "choices")
	delete(all, "prompt_filter_results")
	c.rest = all
	return nil
}

// MarshalJSON writes the completion with its choices as they are now.
func (c Completion) MarshalJSON() ([]byte, error) {
	out := make(map[string]json.RawMessage, len(c.rest)+3)
	for k, v := range c.rest {
		out[k] = v
	}
	if c.Object != "" {
		raw, err := json.Marshal(c.Object)
		if err != nil {
			return nil, err
		}
		out["object"] = raw
	}
	if c.Choices != nil {
		raw, err := json.Marshal(c.Choices)
		if err != nil {
			return nil, err
		}
		out["choices"] = raw
	}
	if c.PromptFilterResults != nil {
		raw, err := json.Marshal(c.PromptFilterResults)
		if err != nil {
			return nil, err
		}
		out["prompt_filter_results"] = raw
	}
	return json.Marshal(out)
}

// knownCompletionFields are the top-level fields of the wire shapes
// besides choices and prompt_filter_results: an embeddings list's data,
// and what carries no text of the model's.
var knownCompletionFields = []string{"id", "object", "created", "model", "system_fingerprint", "service_tier", "usage", "data"}

// OtherText returns the text of every top-level field of c that is not
// part of the wire shapes (an upstream's own), which content safety
// reads like a choice's; "" when there is none.
func (c *Completion) OtherText() string {
	var s textSink
	keys := make([]string, 0, len(c.rest))
	for k := range c.rest {
		if !slices.Contains(knownCompletionFields, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		s.add(k, JSONText(c.rest[k]))
	}
	return Join(s)
}

// DropOther removes the top-level fields OtherText reads, when content
// safety withholds them.
func (c *Completion) DropOther() {
	for k := range c.rest {
		if !slices.Contains(knownCompletionFields, k) {
			delete(c.rest, k)
		}
	}
}

// WithChoices returns a copy of c (its other fields shared) holding
// choices instead of its own.
func (c Completion) WithChoices(choices ...json.RawMessage) Completion {
	c.Choices = choices
	return c
}

// AnnotateChoice returns a choice that passed the filter with its filter
// results added, the rest of it as the model sent it.
func AnnotateChoice(choice json.RawMessage, results ContentFilterResults) (json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(choice, &all); err != nil {
		return nil, fmt.Errorf("annotating a choice: %w", err)
	}
	raw, err := json.Marshal(results)
	if err != nil {
		return nil, err
	}
	all["content_filter_results"] = raw
	return json.Marshal(all)
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}
