// Package openai holds the OpenAI API's wire shapes that more than one
// service reads or writes: request bodies with their validation (which
// names the offending parameter, as OpenAI does), response and chunk
// objects, and Azure's content-filter annotations on them.
package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// FieldError is a request error about one parameter.
type FieldError struct {
	Param   string
	Message string
}

func (e *FieldError) Error() string { return e.Message }

func invalid(param, format string, args ...any) *FieldError {
	return &FieldError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// MaxQuoted is the longest key or value of a request that an error
// message may quote back: longer than any parameter name or enumerated
// value, anything longer may be prompt text, which never reaches an error
// message.
const MaxQuoted = 32

// notValue is ", not <v>" for an error message about a value the caller
// chose, or "" when v is longer than any valid value: a long one may be
// prompt text, which never reaches an error message.
func notValue(v string) string {
	if len(v) > MaxQuoted {
		return ""
	}
	return fmt.Sprintf(", not %q", v)
}

// StringOrList is a parameter that is a string or a list of strings
// (stop sequences).
type StringOrList []string

// UnmarshalJSON accepts a string, a list of strings or null.
func (s *StringOrList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = StringOrList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string", Type: reflect.TypeFor[StringOrList]()}
	}
	*s = many
	return nil
}

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role string `json:"role"`
	// Content is a string, an array of content parts, or null.
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Refusal    *string         `json:"refusal,omitempty"`
	Audio      json.RawMessage `json:"audio,omitempty"`
	// FunctionCall is the deprecated form of ToolCalls.
	FunctionCall *FunctionCall `json:"function_call,omitempty"`
}

// Text returns the message's text: its string content, or its text
// parts joined by newlines.
func (m ChatMessage) Text() (string, error) {
	text, parts, err := contentParts(m.Content)
	if err != nil || text != nil {
		return deref(text), err
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" && p.Text != nil {
			texts = append(texts, *p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// StreamOptions are the options of a streamed response.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
	// IncludeObfuscation is accepted and ignored.
	IncludeObfuscation *bool `json:"include_obfuscation,omitempty"`
}

// Sampling holds the parameters every generation request shares.
type Sampling struct {
	N                *int            `json:"n,omitempty"`
	Stop             StringOrList    `json:"stop,omitempty"`
	MaxTokens        *int            `json:"max_tokens,omitempty"`
	Temperature      *float64        `json:"temperature,omitempty"`
	TopP             *float64        `json:"top_p,omitempty"`
	Seed             *int64          `json:"seed,omitempty"`
	User             string          `json:"user,omitempty"`
	Stream           bool            `json:"stream,omitempty"`
	StreamOptions    *StreamOptions  `json:"stream_options,omitempty"`
	PresencePenalty  *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64        `json:"frequency_penalty,omitempty"`
	LogitBias        json.RawMessage `json:"logit_bias,omitempty"`
	Logprobs         json.RawMessage `json:"logprobs,omitempty"`
}

func (s *Sampling) validate(maxTokensParam string, maxTokens *int) error {
	if s.N != nil && (*s.N < 1 || *s.N > 128) {
		return invalid("n", "n must be from 1 to 128, not %d", *s.N)
	}
	if len(s.Stop) > 4 {
		return invalid("stop", "stop holds at most 4 sequences, not %d", len(s.Stop))
	}
	for _, st := range s.Stop {
		if st == "" {
			return invalid("stop", "stop sequences must not be empty")
		}
	}
	if maxTokens != nil && *maxTokens < 1 {
		return invalid(maxTokensParam, "%s must be at least 1, not %d", maxTokensParam, *maxTokens)
	}
	if s.Temperature != nil && (*s.Temperature < 0 || *s.Temperature > 2) {
		return invalid("temperature", "temperature must be from 0 to 2, not %g", *s.Temperature)
	}
	if s.TopP != nil && (*s.TopP <= 0 || *s.TopP > 1) {
		return invalid("top_p", "top_p must be greater than 0 and at most 1, not %g", *s.TopP)
	}
	for p, v := range map[string]*float64{"presence_penalty": s.PresencePenalty, "frequency_penalty": s.FrequencyPenalty} {
		if v != nil && (*v < -2 || *v > 2) {
			return invalid(p, "%s must be from -2 to 2, not %g", p, *v)
		}
	}
	if s.StreamOptions != nil && !s.Stream {
		return invalid("stream_options", "stream_options is only allowed when stream is true")
	}
	return nil
}

// Choices returns n, default 1.
func (s *Sampling) Choices() int {
	if s.N == nil {
		return 1
	}
	return *s.N
}

// IncludeUsage reports whether a stream ends with a usage chunk.
func (s *Sampling) IncludeUsage() bool { return s.StreamOptions != nil && s.StreamOptions.IncludeUsage }

// ChatRequest is the body of POST /chat/completions. Fields Terroir
// passes through to upstream models without interpreting them are kept
// raw.
type ChatRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	Sampling
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	TopLogprobs         *int            `json:"top_logprobs,omitempty"`
	ResponseFormat      json.RawMessage `json:"response_format,omitempty"`
	Tools               []Tool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	Functions           []FunctionDef   `json:"functions,omitempty"`
	FunctionCall        json.RawMessage `json:"function_call,omitempty"`
	Metadata            json.RawMessage `json:"metadata,omitempty"`
	Store               *bool           `json:"store,omitempty"`
	ServiceTier         json.RawMessage `json:"service_tier,omitempty"`
	Modalities          json.RawMessage `json:"modalities,omitempty"`
	Audio               json.RawMessage `json:"audio,omitempty"`
	Prediction          json.RawMessage `json:"prediction,omitempty"`
	ReasoningEffort     json.RawMessage `json:"reasoning_effort,omitempty"`
	Verbosity           json.RawMessage `json:"verbosity,omitempty"`
	WebSearchOptions    json.RawMessage `json:"web_search_options,omitempty"`
	PromptCacheKey      json.RawMessage `json:"prompt_cache_key,omitempty"`
	SafetyIdentifier    json.RawMessage `json:"safety_identifier,omitempty"`
	// DataSources is Azure's "on your data"; refused (not supported).
	DataSources json.RawMessage `json:"data_sources,omitempty"`
}

var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// Validate checks the request as OpenAI does, naming the parameter.
func (r *ChatRequest) Validate() error {
	if len(r.Messages) == 0 {
		return invalid("messages", "messages must hold at least one message")
	}
	for i, m := range r.Messages {
		p := fmt.Sprintf("messages[%d]", i)
		if !chatRoles[m.Role] {
			return invalid(p+".role", "%s.role must be one of system, developer, user, assistant, tool%s", p, notValue(m.Role))
		}
	}
	// every text the model reads must be one content safety can check
	if _, err := r.TextFields(); err != nil {
		return err
	}
	if r.MaxTokens != nil && r.MaxCompletionTokens != nil {
		return invalid("max_tokens", "set max_tokens or max_completion_tokens, not both")
	}
	if len(r.DataSources) > 0 {
		return invalid("data_sources", "data_sources is not supported")
	}
	if err := r.Sampling.validate("max_completion_tokens", r.MaxCompletionTokens); err != nil {
		return err
	}
	return r.Sampling.validate("max_tokens", r.MaxTokens)
}

// TokenLimit returns max_completion_tokens or max_tokens, 0 when neither
// is set.
func (r *ChatRequest) TokenLimit() int {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		return *r.MaxTokens
	}
	return 0
}

