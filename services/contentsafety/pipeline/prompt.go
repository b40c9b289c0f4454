package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// promptTexts returns the texts a request's prompt_filter_results cover,
// by prompt_index: every text field of a chat request (messages in every
// form, tool definitions, earlier tool calls, response format), each
// prompt of a completions request (with its suffix), all inputs of an
// embeddings request. An error names a field that cannot be checked.
func promptTexts(req events.InferenceRequest) ([]string, error) {
	switch req.Operation {
	case events.OperationChatCompletions:
		var r openai.ChatRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, err
		}
		fields, err := r.TextFields()
		if err != nil {
			return nil, err
		}
		return []string{openai.Join(fields)}, nil
	case events.OperationCompletions:
		var r openai.CompletionRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, err
		}
		prompts, err := r.Prompts()
		if err != nil {
			return nil, err
		}
		if r.Suffix != nil && *r.Suffix != "" {
			// the suffix is part of every prompt the model completes
			for i := range prompts {
				prompts[i] += "\n" + *r.Suffix
			}
		}
		return prompts, nil
	case events.OperationEmbeddings:
		var r openai.EmbeddingRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, err
		}
		in, err := r.Inputs()
		return []string{strings.Join(in, "\n")}, err
	}
	return nil, fmt.Errorf("operation %s is not checked", req.Operation)
}

// prompt is the prompt stage's handler.
func (p *Pipeline) prompt(ctx context.Context, d *bus.Delivery) error {
	if d.Expired() {
		// Its caller stopped waiting (ingress answered it with a
		// timeout): nothing is checked, passed on or recorded, and an
		// overloaded stack catches up with requests still awaited.
		return nil
	}
	var req events.InferenceRequest
	if err := d.Decode(ctx, &req); err != nil {
		return err // Decode marks what can never be read as permanent
	}
	res, pol, bl, err := p.policy(req.Resource, req.Deployment)
	if err != nil {
		return p.refuse(ctx, d, req, err)
	}
	texts, err := promptTexts(req)
	if err != nil {
		return p.refuse(ctx, d, req, err)
	}
	var results []openai.PromptFilterResult
	var merged classifier.Result
	var worst classifier.Annotations
	blocked := false
	for i, t := range texts {
		r, closed, err := p.rate(ctx, d.Geo, events.DirectionPrompt, pol, bl, t)
		if err != nil {
			return err
		}
		a, b := classifier.Apply(pol, events.DirectionPrompt, r)
		b = b || closed
		results = append(results, openai.PromptFilterResult{PromptIndex: i, ContentFilterResults: a})
		merged = classifier.Merge(merged, r)
		if b || i == 0 {
			worst = a
		}
		blocked = blocked || b
	}
	all := strings.Join(texts, "\n")
	found, err := p.findings(ctx, d.Meta.HomeGeo, merged, worst, blocked, all)
	if err != nil {
		return err
	}
	prf, err := json.Marshal(results)
	if err != nil {
		return err
	}
	if blocked {
		// The request ends here: its one signal and one record (the
		// prompt part) are written now.
		body, err := json.Marshal(openai.NewContentFilterError(worst))
		if err != nil {
			return err
		}
		reply := p.cfg.Bus.ReplyAsync(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusFiltered,
			Body: body, Error: &events.ResultError{Kind: events.ErrorContentFiltered, Code: "content_filter", Param: "prompt", Message: openai.PromptFilteredMessage},
			CreatedAt: time.Now().UTC()})
		sends := []*bus.Sending{p.cfg.Bus.PublishAsync(ctx, req.HomeGeo, bus.StreamSafetySignals, bus.Meta{Key: req.RequestID}, signal(d.Meta, events.DirectionPrompt, found))}
		if res.ContentLogging {
			home := d.Meta
			home.Key = ""
			rec := events.AbuseRecord{RequestID: req.RequestID, Resource: req.Resource, HomeGeo: req.HomeGeo, ProcessingGeo: d.Geo,
				Deployment: req.Deployment, Operation: req.Operation, Prompt: req.Body, PromptFilterResults: prf, CreatedAt: time.Now().UTC()}
			sends = append(sends, p.cfg.Bus.PublishAsync(ctx, req.HomeGeo, bus.StreamAbuseLog, home, rec))
		}
		// The side records linger; the handler waits for the reply alone.
		return errors.Join(d.After(sends...), reply.Wait())
	}
	// The prompt passed: what the output stage needs to write the
	// request's one signal and one record travels with it (and, from the
	// worker, back), so nothing is written here.
	req.PromptCheck = &events.PromptCheck{Signal: found, Log: res.ContentLogging}
	fwd := d.Meta
	fwd.Key = ""
	if !req.Stream {
		// The verdict travels with the request and comes back on the
		// answer: a non-streamed answer is one reply.
		req.PromptFilterResults = prf
		return p.cfg.Bus.Publish(ctx, d.Geo, bus.LaneOf(d.Stream).Stream(bus.StreamInference), fwd, req)
	}
	if res.ContentLogging {
		req.PromptCheck.FilterResults = prf
	}
	// A stream's first event is the verdict, sent before the model starts.
	verdict, err := json.Marshal(openai.VerdictChunk{Choices: []json.RawMessage{}, PromptFilterResults: results})
	if err != nil {
		return err
	}
	return bus.WaitAll(
		p.cfg.Bus.ReplyAsync(ctx, d, 0, false, events.InferenceChunk{RequestID: req.RequestID, Seq: 0, Body: verdict, CreatedAt: time.Now().UTC()}),
		p.cfg.Bus.PublishAsync(ctx, d.Geo, bus.LaneOf(d.Stream).Stream(bus.StreamInference), fwd, req),
	)
}

// refuse answers a request that cannot be checked (unknown resource,
// unreadable body, a field content safety cannot read): it is never
// passed on unchecked. A field error names its parameter; no error
// carries the request's text.
func (p *Pipeline) refuse(ctx context.Context, d *bus.Delivery, req events.InferenceRequest, cause error) error {
	re := &events.ResultError{Kind: events.ErrorInvalidRequest, Code: "invalid_request", Message: "the request could not be checked by content safety"}
	reason := "unknown resource or unreadable body"
	var fe *openai.FieldError
	if errors.As(cause, &fe) {
		re.Param, re.Message, reason = fe.Param, fe.Message, "field content safety cannot check"
	}
	p.log.Warn("request refused unchecked", zap.String("request_id", req.RequestID), zap.String("resource", req.Resource),
		zap.String("deployment", req.Deployment), zap.String("reason", reason), zap.String("param", re.Param))
	return p.cfg.Bus.Reply(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusError,
		Operation: req.Operation, Error: re, CreatedAt: time.Now().UTC()})
}
