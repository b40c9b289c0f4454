package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// Limits of the upstream backend.
const (
	// upstreamAttempts bounds the calls made for one request: the first
	// and up to two retries.
	upstreamAttempts = 3
	// defaultUpstreamTimeout is the catalog's documented default for a
	// backend without a timeout.
	defaultUpstreamTimeout = 120 * time.Second
	// defaultRetryBase is the first backoff; it doubles per retry and is
	// jittered to between half and all of that.
	defaultRetryBase = 250 * time.Millisecond
	// defaultRetryAfterCap bounds how long a Retry-After makes a request
	// wait: past it the app is better served by an answer than by a
	// worker holding its request.
	defaultRetryAfterCap = 10 * time.Second
	// maxUpstreamMessage caps the length (in characters) of an upstream
	// error message passed on to the app.
	maxUpstreamMessage = 300
	// maxUpstreamBody bounds a non-streamed answer; a large embeddings
	// batch is the biggest legitimate one.
	maxUpstreamBody = 256 << 20
	// maxUpstreamEvent bounds one server-sent event of a stream.
	maxUpstreamEvent = 16 << 20
	// maxErrorBody bounds how much of an error answer is read.
	maxErrorBody = 64 << 10
)

var upstreamPaths = map[events.Operation]string{
	events.OperationChatCompletions: "/chat/completions",
	events.OperationCompletions:     "/completions",
	events.OperationEmbeddings:      "/embeddings",
}

// Upstream serves a catalog model whose backend is an OpenAI-compatible
// server (vLLM, llama.cpp server, Ollama, a cloud endpoint). It forwards
// the app's request body with "model" set to the upstream's name for the
// model, and answers with the upstream's output with "model" set back to
// the catalog ID, so the upstream's naming does not reach apps. Streams
// are passed through chunk by chunk.
//
// A call is bounded by the backend's timeout (default 120 s) including
// its retries. Connection failures, 429 and 5xx answers are retried, at
// most three attempts in all, with exponential backoff and jitter or the
// upstream's Retry-After (capped at 10 s), but only while nothing has been
// emitted: streamed output is never duplicated. Nothing about a request
// is written to disk or logged; log lines carry request IDs, status codes
// and durations.
//
// An Upstream is safe for concurrent use.
type Upstream struct {
	endpoint string // BaseURL without a trailing slash
	model    string // the upstream's name for the model
	apiKey   string
	timeout  time.Duration
	client   *http.Client
	log      *zap.Logger
	// The retry policy; tests shorten the waits.
	retryBase     time.Duration
	retryAfterCap time.Duration
	wait          func(ctx context.Context, d time.Duration) error
}

// NewUpstream returns the backend for an upstream catalog model. apiKey
// is sent as a bearer token; empty means no Authorization header (a local
// Ollama or llama.cpp server needs none). A nil client means a client of
// its own, sized for many concurrent streams to one host; it should not
// set a Timeout, which would cut long streams short: b.Timeout bounds the
// calls.
func NewUpstream(b catalog.Backend, apiKey string, client *http.Client, log *zap.Logger) (*Upstream, error) {
	if b.Builtin {
		return nil, errors.New("upstream: the backend is the built-in one")
	}
	u, err := url.Parse(b.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream: base URL %q must be an http(s) URL", b.BaseURL)
	}
	if b.Model == "" {
		return nil, errors.New("upstream: the backend names no upstream model")
	}
	if log == nil {
		return nil, errors.New("upstream: a logger is required")
	}
	if client == nil {
		client = newUpstreamClient()
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = defaultUpstreamTimeout
	}
	return &Upstream{endpoint: strings.TrimRight(b.BaseURL, "/"), model: b.Model, apiKey: apiKey, timeout: timeout, client: client,
		log: log.Named("upstream"), retryBase: defaultRetryBase, retryAfterCap: defaultRetryAfterCap, wait: sleep}, nil
}

