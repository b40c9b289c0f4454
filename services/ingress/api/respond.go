package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/openai"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// reply is one decoded record of a reply stream.
type reply struct {
	seq    int
	final  bool
	chunk  *events.InferenceChunk
	result *events.InferenceResult
}

func next(ctx context.Context, rs *bus.ReplyStream) (reply, error) {
	d, err := rs.Next(ctx)
	if err != nil {
		return reply{}, err
	}
	out := reply{seq: d.Meta.Seq, final: d.Meta.Final}
	switch d.Meta.Type.Name {
	case events.TypeInferenceChunk.Name:
		out.chunk = &events.InferenceChunk{}
		err = d.Decode(ctx, out.chunk)
	case events.TypeInferenceResult.Name:
		out.result = &events.InferenceResult{}
		err = d.Decode(ctx, out.result)
	default:
		err = fmt.Errorf("unexpected reply type %s", d.Meta.Type)
	}
	return out, err
}

// timeoutError is the 504 of a request whose replies did not come in
// time.
func timeoutError() error {
	return &apierr.Error{Status: http.StatusGatewayTimeout, Type: apierr.TypeServer, Code: "timeout",
		Message: "the model did not answer in time; retry later"}
}

func waitError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return timeoutError()
	}
	if errors.Is(err, context.Canceled) {
		return &apierr.Error{Status: 499, Type: apierr.TypeInvalidRequest, Code: "canceled", Message: "the client closed the request"}
	}
	return fmt.Errorf("waiting for replies: %w", err)
}

// resultError turns a failed or filtered result into the response.
func resultError(res *events.InferenceResult) error {
	if res.Status == events.StatusFiltered && len(res.Body) > 0 {
		return &rawError{status: http.StatusBadRequest, body: res.Body}
	}
	if res.Error == nil {
		return apierr.Internal()
	}
	status, typ := openai.ErrorStatus(res.Error.Kind)
	return &apierr.Error{Status: status, Type: typ, Code: res.Error.Code, Param: res.Error.Param, Message: res.Error.Message}
}

// rawError is an error whose body was written by content safety (Azure's
// content-filter error with its innererror).
type rawError struct {
	status int
	body   json.RawMessage
}

func (e *rawError) Error() string { return "content filtered" }

func writeError(w http.ResponseWriter, err error) {
	var re *rawError
	if errors.As(err, &re) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(re.status)
		_, _ = w.Write(re.body)
		return
	}
	apierr.Write(w, err)
}

// respond writes the replies as one JSON response or as server-sent
// events. A stream's first reply is the prompt verdict (or the refusal);
// a non-streamed request gets one reply, its answer, which already carries
// prompt_filter_results.
func (a *API) respond(ctx context.Context, w http.ResponseWriter, r *http.Request, rs *bus.ReplyStream, op events.Operation, p admit.Request) error {
	first, err := next(ctx, rs)
	if err != nil {
		return waitError(err)
	}
	if p.Stream {
		if first.result != nil { // the prompt was refused or the request failed before any output
			writeError(w, resultError(first.result))
			return nil
		}
		return a.stream(ctx, w, r.Header.Get("x-request-id"), rs, first, p)
	}
	rep := first
	for rep.result == nil { // chunks are not expected here; the result carries the body
		if rep, err = next(ctx, rs); err != nil {
			return waitError(err)
		}
	}
	if rep.result.Status != events.StatusOK {
		writeError(w, resultError(rep.result))
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(rep.result.Body)
	return nil
}

// stream writes server-sent events: the prompt verdict chunk, every
// output chunk, a usage chunk when asked for, then [DONE]. Once the
// stream has started, a failure is sent as an error event.
func (a *API) stream(ctx context.Context, w http.ResponseWriter, id string, rs *bus.ReplyStream, first reply, p admit.Request) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(data []byte) error {
		var b bytes.Buffer
		b.Grow(len(data) + 8)
		b.WriteString("data: ")
		b.Write(data)
		b.WriteString("\n\n")
		if _, err := w.Write(b.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	}
	// A write that fails (the client went away or stopped reading past
	// the write timeout) ends the stream at once: nothing more can reach
	// the client, and the replies still coming are dropped with rs.
	cutOff := func(err error) error {
		a.cfg.Log.Warn("stream cut off: the client is gone or stopped reading", zap.String("request_id", id), zap.Error(err))
		return nil
	}
	if first.chunk != nil {
		if err := send(first.chunk.Body); err != nil {
			return cutOff(err)
		}
	}
	var last struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
	}
	for {
		rep, err := next(ctx, rs)
		if err != nil {
			werr := waitError(err)
			a.cfg.Log.Warn("stream ended early", zap.String("request_id", id), zap.String("code", apierr.As(werr).Code))
			if err := send(errorEvent(werr)); err != nil {
				return cutOff(err)
			}
			return nil
		}
		if rep.chunk != nil {
			_ = json.Unmarshal(rep.chunk.Body, &last)
			if err := send(rep.chunk.Body); err != nil {
				return cutOff(err)
			}
			continue
		}
		res := rep.result
		if res.Status != events.StatusOK {
			err = send(errorEvent(resultError(res)))
		} else if p.UsageTail && res.Usage != nil {
			tail, _ := json.Marshal(map[string]any{"id": last.ID, "object": last.Object, "created": last.Created, "model": last.Model,
				"choices": []any{}, "usage": res.Usage})
			err = send(tail)
		}
		if err == nil {
			err = send([]byte("[DONE]"))
		}
		if err != nil {
			return cutOff(err)
		}
		return nil
	}
}

// errorEvent is the data of the event that reports err once a stream has
// started: content safety's own body, or the OpenAI error object.
func errorEvent(err error) []byte {
	var re *rawError
	if errors.As(err, &re) {
		return re.body
	}
	e := apierr.As(err)
	body, _ := json.Marshal(apierr.Body{Error: apierr.BodyError{Message: e.Message, Type: e.Type, Code: &e.Code}})
	return body
}
