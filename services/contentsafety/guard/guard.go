// Package guard is content safety's optional second stage: it asks a
// safety model (Llama Guard 3, ShieldGemma or a comparable guard model)
// served by any OpenAI-compatible server (vLLM, llama.cpp server, Ollama)
// to rate a prompt or an output, and expresses the model's verdict as a
// classifier.Result, so that it merges with the built-in rules' result
// and the stricter verdict wins.
//
// A Guard sends one POST {base}/v1/chat/completions per check (one per
// harm policy for ShieldGemma) with temperature 0 and a small max_tokens,
// bounded by a per-call timeout (default 2 s) and a limit on concurrent
// calls (default 16). It never logs, counts or returns the text it rates:
// logs carry lengths, reasons and timings, errors the failure's kind.
//
// # Use in a pipeline stage
//
// A stage that has classified a text with the rules asks the guard where
// the deployment's content-filter policy lets it, then merges:
//
//	rules := rulesOf(pol, dir)                      // control.FilterRules of the direction
//	d := g.Evaluate(ctx, rules.Guard, dir, texts)   // g may be nil: no guard configured
//	switch {
//	case d.Outcome == guard.OutcomeError:
//		return d.Err                                // the caller's context ended: retry the record
//	case d.Blocked:
//		// the guard failed and the policy fails closed: block the text
//		// as filtered, whatever the rules found
//	default:
//		r = classifier.Merge(r, d.Result)           // d.Result is empty unless the guard rated
//	}
//
// For a prompt, texts are the prompt's texts, rated together as the
// user's turn. For an output, texts are the prompt's texts followed by the
// output as the last element: the guard rates the assistant's turn in the
// context of the prompt (Llama Guard's "Agent" assessment); an output
// alone (one element) is rated after an empty user turn. Each Check is a
// model call, so a stage calls it once per text it decides on (a prompt,
// a choice's output), not once per stream window.
//
// Evaluate is Check followed by Decide, which applies the policy's
// failure mode: when the guard is unavailable (unreachable, an HTTP
// error, past its timeout, too many calls waiting, an answer that is not
// a verdict), a policy that fails open lets the rules decide alone and a
// policy that fails closed blocks the text. Either way the failure is
// counted in terroir_guard_failures_total and the decision in
// terroir_guard_decisions_total.
package guard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// Defaults of Config.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultConcurrency = 16
	// DefaultMaxTokens leaves room for "unsafe" and all fourteen Llama
	// Guard 3 categories; a guard model stops after its verdict anyway.
	DefaultMaxTokens = 48
)

// maxResponseBytes bounds what is read of an answer: a verdict is a few
// bytes, and a server gone wrong must not make the service buffer
// megabytes.
const maxResponseBytes = 1 << 20

// Config configures a Guard.
type Config struct {
	// URL is the model server's base URL, http or https, such as
	// http://127.0.0.1:8000; a trailing /v1 (as catalog base URLs have)
	// is accepted. Empty means no guard model: the rules decide alone.
	URL string
	// Model is the name the server knows the guard model by, such as
	// meta-llama/Llama-Guard-3-8B (vLLM) or llama-guard3 (Ollama).
	Model string
	// APIKey is sent as a bearer token when set. It is never logged.
	APIKey string
	// Format is how the model is asked and answers; FormatLlamaGuard
	// when empty.
	Format Format
	// Timeout bounds one check, waiting for a free slot included;
	// DefaultTimeout when 0.
	Timeout time.Duration
	// Concurrency bounds the calls in flight to the server;
	// DefaultConcurrency when 0.
	Concurrency int
	// MaxTokens is the max_tokens of each call; DefaultMaxTokens when 0.
	MaxTokens int
}

// Enabled reports whether a guard model is configured.
func (c Config) Enabled() bool { return c.URL != "" }

// Endpoint returns the chat-completions URL of a base URL, or why the
// base URL is not usable.
func Endpoint(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("not an http or https URL such as http://127.0.0.1:8000")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("a base URL has no query or fragment")
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, "/v1") {
		p += "/v1"
	}
	u.Path = p + "/chat/completions"
	u.RawPath = ""
	return u.String(), nil
}

// Guard asks a guard model to rate texts. It is safe for concurrent use.
type Guard struct {
	cfg      Config
	endpoint string
	host     string // for logs: the URL may carry credentials, the host does not
	format   format
	client   *http.Client
	slots    chan struct{}
	log      *zap.Logger
	m        metrics
	down     atomic.Bool
}

