package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	head    *head
	emit    func([]byte) error
	pending [][]byte // per choice, text not yet sent
	started []bool   // per choice, whether a chunk went out (chat: the role goes with the first)
	chat    bool
}

func (c *chunker) send(choice int, delta string, finish string) error {
	first := !c.started[choice]
	c.started[choice] = true
	// A fresh buffer per chunk: the bus keeps it until the record is sent.
	return c.emit(chunkBody(c.head, c.chat, choice, delta, first, finish))
}

func (c *chunker) add(choice int, delta string) error {
	c.pending[choice] = append(c.pending[choice], delta...)
	if len(c.pending[choice]) < flushBytes {
		return nil
	}
	err := c.send(choice, string(c.pending[choice]), "")
	c.pending[choice] = c.pending[choice][:0]
	return err
}

func (c *chunker) finish(choices []builtin.Choice) error {
	for _, ch := range choices {
		if err := c.send(ch.Index, string(c.pending[ch.Index]), ch.FinishReason); err != nil {
			return err
		}
	}
	return nil
}

func (b *Builtin) newHead(req events.InferenceRequest, chat bool) *head {
	return &head{id: responseID(req, chat), model: req.Model, fingerprint: "terroir-" + req.Model, created: b.now().Unix()}
}

func newChunker(h *head, chat bool, choices int, emit func([]byte) error) *chunker {
	// An n out of range never reaches a chunk: the model refuses it first.
	choices = max(choices, 1)
	return &chunker{head: h, emit: emit, pending: make([][]byte, choices), started: make([]bool, choices), chat: chat}
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
	if len(msgs) > 0 && msgs[len(msgs)-1].Role == "function" {
		msgs[len(msgs)-1].Role = builtin.RoleTool
	}
	h := b.newHead(req, true)
	var onDelta func(int, string) error
	var ck *chunker
	if req.Stream {
		ck = newChunker(h, true, min(r.Choices(), builtin.MaxChoices), emit)
		onDelta = ck.add
	}
	choices, err := b.Model.Chat(ctx, msgs, params(r.Sampling, r.TokenLimit()), onDelta)
	if err != nil {
		return Answer{}, modelError(err)
	}
	usage := events.Usage{PromptTokens: builtin.CountChatTokens(msgs)}
	for _, c := range choices {
		usage.CompletionTokens += c.CompletionTokens
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	if req.Stream {
		return Answer{Usage: usage}, ck.finish(choices)
	}
	return Answer{Body: chatBody(h, choices, usage), Usage: usage}, nil
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
	h := b.newHead(req, false)
	n := r.Choices()
	var ck *chunker
	if req.Stream {
		ck = newChunker(h, false, min(n, builtin.MaxChoices)*len(prompts), emit)
	}
	var usage events.Usage
	out := make([]completionChoice, 0, min(n, builtin.MaxChoices)*len(prompts))
	var all []builtin.Choice
	for pi, prompt := range prompts {
		usage.PromptTokens += builtin.CountTokens(prompt)
		var onDelta func(int, string) error
		if req.Stream {
			onDelta = func(i int, delta string) error { return ck.add(pi*n+i, delta) }
		}
		choices, err := b.Model.Generate(ctx, prompt, params(r.Sampling, maxTokens), onDelta)
		if err != nil {
			return Answer{}, modelError(err)
		}
		for _, c := range choices {
			c.Index = pi*n + c.Index
			usage.CompletionTokens += c.CompletionTokens
			cc := completionChoice{index: c.Index, finish: c.FinishReason, text: c.Text}
			if r.Echo {
				cc.prefix = prompt
			}
			if req.Stream {
				all = append(all, c)
			}
			out = append(out, cc)
		}
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	if req.Stream {
		return Answer{Usage: usage}, ck.finish(all)
	}
	return Answer{Body: completionBody(h, out, usage), Usage: usage}, nil
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
	vecs := make([][]float32, 0, len(inputs))
	for _, in := range inputs {
		vec, tokens, err := builtin.Embed(in, dims)
		if err != nil {
			return Answer{}, modelError(err)
		}
		usage.PromptTokens += tokens
		vecs = append(vecs, vec)
	}
	usage.TotalTokens = usage.PromptTokens
	return Answer{Body: embeddingsBody(req.Model, vecs, r.EncodingFormat == "base64", usage), Usage: usage}, nil
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
