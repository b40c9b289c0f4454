// Package admit is the one admission path of a model request, whether it
// arrives at the REST edge (ingress) or as a line of a batch (batch): it
// decodes and validates the body strictly (Parse), resolves the
// deployment and checks what the deployment's model allows (Resolve),
// and chooses the processing geography under the residency rules
// (Route). Every refusal is a *Refusal in the OpenAI error shape, so the
// edge answers it as an error response and a batch as an error-file line
// with the same status, type, code, param and message. Messages name
// fields and values the caller chose (names, IDs, sizes), never prompt or
// output text.
package admit

import (
	"errors"
	"fmt"
	"math"
	"net/http"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
)

// The OpenAI error types a refusal carries.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeNotFound       = "not_found_error"
	TypeServer         = "server_error"
)

// Refusal is a request refused by admission: an OpenAI-shaped error
// ({"error":{"message","type","param","code"}}) with its HTTP status.
// Param and Code are empty when unset (null on the wire).
type Refusal struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// Err is the cause, for logs only; nil for most refusals. It is never
	// shown to the caller.
	Err error
}

// Error returns the message.
func (r *Refusal) Error() string { return r.Message }

// Unwrap returns the cause.
func (r *Refusal) Unwrap() error { return r.Err }

// Invalid is a 400 invalid_value refusal about param.
func Invalid(param, format string, args ...any) *Refusal {
	return &Refusal{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: "invalid_value", Param: param, Message: fmt.Sprintf(format, args...)}
}

// Request is a model request body decoded and validated by Parse.
type Request struct {
	// Model is the body's model: the deployment's name on OpenAI paths
	// and in batch lines; "" when the body has none.
	Model  string
	Stream bool
	// Estimate is the tokens the request may use, for the rate limit:
	// its prompt (estimated from the size) plus its output limit for
	// every generated choice, saturating at math.MaxInt.
	Estimate int
	// Choices is n (1 to 128); 1 for embeddings.
	Choices int
	// UsageTail is stream_options.include_usage.
	UsageTail bool
	// Limit is the output tokens per choice the request set, under
	// LimitParam ("max_tokens", "max_completion_tokens"); 0 and "" when
	// unset.
	Limit      int
	LimitParam string
}

// capabilityOf is the catalog capability an operation needs.
var capabilityOf = map[events.Operation]string{
	events.OperationChatCompletions: catalog.CapabilityChat,
	events.OperationCompletions:     catalog.CapabilityCompletions,
	events.OperationEmbeddings:      catalog.CapabilityEmbeddings,
}

// Parse decodes raw strictly (Decode) into the request type of op
// (chat.completions, completions or embeddings) and validates it. A
// refusal is a 400 *Refusal naming the parameter at fault.
func Parse(op events.Operation, raw []byte) (Request, error) {
	var p Request
	var v interface{ Validate() error }
	switch op {
	case events.OperationChatCompletions:
		var req openai.ChatRequest
		if err := Decode(raw, &req); err != nil {
			return p, err
		}
		v = &req
		p.Model, p.Stream, p.Choices, p.UsageTail = req.Model, req.Stream, req.Choices(), req.IncludeUsage()
		limit := req.TokenLimit()
		p.Limit = limit
		if req.MaxCompletionTokens != nil {
			p.LimitParam = "max_completion_tokens"
		} else if req.MaxTokens != nil {
			p.LimitParam = "max_tokens"
		}
		if limit == 0 {
			limit = 256 // what an answer is assumed to take when the request sets no limit
		}
		// the body's size bounds the prompt's (messages, tools, schemas):
		// reading every text field for the estimate would walk the request
		// a second time, Validate walks it once
		p.Estimate = tokenEstimate(len(raw)/4, limit, p.Choices)
	case events.OperationCompletions:
		var req openai.CompletionRequest
		if err := Decode(raw, &req); err != nil {
			return p, err
		}
		v = &req
		p.Model, p.Stream, p.Choices, p.UsageTail = req.Model, req.Stream, req.Choices(), req.IncludeUsage()
		limit := 16 // the completions API's default
		if req.MaxTokens != nil {
			limit = *req.MaxTokens
			p.Limit, p.LimitParam = limit, "max_tokens"
		}
		generated := p.Choices // best_of choices are generated, n returned
		if req.BestOf != nil {
			generated = max(generated, *req.BestOf)
		}
		p.Estimate = tokenEstimate(len(req.Prompt)/4, limit, generated)
	case events.OperationEmbeddings:
		var req openai.EmbeddingRequest
		if err := Decode(raw, &req); err != nil {
			return p, err
		}
		v = &req
		p.Model, p.Choices = req.Model, 1
		p.Estimate = len(req.Input) / 4
	default:
		return p, Invalid("url", "%s is not an operation requests can be admitted for", op)
	}
	if err := v.Validate(); err != nil {
		var fe *openai.FieldError
		if errors.As(err, &fe) {
			return p, Invalid(fe.Param, "%s", fe.Message)
		}
		return p, Invalid("body", "%s", err.Error())
	}
	return p, nil
}

// tokenEstimate is prompt + limit*choices for a validated request (every
// term positive), saturating at math.MaxInt: a huge max_tokens must not
// wrap around to an estimate the rate limit would wave through.
func tokenEstimate(prompt, limit, choices int) int {
	if limit > 0 && choices > 0 && limit > (math.MaxInt-prompt)/choices {
		return math.MaxInt
	}
	return prompt + limit*choices
}