// NewUpstreams returns the backends of every upstream model of cat, by
// catalog model ID. Each model's key is read with getenv from the variable
// its catalog entry names; a named variable that is empty is logged (by
// name, never a value) and the model is served without a key. client is
// shared by all of them; nil means one of their own.
func NewUpstreams(cat *catalog.Catalog, getenv func(string) string, client *http.Client, log *zap.Logger) (map[string]*Upstream, error) {
	if cat == nil || getenv == nil || log == nil {
		return nil, errors.New("upstream: catalog, getenv and logger are required")
	}
	if client == nil {
		client = newUpstreamClient()
	}
	out := map[string]*Upstream{}
	var errs []error
	for _, m := range cat.Models {
		if m.Backend.Builtin {
			continue
		}
		key := ""
		if v := m.Backend.APIKeyEnv; v != "" {
			if key = getenv(v); key == "" {
				log.Warn("upstream key variable is empty; calling the upstream without a key", zap.String("model", m.ID), zap.String("variable", v))
			}
		}
		up, err := NewUpstream(m.Backend, key, client, log)
		if err != nil {
			errs = append(errs, fmt.Errorf("model %s: %w", m.ID, err))
			continue
		}
		out[m.ID] = up
		log.Info("serving model from upstream", zap.String("model", m.ID), zap.Bool("key", key != ""), zap.Duration("timeout", up.timeout))
	}
	return out, errors.Join(errs...)
}

func newUpstreamClient() *http.Client {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return &http.Client{}
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: t}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// call is one request's state across its attempts.
type call struct {
	req    events.InferenceRequest
	path   string
	stream bool
	body   []byte
	// plain is the body without stream_options, for an upstream that
	// refuses them; nil once it is in use or for non-streams.
	plain []byte
	// appUsage is set when the app asked for a usage chunk; ingress adds
	// that chunk from Answer.Usage, so upstream usage chunks are never
	// emitted.
	appUsage bool
	model    json.RawMessage // the catalog ID, as JSON
	emit     func([]byte) error
	emitted  int
}

// failure is a failed attempt.
type failure struct {
	status     int // the upstream's HTTP status; 0 when it did not answer
	retry      bool
	retryAfter time.Duration
	// dropStreamOptions asks for another attempt with the plain body.
	dropStreamOptions bool
	err               error // what Serve returns: an *Error or an internal error
	cause             error // for the log: the transport error behind err
}

// Serve answers one request through the upstream.
func (u *Upstream) Serve(ctx context.Context, req events.InferenceRequest, emit func(chunk []byte) error) (Answer, error) {
	c, err := u.newCall(req, emit)
	if err != nil {
		return Answer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	log := u.log.With(zap.String("request_id", req.RequestID), zap.String("model", req.Model))
	start := time.Now()
	for attempt := 1; ; attempt++ {
		began := time.Now()
		ans, f := u.attempt(ctx, c)
		if f == nil {
			log.Debug("upstream answered", zap.Int("attempts", attempt), zap.Int("chunks", c.emitted), zap.Duration("duration", time.Since(start)))
			return ans, nil
		}
		if ctx.Err() != nil {
			log.Warn("upstream call ended by its deadline or cancellation", zap.Int("attempt", attempt), zap.Int("chunks", c.emitted),
				zap.Duration("duration", time.Since(start)))
			return Answer{}, contextError(ctx)
		}
		fields := []zap.Field{zap.Int("attempt", attempt), zap.Int("status", f.status), zap.Int("chunks", c.emitted), zap.Duration("duration", time.Since(began))}
		if f.cause != nil {
			// A transport error names the upstream host and what failed,
			// never request content.
			fields = append(fields, zap.NamedError("cause", f.cause))
		}
		log.Warn("upstream attempt failed", fields...)
		if f.dropStreamOptions && c.emitted == 0 {
			// Not counted: it is a one-off change of the request, not a
			// retry of the same one.
			c.body, c.plain = c.plain, nil
			attempt--
			continue
		}
		if !f.retry || c.emitted > 0 || attempt >= upstreamAttempts {
			return Answer{}, f.err
		}
		delay := u.delay(attempt, f.retryAfter)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= delay {
			// Waiting would only turn the upstream's answer into a timeout.
			return Answer{}, f.err
		}
		if err := u.wait(ctx, delay); err != nil {
			return Answer{}, contextError(ctx)
		}
	}
}

// delay is the wait before retry number attempt: the upstream's
// Retry-After up to the cap, or exponential backoff with jitter.
func (u *Upstream) delay(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, u.retryAfterCap)
	}
	d := u.retryBase << (attempt - 1)
	return d/2 + rand.N(d/2+1)
}

