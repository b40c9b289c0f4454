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

// blockedMessage is the message of Azure's content-filter error.
const blockedMessage = "The response was filtered due to the prompt triggering the content management policy of this resource. Please modify your prompt and retry."

// promptTexts returns the texts a request's prompt_filter_results cover,
// by prompt_index: the whole conversation for chat, each prompt for
// completions, all inputs for embeddings.
func promptTexts(req events.InferenceRequest) ([]string, error) {
	switch req.Operation {
	case events.OperationChatCompletions:
		var r openai.ChatRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, err
		}
		return []string{strings.Join(r.PromptTexts(), "\n")}, nil
	case events.OperationCompletions:
		var r openai.CompletionRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, err
		}
		return r.Prompts()
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

type promptResult struct {
	Index   int                    `json:"prompt_index"`
	Results classifier.Annotations `json:"content_filter_results"`
}

// prompt is the prompt stage's handler.
func (p *Pipeline) prompt(ctx context.Context, d *bus.Delivery) error {
	var req events.InferenceRequest
	if err := d.Decode(ctx, &req); err != nil {
		return bus.Permanent(err)
	}
	res, pol, bl, err := p.policy(req.Resource, req.Deployment)
	if err != nil {
		return p.refuse(ctx, d, req, err.Error())
	}
	texts, err := promptTexts(req)
	if err != nil {
		return p.refuse(ctx, d, req, "unreadable request body")
	}
	rules := rulesOf(pol, events.DirectionPrompt)
	var results []promptResult
	var merged classifier.Result
	var worst classifier.Annotations
	blocked := false
	for i, t := range texts {
		r := p.cfg.Classifier.ClassifyWith(t, events.DirectionPrompt, bl, rules.Blocklists)
		a, b := classifier.Apply(pol, events.DirectionPrompt, r)
		results = append(results, promptResult{Index: i, Results: a})
		merged = classifier.Merge(merged, r)
		if b || i == 0 {
			worst = a
		}
		blocked = blocked || b
	}
	all := strings.Join(texts, "\n")
	sig, err := p.signal(ctx, d.Meta, events.DirectionPrompt, merged, worst, blocked, all)
	if err != nil {
		return err
	}
	prf, err := json.Marshal(results)
	if err != nil {
		return err
	}
	home := d.Meta
	home.Key = ""
	sends := []*bus.Sending{p.cfg.Bus.PublishAsync(ctx, req.HomeGeo, bus.StreamSafetySignals, bus.Meta{Key: req.RequestID}, sig)}
	if res.ContentLogging {
		rec := events.AbuseRecord{RequestID: req.RequestID, Resource: req.Resource, HomeGeo: req.HomeGeo, ProcessingGeo: d.Geo,
			Deployment: req.Deployment, Operation: req.Operation, Prompt: req.Body, PromptFilterResults: prf, CreatedAt: time.Now().UTC()}
		sends = append(sends, p.cfg.Bus.PublishAsync(ctx, req.HomeGeo, bus.StreamAbuseLog, home, rec))
	}
	if blocked {
		body, err := json.Marshal(map[string]any{"error": map[string]any{
			"message": blockedMessage, "type": nil, "param": "prompt", "code": "content_filter", "status": 400,
			"innererror": map[string]any{"code": "ResponsibleAIPolicyViolation", "content_filter_result": worst},
		}})
		if err != nil {
			return errors.Join(err, bus.WaitAll(sends...))
		}
		sends = append(sends, p.cfg.Bus.ReplyAsync(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusFiltered,
			Body: body, Error: &events.ResultError{Kind: events.ErrorContentFiltered, Code: "content_filter", Param: "prompt", Message: blockedMessage},
			CreatedAt: time.Now().UTC()}))
		return bus.WaitAll(sends...)
	}
	fwd := d.Meta
	fwd.Key = ""
	if !req.Stream {
		// The verdict travels with the request and comes back on the
		// answer: a non-streamed answer is one reply.
		req.PromptFilterResults = prf
		sends = append(sends, p.cfg.Bus.PublishAsync(ctx, d.Geo, bus.StreamInference, fwd, req))
		return bus.WaitAll(sends...)
	}
	// A stream's first event is the verdict, sent before the model starts.
	verdict, err := json.Marshal(map[string]any{"choices": []any{}, "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": results})
	if err != nil {
		return errors.Join(err, bus.WaitAll(sends...))
	}
	sends = append(sends,
		p.cfg.Bus.ReplyAsync(ctx, d, 0, false, events.InferenceChunk{RequestID: req.RequestID, Seq: 0, Body: verdict, CreatedAt: time.Now().UTC()}),
		p.cfg.Bus.PublishAsync(ctx, d.Geo, bus.StreamInference, fwd, req),
	)
	return bus.WaitAll(sends...)
}

// refuse answers a request that cannot be checked (unknown resource,
// unreadable body): it is never passed on unchecked.
func (p *Pipeline) refuse(ctx context.Context, d *bus.Delivery, req events.InferenceRequest, reason string) error {
	p.log.Warn("request refused unchecked", zap.String("request_id", req.RequestID), zap.String("resource", req.Resource),
		zap.String("deployment", req.Deployment), zap.String("reason", reason))
	return p.cfg.Bus.Reply(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusError,
		Error:     &events.ResultError{Kind: events.ErrorInvalidRequest, Code: "invalid_request", Message: "the request could not be checked by content safety"},
		CreatedAt: time.Now().UTC()})
}
