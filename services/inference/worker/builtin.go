package worker

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// flushBytes is how much streamed text a chunk gathers before it is sent:
// a record per token would cost more than the tokens.
const flushBytes = 24

// Builtin serves the built-in models: the n-gram language model for chat
// and completions, the hashing model for embeddings.
type Builtin struct {
	Model *builtin.Model
	Now   func() time.Time
}

// Serve answers one request.
func (b *Builtin) Serve(ctx context.Context, req events.InferenceRequest, emit func([]byte) error) (Answer, error) {
	switch req.Operation {
	case events.OperationChatCompletions:
		return b.chat(ctx, req, emit)
	case events.OperationCompletions:
		return b.completions(ctx, req, emit)
	case events.OperationEmbeddings:
		return b.embeddings(req)
	}
	return Answer{}, invalid("", fmt.Sprintf("operation %s is not served by the built-in model", req.Operation))
}

func (b *Builtin) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func params(s openai.Sampling, maxTokens int) builtin.Params {
	p := builtin.Params{MaxTokens: maxTokens, Temperature: 1, TopP: 1, Seed: s.Seed, Stop: s.Stop, N: s.Choices()}
	if s.Temperature != nil {
		p.Temperature = *s.Temperature
	}
	if s.TopP != nil {
		p.TopP = *s.TopP
	}
	return p
}

// chunker batches the deltas of each choice into chunk objects.
type chunker struct {
	head    map[string]any // id, object, created, model
	emit    func([]byte) error
	pending map[int]*strings.Builder
	started map[int]bool
	chat    bool
}