// CompletionRequest is the body of POST /completions.
type CompletionRequest struct {
	Model  string          `json:"model"`
	Prompt json.RawMessage `json:"prompt"`
	Sampling
	Suffix   *string         `json:"suffix,omitempty"`
	Echo     bool            `json:"echo,omitempty"`
	BestOf   *int            `json:"best_of,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Prompts returns the prompt as a list of strings. Token-array prompts
// are refused: every model Terroir serves takes text.
func (r *CompletionRequest) Prompts() ([]string, error) {
	p := bytes.TrimSpace(r.Prompt)
	if len(p) == 0 || bytes.Equal(p, []byte("null")) {
		return []string{""}, nil
	}
	if p[0] == '"' {
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			return nil, invalid("prompt", "prompt must be a string, a list of strings or tokens")
		}
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(p, &list); err == nil {
		if len(list) == 0 {
			return nil, invalid("prompt", "prompt must not be an empty list")
		}
		return list, nil
	}
	var tokens []int
	if err := json.Unmarshal(p, &tokens); err == nil {
		return nil, invalid("prompt", "token-array prompts are not supported; send text")
	}
	var tokenLists [][]int
	if err := json.Unmarshal(p, &tokenLists); err == nil {
		return nil, invalid("prompt", "token-array prompts are not supported; send text")
	}
	return nil, invalid("prompt", "prompt must be a string, a list of strings or tokens")
}

// Validate checks the request, naming the parameter.
func (r *CompletionRequest) Validate() error {
	if _, err := r.Prompts(); err != nil {
		return err
	}
	if r.BestOf != nil && (*r.BestOf < r.Choices() || *r.BestOf > 20) {
		return invalid("best_of", "best_of must be at least n and at most 20")
	}
	return r.Sampling.validate("max_tokens", r.MaxTokens)
}

// EmbeddingRequest is the body of POST /embeddings.
type EmbeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format,omitempty"`
	Dimensions     *int            `json:"dimensions,omitempty"`
	User           string          `json:"user,omitempty"`
}

// MaxEmbeddingInputs bounds the inputs of one embeddings request.
const MaxEmbeddingInputs = 2048

// Inputs returns the input as a list of strings.
func (r *EmbeddingRequest) Inputs() ([]string, error) {
	in := bytes.TrimSpace(r.Input)
	if len(in) == 0 || bytes.Equal(in, []byte("null")) {
		return nil, invalid("input", "input is required")
	}
	if in[0] == '"' {
		var s string
		if err := json.Unmarshal(in, &s); err != nil {
			return nil, invalid("input", "input must be a string or a list of strings")
		}
		if s == "" {
			return nil, invalid("input", "input must not be empty")
		}
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(in, &list); err != nil {
		var tokens []json.RawMessage
		if json.Unmarshal(in, &tokens) == nil {
			return nil, invalid("input", "token-array inputs are not supported; send text")
		}
		return nil, invalid("input", "input must be a string or a list of strings")
	}
	if len(list) == 0 || len(list) > MaxEmbeddingInputs {
		return nil, invalid("input", "input must hold 1 to %d strings, not %d", MaxEmbeddingInputs, len(list))
	}
	for i, s := range list {
		if s == "" {
			return nil, invalid(fmt.Sprintf("input[%d]", i), "input[%d] must not be empty", i)
		}
	}
	return list, nil
}

// Validate checks the request, naming the parameter.
func (r *EmbeddingRequest) Validate() error {
	if _, err := r.Inputs(); err != nil {
		return err
	}
	if r.EncodingFormat != "" && r.EncodingFormat != "float" && r.EncodingFormat != "base64" {
		return invalid("encoding_format", "encoding_format must be float or base64%s", notValue(r.EncodingFormat))
	}
	if r.Dimensions != nil && (*r.Dimensions < 1 || *r.Dimensions > 1536) {
		return invalid("dimensions", "dimensions must be from 1 to 1536, not %d", *r.Dimensions)
	}
	return nil
}