// contextError is what a call ended by ctx returns: a timeout error when
// a deadline passed, otherwise the cancellation itself, so the worker
// leaves the request to be redelivered.
func contextError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Kind: events.ErrorTimeout, Code: "timeout", Message: "the model's upstream server did not answer in time"}
	}
	return fmt.Errorf("calling the upstream: %w", ctx.Err())
}

func (u *Upstream) newCall(req events.InferenceRequest, emit func([]byte) error) (*call, error) {
	path, ok := upstreamPaths[req.Operation]
	if !ok {
		return nil, invalid("", fmt.Sprintf("operation %s is not served by upstream models", req.Operation))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &m); err != nil || m == nil {
		return nil, invalid("", "the request body could not be read")
	}
	c := &call{req: req, path: path, stream: req.Stream && req.Operation != events.OperationEmbeddings, emit: emit}
	var err error
	if c.model, err = json.Marshal(req.Model); err != nil {
		return nil, err
	}
	if m["model"], err = json.Marshal(u.model); err != nil {
		return nil, err
	}
	if req.Operation != events.OperationEmbeddings {
		m["stream"] = json.RawMessage(strconv.FormatBool(c.stream))
	}
	if !c.stream {
		delete(m, "stream_options")
		c.body, err = json.Marshal(m)
		return c, err
	}
	// Ask for a usage chunk whether or not the app did: the upstream's
	// count is the one that matches its model's tokenizer.
	opts := map[string]json.RawMessage{}
	if raw, ok := m["stream_options"]; ok {
		_ = json.Unmarshal(raw, &opts)
		var asked bool
		_ = json.Unmarshal(opts["include_usage"], &asked)
		c.appUsage = asked
	}
	delete(m, "stream_options")
	if c.plain, err = json.Marshal(m); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = map[string]json.RawMessage{}
	}
	opts["include_usage"] = json.RawMessage("true")
	if m["stream_options"], err = json.Marshal(opts); err != nil {
		return nil, err
	}
	c.body, err = json.Marshal(m)
	return c, err
}

// attempt makes one call to the upstream.
func (u *Upstream) attempt(ctx context.Context, c *call) (Answer, *failure) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.endpoint+c.path, bytes.NewReader(c.body))
	if err != nil {
		return Answer{}, &failure{err: fmt.Errorf("building the upstream request: %w", err)}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "terroir-inference")
	if c.stream {
		hreq.Header.Set("Accept", "text/event-stream")
	} else {
		hreq.Header.Set("Accept", "application/json")
	}
	if u.apiKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+u.apiKey)
	}
	resp, err := u.client.Do(hreq)
	if err != nil {
		return Answer{}, &failure{retry: true, cause: err,
			err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_unreachable", Message: "the model's upstream server could not be reached"}}
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		f := u.statusFailure(resp.StatusCode, parseUpstreamError(raw), c)
		f.retryAfter = retryAfter(resp.Header, time.Now())
		return Answer{}, f
	}
	if c.stream && !isJSON(resp.Header) {
		return u.readStream(resp.Body, c)
	}
	return u.readBody(resp.Body, c)
}

func isJSON(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "application/json"
}

// upstreamError is what an upstream's error body says, in any of the
// shapes OpenAI-compatible servers use.
type upstreamError struct {
	message, param, code, kind string
	status                     int // a numeric "code", as vLLM and llama.cpp send
}

func parseUpstreamError(raw []byte) upstreamError {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return upstreamError{}
	}
	fields := top
	if e, ok := top["error"]; ok {
		var s string
		if json.Unmarshal(e, &s) == nil { // Ollama: {"error": "message"}
			return upstreamError{message: s}
		}
		var inner map[string]json.RawMessage
		if json.Unmarshal(e, &inner) == nil && inner != nil {
			fields = inner
		}
	}
	var out upstreamError
	_ = json.Unmarshal(fields["message"], &out.message)
	_ = json.Unmarshal(fields["param"], &out.param)
	_ = json.Unmarshal(fields["type"], &out.kind)
	if json.Unmarshal(fields["code"], &out.code) != nil {
		_ = json.Unmarshal(fields["code"], &out.status)
	}
	return out
}