func (c *chunker) send(choice int, delta string, finish any) error {
	ch := map[string]any{"index": choice, "logprobs": nil, "finish_reason": finish}
	if c.chat {
		d := map[string]any{"content": delta}
		if !c.started[choice] {
			d["role"] = "assistant"
			c.started[choice] = true
		}
		ch["delta"] = d
	} else {
		ch["text"] = delta
	}
	obj := map[string]any{"choices": []any{ch}}
	for k, v := range c.head {
		obj[k] = v
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return c.emit(raw)
}

func (c *chunker) add(choice int, delta string) error {
	sb := c.pending[choice]
	if sb == nil {
		sb = &strings.Builder{}
		c.pending[choice] = sb
	}
	sb.WriteString(delta)
	if sb.Len() < flushBytes {
		return nil
	}
	text := sb.String()
	sb.Reset()
	return c.send(choice, text, nil)
}

func (c *chunker) finish(choices []builtin.Choice) error {
	for _, ch := range choices {
		text := ""
		if sb := c.pending[ch.Index]; sb != nil {
			text = sb.String()
		}
		if err := c.send(ch.Index, text, ch.FinishReason); err != nil {
			return err
		}
	}
	return nil
}

func (b *Builtin) newChunker(req events.InferenceRequest, chat bool, emit func([]byte) error) *chunker {
	object := "text_completion"
	if chat {
		object = "chat.completion.chunk"
	}
	return &chunker{head: map[string]any{"id": responseID(req, chat), "object": object, "created": b.now().Unix(), "model": req.Model,
		"system_fingerprint": "terroir-" + req.Model}, emit: emit, pending: map[int]*strings.Builder{}, started: map[int]bool{}, chat: chat}
}

func responseID(req events.InferenceRequest, chat bool) string {
	if chat {
		return "chatcmpl-" + req.RequestID
	}
	return "cmpl-" + req.RequestID
}

func (b *Builtin) chat(ctx context.Context, req events.InferenceRequest, emit func([]byte) error) (Answer, error) {
	var r openai.ChatRequest
	if err := json.Unmarshal(req.Body, &r); err != nil {
		return Answer{}, invalid("", "the request body could not be read")
	}
	msgs := make([]builtin.Message, 0, len(r.Messages))
	for _, m := range r.Messages {
		text, _ := m.Text()
		msgs = append(msgs, builtin.Message{Role: m.Role, Content: text, Name: m.Name})
	}
	if msgs[len(msgs)-1].Role == "function" {
		msgs[len(msgs)-1].Role = builtin.RoleTool
	}
	ck := b.newChunker(req, true, emit)
	var onDelta func(int, string) error
	if req.Stream {
		onDelta = ck.add
	}
	choices, err := b.Model.Chat(ctx, msgs, params(r.Sampling, r.TokenLimit()), onDelta)
	if err != nil {
		return Answer{}, modelError(err)
	}
	usage := events.Usage{PromptTokens: builtin.CountChatTokens(msgs)}
	out := make([]any, 0, len(choices))
	for _, c := range choices {
		usage.CompletionTokens += c.CompletionTokens
		out = append(out, map[string]any{"index": c.Index, "message": map[string]any{"role": "assistant", "content": c.Text, "refusal": nil},
			"logprobs": nil, "finish_reason": c.FinishReason})
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	if req.Stream {
		return Answer{Usage: usage}, ck.finish(choices)
	}
	return answer(ck.head, "chat.completion", out, usage)
}

func answer(head map[string]any, object string, choices []any, usage events.Usage) (Answer, error) {
	obj := map[string]any{"choices": choices, "usage": usage}
	for k, v := range head {
		obj[k] = v
	}
	obj["object"] = object
	raw, err := json.Marshal(obj)
	return Answer{Body: raw, Usage: usage}, err
}

func (b *Builtin) completions(ctx context.Context, req events.InferenceRequest, emit func([]byte) error) (Answer, error) {
	var r openai.CompletionRequest
	if err := json.Unmarshal(req.Body, &r); err != nil {
		return Answer{}, invalid("", "the request body could not be read")
	}
	prompts, err := r.Prompts()
	if err != nil {
		return Answer{}, invalid("prompt", err.Error())
	}
	maxTokens := 16 // the completions API's default
	if r.MaxTokens != nil {
		maxTokens = *r.MaxTokens
	}
	ck := b.newChunker(req, false, emit)
	n := r.Choices()
	var usage events.Usage
	var out []any
	var all []builtin.Choice
	for pi, prompt := range prompts {
		usage.PromptTokens += builtin.CountTokens(prompt)
		onDelta := func(i int, delta string) error { return ck.add(pi*n+i, delta) }
		if !req.Stream {
			onDelta = nil
		}
		choices, err := b.Model.Generate(ctx, prompt, params(r.Sampling, maxTokens), onDelta)
		if err != nil {
			return Answer{}, modelError(err)
		}
		for _, c := range choices {
			c.Index = pi*n + c.Index
			text := c.Text
			if r.Echo {
				text = prompt + text
			}
			usage.CompletionTokens += c.CompletionTokens
			all = append(all, c)
			out = append(out, map[string]any{"index": c.Index, "text": text, "logprobs": nil, "finish_reason": c.FinishReason})
		}
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	if req.Stream {
		return Answer{Usage: usage}, ck.finish(all)
	}
	return answer(ck.head, "text_completion", out, usage)
}

func (b *Builtin) embeddings(req events.InferenceRequest) (Answer, error) {
	var r openai.EmbeddingRequest
	if err := json.Unmarshal(req.Body, &r); err != nil {
		return Answer{}, invalid("", "the request body could not be read")
	}
	inputs, err := r.Inputs()
	if err != nil {
		return Answer{}, invalid("input", err.Error())
	}
	dims := builtin.EmbeddingDimensions
	if r.Dimensions != nil {
		dims = *r.Dimensions
	}
	var usage events.Usage
	data := make([]any, 0, len(inputs))
	for i, in := range inputs {
		vec, tokens, err := builtin.Embed(in, dims)
		if err != nil {
			return Answer{}, modelError(err)
		}
		usage.PromptTokens += tokens
		var emb any = vec
		if r.EncodingFormat == "base64" {
			buf := make([]byte, 4*len(vec))
			for j, f := range vec {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(f))
			}
			emb = base64.StdEncoding.EncodeToString(buf)
		}
		data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": emb})
	}
	usage.TotalTokens = usage.PromptTokens
	raw, err := json.Marshal(map[string]any{"object": "list", "data": data, "model": req.Model,
		"usage": map[string]int{"prompt_tokens": usage.PromptTokens, "total_tokens": usage.TotalTokens}})
	return Answer{Body: raw, Usage: usage}, err
}

// modelError maps the model's parameter errors to invalid-request errors;
// anything else is internal.
func modelError(err error) error {
	var pe *builtin.ParamError
	if errors.As(err, &pe) {
		return invalid(pe.Param, pe.Message)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: events.ErrorTimeout, Message: "the model did not finish in time"}
	}
	return fmt.Errorf("built-in model: %w", err)
}