// New checks cfg and returns a Guard whose metrics are registered with
// reg (nil registers nothing).
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Guard, error) {
	if log == nil {
		return nil, errors.New("guard: a logger is required")
	}
	endpoint, err := Endpoint(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("guard: URL: %w", err)
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("guard: a model name is required")
	}
	if cfg.Format == "" {
		cfg.Format = FormatLlamaGuard
	}
	f, err := formatOf(cfg.Format)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 || cfg.Concurrency < 0 || cfg.MaxTokens < 0 {
		return nil, errors.New("guard: timeout, concurrency and max tokens cannot be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = DefaultMaxTokens
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(endpoint)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// keep a warm connection per slot: a new TCP (and TLS) handshake
	// would cost more than the verdict itself
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	return &Guard{cfg: cfg, endpoint: endpoint, host: u.Host, format: f, client: &http.Client{Transport: tr},
		slots: make(chan struct{}, cfg.Concurrency), log: log.Named("guard"), m: m}, nil
}

// Config returns the configuration in effect, defaults filled in.
func (g *Guard) Config() Config { return g.cfg }

// Close releases idle connections to the model server. It is idempotent.
func (g *Guard) Close() { g.client.CloseIdleConnections() }

// Reason says why the guard model was unavailable. Reasons are metric
// labels.
type Reason string

// Reasons.
const (
	// ReasonTimeout: no verdict within the timeout.
	ReasonTimeout Reason = "timeout"
	// ReasonBusy: every slot stayed taken until the timeout.
	ReasonBusy Reason = "busy"
	// ReasonTransport: the server could not be reached.
	ReasonTransport Reason = "transport"
	// ReasonStatus: the server answered with an HTTP error.
	ReasonStatus Reason = "status"
	// ReasonMalformed: the answer is not a chat completion, or its text
	// is not a verdict in the configured format.
	ReasonMalformed Reason = "malformed"
)

// ErrUnavailable matches every UnavailableError with errors.Is.
var ErrUnavailable = errors.New("guard model unavailable")

// UnavailableError reports that the guard model could not rate a text.
// Its message names the failure's kind, never the text.
type UnavailableError struct {
	Reason Reason
	// Status is the server's HTTP status, for ReasonStatus.
	Status int
	// Err is the underlying error, if any.
	Err error
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "guard model unavailable (%s", e.Reason)
	if e.Status != 0 {
		fmt.Fprintf(&b, ", HTTP %d", e.Status)
	}
	b.WriteString(")")
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// IsUnavailable reports whether err says the guard model was unavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// Check asks the guard model to rate texts in direction dir (see the
// package comment for what texts hold) and returns its verdict: a
// severity for every harm category (safe unless the model found it), and
// the model's categories as rule IDs such as "guard.S1". A failure of the
// guard model is an *UnavailableError; when ctx itself ends, ctx's error
// is returned instead, so the caller can tell shutdown from an outage.
// Texts with nothing to rate are safe without a call.
func (g *Guard) Check(ctx context.Context, dir events.Direction, texts []string) (classifier.Result, error) {
	if dir != events.DirectionPrompt && dir != events.DirectionCompletion {
		return classifier.Result{}, fmt.Errorf("guard: unknown direction %q", dir)
	}
	conv := newConversation(dir, texts)
	if conv.empty() {
		return newResult(), nil
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	probes := g.format.probes(conv)
	results := make([]classifier.Result, len(probes))
	errs := make([]error, len(probes))
	if len(probes) == 1 {
		results[0], errs[0] = g.ask(cctx, probes[0])
	} else {
		var wg sync.WaitGroup
		for i, p := range probes {
			wg.Go(func() { results[i], errs[i] = g.ask(cctx, p) })
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	labels := prometheus.Labels{"direction": string(dir)}
	g.m.calls.With(labels).Inc()
	g.m.duration.With(labels).Observe(elapsed.Seconds())

	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return classifier.Result{}, fmt.Errorf("guard check ended with its caller: %w", ctx.Err())
		}
		var u *UnavailableError
		for _, e := range errs {
			if errors.As(e, &u) {
				break
			}
		}
		if u == nil {
			u = &UnavailableError{Reason: ReasonTransport, Err: err}
		}
		g.m.failures.With(prometheus.Labels{"direction": string(dir), "reason": string(u.Reason)}).Inc()
		g.failed(dir, u, conv.bytes(), elapsed)
		return classifier.Result{}, u
	}
	out := newResult()
	for _, r := range results {
		out = classifier.Merge(out, r)
	}
	verdict := "safe"
	if len(out.Rules) > 0 {
		verdict = "unsafe"
	}
	g.m.verdicts.With(prometheus.Labels{"direction": string(dir), "verdict": verdict}).Inc()
	if g.down.Swap(false) {
		g.log.Info("guard model available again", zap.String("host", g.host))
	}
	return out, nil
}

// failed logs a failure: the first after a success at warn level, the
// rest at debug, so an outage does not flood the log; the metric counts
// every one.
func (g *Guard) failed(dir events.Direction, u *UnavailableError, size int, elapsed time.Duration) {
	fields := []zap.Field{zap.String("host", g.host), zap.String("direction", string(dir)), zap.String("reason", string(u.Reason)),
		zap.Int("bytes", size), zap.Duration("duration", elapsed)}
	if u.Status != 0 {
		fields = append(fields, zap.Int("status", u.Status))
	}
	if !g.down.Swap(true) {
		g.log.Warn("guard model unavailable", fields...)
		return
	}
	g.log.Debug("guard model unavailable", fields...)
}

// chatRequest is the body of a chat-completions call.
type chatRequest struct {
	Model       string    `json:"model"`
	Messages    []message `json:"messages"`
	Temperature float64   `json:"temperature"`
	MaxTokens   int       `json:"max_tokens"`
	Stream      bool      `json:"stream"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatResponse is what is read of a chat completion.
type chatResponse struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

// ask makes one call within ctx's deadline and parses its verdict.
func (g *Guard) ask(ctx context.Context, p probe) (classifier.Result, error) {
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	case <-ctx.Done():
		return classifier.Result{}, &UnavailableError{Reason: ReasonBusy, Err: errors.New("no free slot before the timeout")}
	}
	body, err := json.Marshal(chatRequest{Model: g.cfg.Model, Messages: p.messages, MaxTokens: g.cfg.MaxTokens})
	if err != nil {
		return classifier.Result{}, fmt.Errorf("encoding a guard request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint, bytes.NewReader(body))
	if err != nil {
		return classifier.Result{}, fmt.Errorf("building a guard request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if g.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+g.cfg.APIKey)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return classifier.Result{}, &UnavailableError{Reason: ReasonTimeout, Err: errors.New("no answer within the timeout")}
		}
		return classifier.Result{}, &UnavailableError{Reason: ReasonTransport, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return classifier.Result{}, &UnavailableError{Reason: ReasonTimeout, Err: errors.New("the answer did not finish within the timeout")}
		}
		return classifier.Result{}, &UnavailableError{Reason: ReasonTransport, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		// the body of an error is not read into the error: a server may
		// echo the request in it
		return classifier.Result{}, &UnavailableError{Reason: ReasonStatus, Status: resp.StatusCode}
	}
	if len(raw) > maxResponseBytes {
		return classifier.Result{}, &UnavailableError{Reason: ReasonMalformed, Err: fmt.Errorf("the answer is larger than %d bytes", maxResponseBytes)}
	}
	var cr chatResponse
	if err := json.Unmarshal(raw, &cr); err != nil {
		return classifier.Result{}, &UnavailableError{Reason: ReasonMalformed, Err: fmt.Errorf("the answer (%d bytes) is not a chat completion", len(raw))}
	}
	if len(cr.Choices) == 0 || cr.Choices[0].Message.Content == nil {
		return classifier.Result{}, &UnavailableError{Reason: ReasonMalformed, Err: errors.New("the answer has no message content")}
	}
	r, err := p.parse(*cr.Choices[0].Message.Content)
	if err != nil {
		return classifier.Result{}, &UnavailableError{Reason: ReasonMalformed, Err: err}
	}
	return r, nil
}

// metrics are the guard's Prometheus metrics. Labels are a direction, a
// reason, a verdict or an outcome: never text, never a resource.
type metrics struct {
	calls     *prometheus.CounterVec
	failures  *prometheus.CounterVec
	verdicts  *prometheus.CounterVec
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_guard_calls_total",
			Help: "Checks sent to the guard model, by direction (a ShieldGemma check is one call per harm policy)."}, []string{"direction"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_guard_failures_total",
			Help: "Checks the guard model could not answer, by direction and reason (timeout, busy, transport, status, malformed)."}, []string{"direction", "reason"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_guard_verdicts_total",
			Help: "Verdicts of the guard model, by direction and verdict (safe, unsafe)."}, []string{"direction", "verdict"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "terroir_guard_decisions_total",
			Help: "What a content-filter policy made of the guard stage, by direction and outcome (rated, skipped, failed_open, failed_closed, error)."}, []string{"direction", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "terroir_guard_call_duration_seconds",
			Help:    "Time a check of the guard model took, failures included, by direction.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10}}, []string{"direction"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.calls, m.failures, m.verdicts, m.decisions, m.duration} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("guard: registering metrics: %w", err)
		}
	}
	return m, nil
}