// statusOf guesses the HTTP status an error reported inside a 200 answer
// stands for.
func (e upstreamError) statusOf() int {
	if e.status >= 400 && e.status <= 599 {
		return e.status
	}
	k := strings.ToLower(e.kind + " " + e.code)
	switch {
	case strings.Contains(k, "invalid_request") || strings.Contains(k, "badrequest") || strings.Contains(k, "bad_request"):
		return http.StatusBadRequest
	case strings.Contains(k, "rate_limit"):
		return http.StatusTooManyRequests
	case strings.Contains(k, "auth") || strings.Contains(k, "permission"):
		return http.StatusUnauthorized
	case strings.Contains(k, "not_found") || strings.Contains(k, "notfound"):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

var codePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// statusFailure maps an upstream error to the bus's error vocabulary.
// Only a 400's message and param reach the app: they describe its own
// request. Other upstream messages may describe the upstream's internals.
func (u *Upstream) statusFailure(status int, ue upstreamError, c *call) *failure {
	f := &failure{status: status}
	switch {
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity:
		msg := capMessage(ue.message)
		if msg == "" {
			msg = "the model's upstream server rejected the request"
		}
		code := "invalid_value"
		if codePattern.MatchString(ue.code) {
			code = ue.code
		}
		param := ue.param
		if len(param) > 128 {
			param = ""
		}
		f.err = &Error{Kind: events.ErrorInvalidRequest, Code: code, Param: param, Message: msg}
		f.dropStreamOptions = c.plain != nil && (strings.HasPrefix(ue.param, "stream_options") || strings.Contains(ue.message, "stream_options"))
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		u.log.Error("upstream refused the configured key", zap.String("request_id", c.req.RequestID), zap.String("model", c.req.Model), zap.Int("status", status))
		f.err = &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_auth_failed",
			Message: "the model's upstream server refused the key this service is configured with; your own API key is fine, the operator must fix the upstream's configuration"}
	case status == http.StatusNotFound:
		f.err = &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_model_not_found", Message: "model not found upstream"}
	case status == http.StatusTooManyRequests:
		f.retry = true
		f.err = &Error{Kind: events.ErrorRateLimited, Code: "rate_limit_exceeded", Message: "the model's upstream server is rate limiting requests; retry later"}
	case status >= 500:
		f.retry = true
		f.err = &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error", Message: fmt.Sprintf("the model's upstream server failed (status %d)", status)}
	default:
		f.err = &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error", Message: fmt.Sprintf("the model's upstream server answered with status %d", status)}
	}
	return f
}

// capMessage makes an upstream message fit to pass on: valid UTF-8, no
// control characters, at most maxUpstreamMessage characters.
func capMessage(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) <= maxUpstreamMessage {
		return s
	}
	return string([]rune(s)[:maxUpstreamMessage])
}

// retryAfter reads retry-after-ms (OpenAI, Azure) or Retry-After
// (seconds or an HTTP date); 0 when absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && ms < 1e9 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 || s > 1e6 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// upstreamUsage is a usage object as upstreams send it.
type upstreamUsage struct {
	PromptTokens     *int `json:"prompt_tokens"`
	CompletionTokens *int `json:"completion_tokens"`
	TotalTokens      *int `json:"total_tokens"`
}

// usage returns the usage in raw, if it holds any.
func usageOf(raw json.RawMessage) (events.Usage, bool) {
	var uu upstreamUsage
	if len(raw) == 0 || json.Unmarshal(raw, &uu) != nil || uu.PromptTokens == nil {
		return events.Usage{}, false
	}
	out := events.Usage{PromptTokens: *uu.PromptTokens}
	if uu.CompletionTokens != nil {
		out.CompletionTokens = *uu.CompletionTokens
	}
	out.TotalTokens = out.PromptTokens + out.CompletionTokens
	if uu.TotalTokens != nil && *uu.TotalTokens > out.TotalTokens {
		out.TotalTokens = *uu.TotalTokens
	}
	return out, true
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// inBodyError maps an error object an upstream sent with status 200, as
// a whole body or as a stream event.
func (u *Upstream) inBodyError(obj map[string]json.RawMessage, c *call) *failure {
	raw, _ := json.Marshal(map[string]json.RawMessage{"error": obj["error"]})
	ue := parseUpstreamError(raw)
	return u.statusFailure(ue.statusOf(), ue, c)
}

// choiceOutput is what usage counting needs of a choice.
type choiceOutput struct {
	Index        int             `json:"index"`
	Text         *string         `json:"text"`
	Message      *messageOutput  `json:"message"`
	Delta        *messageOutput  `json:"delta"`
	FinishReason json.RawMessage `json:"finish_reason"`
}

type messageOutput struct {
	Content   *string `json:"content"`
	Refusal   *string `json:"refusal"`
	ToolCalls []struct {
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// writeText appends the generated text of a choice (or of a delta).
func (ch choiceOutput) writeText(b *strings.Builder) {
	if ch.Text != nil {
		b.WriteString(*ch.Text)
	}
	for _, m := range []*messageOutput{ch.Message, ch.Delta} {
		if m == nil {
			continue
		}
		if m.Content != nil {
			b.WriteString(*m.Content)
		}
		if m.Refusal != nil {
			b.WriteString(*m.Refusal)
		}
		for _, tc := range m.ToolCalls {
			b.WriteString(tc.Function.Name)
			b.WriteString(tc.Function.Arguments)
		}
	}
}

// promptTokens counts the prompt of the app's request with the
// OpenAI-compatible tokenizer, for an upstream that reports no usage.
func promptTokens(req events.InferenceRequest) int {
	switch req.Operation {
	case events.OperationChatCompletions:
		var r openai.ChatRequest
		if json.Unmarshal(req.Body, &r) != nil {
			return 0
		}
		msgs := make([]builtin.Message, 0, len(r.Messages))
		for _, m := range r.Messages {
			text, _ := m.Text()
			msgs = append(msgs, builtin.Message{Role: m.Role, Content: text, Name: m.Name})
		}
		return builtin.CountChatTokens(msgs)
	case events.OperationCompletions:
		var r openai.CompletionRequest
		if json.Unmarshal(req.Body, &r) != nil {
			return 0
		}
		prompts, _ := r.Prompts()
		return countAll(prompts)
	case events.OperationEmbeddings:
		var r openai.EmbeddingRequest
		if json.Unmarshal(req.Body, &r) != nil {
			return 0
		}
		inputs, _ := r.Inputs()
		return countAll(inputs)
	}
	return 0
}

func countedUsage(req events.InferenceRequest, outputs map[int]*strings.Builder) events.Usage {
	u := events.Usage{PromptTokens: promptTokens(req)}
	for _, b := range outputs {
		u.CompletionTokens += builtin.CountTokens(b.String())
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// readBody reads a non-streamed answer.
func (u *Upstream) readBody(body io.Reader, c *call) (Answer, *failure) {
	raw, err := io.ReadAll(io.LimitReader(body, maxUpstreamBody+1))
	if err != nil {
		return Answer{}, &failure{retry: true, cause: err,
			err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error", Message: "the model's upstream server broke off its answer"}}
	}
	if len(raw) > maxUpstreamBody {
		return Answer{}, &failure{status: http.StatusOK, err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error",
			Message: "the model's upstream server answered with more than this service accepts"}}
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return Answer{}, &failure{status: http.StatusOK, err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error",
			Message: "the model's upstream server sent an answer that could not be read"}}
	}
	if e, ok := obj["error"]; ok && !isNull(e) {
		return Answer{}, u.inBodyError(obj, c)
	}
	if c.stream {
		return Answer{}, &failure{status: http.StatusOK, err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error",
			Message: "the model's upstream server did not stream its answer"}}
	}
	obj["model"] = c.model
	usage, ok := usageOf(obj["usage"])
	if !ok {
		outputs := map[int]*strings.Builder{}
		var choices []choiceOutput
		_ = json.Unmarshal(obj["choices"], &choices)
		for i, ch := range choices {
			b := &strings.Builder{}
			ch.writeText(b)
			outputs[i] = b
		}
		usage = countedUsage(c.req, outputs)
		var err error
		if c.req.Operation == events.OperationEmbeddings {
			obj["usage"], err = json.Marshal(map[string]int{"prompt_tokens": usage.PromptTokens, "total_tokens": usage.TotalTokens})
		} else {
			obj["usage"], err = json.Marshal(usage)
		}
		if err != nil {
			return Answer{}, &failure{err: err}
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return Answer{}, &failure{err: fmt.Errorf("writing the answer: %w", err)}
	}
	return Answer{Body: out, Usage: usage}, nil
}

// readStream passes a streamed answer through, chunk by chunk.
func (u *Upstream) readStream(body io.Reader, c *call) (Answer, *failure) {
	sse := newSSEReader(body)
	outputs := map[int]*strings.Builder{}
	finished := map[int]bool{}
	var usage *events.Usage
	// A stream that ends early is retried only if nothing was emitted
	// (Serve checks).
	ended := func(msg string, cause error) *failure {
		return &failure{status: http.StatusOK, retry: true, cause: cause,
			err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_stream_broken", Message: msg}}
	}
	done := false
	for !done {
		data, err := sse.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Answer{}, ended("the model's upstream server broke off its stream", err)
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			done = true
			break
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil || obj == nil {
			return Answer{}, &failure{status: http.StatusOK, err: &Error{Kind: events.ErrorUpstreamFailed, Code: "upstream_error",
				Message: "the model's upstream server sent a chunk that could not be read"}}
		}
		if e, ok := obj["error"]; ok && !isNull(e) {
			return Answer{}, u.inBodyError(obj, c)
		}
		if raw, ok := obj["usage"]; ok {
			if uu, ok := usageOf(raw); ok {
				usage = &uu
			}
		}
		var choices []choiceOutput
		_ = json.Unmarshal(obj["choices"], &choices)
		if len(choices) == 0 {
			// A usage chunk (ingress writes the app's own from
			// Answer.Usage) or upstream bookkeeping: no output.
			continue
		}
		for _, ch := range choices {
			b := outputs[ch.Index]
			if b == nil {
				b = &strings.Builder{}
				outputs[ch.Index] = b
			}
			ch.writeText(b)
			if !isNull(ch.FinishReason) {
				finished[ch.Index] = true
			}
		}
		obj["model"] = c.model
		if c.appUsage {
			obj["usage"] = json.RawMessage("null") // as OpenAI sends before the usage chunk
		} else {
			delete(obj, "usage")
		}
		chunk, err := json.Marshal(obj)
		if err != nil {
			return Answer{}, &failure{err: fmt.Errorf("writing a chunk: %w", err)}
		}
		c.emitted++
		if err := c.emit(chunk); err != nil {
			return Answer{}, &failure{err: fmt.Errorf("emitting a chunk: %w", err)}
		}
	}
	if !done {
		// A clean end without [DONE] is accepted from servers that omit
		// it once every choice has finished.
		complete := len(outputs) > 0
		for i := range outputs {
			complete = complete && finished[i]
		}
		if !complete {
			return Answer{}, ended("the model's upstream server ended its stream before the answer was complete", nil)
		}
	}
	if usage == nil {
		uu := countedUsage(c.req, outputs)
		usage = &uu
	}
	return Answer{Usage: *usage}, nil
}

// sseReader reads the data of server-sent events: "data:" lines (several
// make one event, joined by newlines) up to a blank line; comments and
// other fields are skipped; lines may end in \n, \r\n or \r.
type sseReader struct {
	sc   *bufio.Scanner
	data bytes.Buffer
	has  bool
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxUpstreamEvent)
	sc.Split(scanLines)
	return &sseReader{sc: sc}
}

// next returns the next event's data; io.EOF at a clean end of the
// stream. An event cut off by the end of the stream is still returned.
func (s *sseReader) next() ([]byte, error) {
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			if out, ok := s.take(); ok {
				return out, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		if string(field) != "data" {
			continue
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		if s.has {
			s.data.WriteByte('\n')
		}
		s.data.Write(value)
		s.has = true
		if s.data.Len() > maxUpstreamEvent {
			return nil, bufio.ErrTooLong
		}
	}
	if err := s.sc.Err(); err != nil {
		return nil, err
	}
	if out, ok := s.take(); ok {
		return out, nil
	}
	return nil, io.EOF
}

func (s *sseReader) take() ([]byte, bool) {
	if !s.has {
		return nil, false
	}
	out := bytes.Clone(s.data.Bytes())
	s.data.Reset()
	s.has = false
	return out, true
}

// scanLines splits at \n, \r\n or a lone \r.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a \n may follow
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// countAll is the tokens of every text.
func countAll(texts []string) int {
	n := 0
	for _, t := range texts {
		n += builtin.CountTokens(t)
	}
	return n
}
