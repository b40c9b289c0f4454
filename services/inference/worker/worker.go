// Package worker is the inference service's model worker: it consumes the
// approved requests of the geographies it serves, answers each with the
// backend its catalog model names, publishes the output (chunks as they
// come, then the result) to the geography's completions topic for content
// safety to check, publishes a usage record per request and, every few
// seconds, a capacity report per model. It keeps nothing: no prompt or
// output is written to disk, cached or logged.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Answer is a backend's answer: the response body (empty for streams,
// whose chunks went out through emit) and the token usage.
type Answer struct {
	Body  json.RawMessage
	Usage events.Usage
}

// Backend answers requests for the models it serves; for streams it
// calls emit with each chunk object in order.
type Backend interface {
	Serve(ctx context.Context, req events.InferenceRequest, emit func(chunk []byte) error) (Answer, error)
}

// Error is a failure the app is told about, in the bus's error vocabulary.
type Error struct {
	Kind    events.ErrorKind
	Code    string
	Param   string
	Message string
}

func (e *Error) Error() string { return e.Message }

func invalid(param, message string) *Error {
	return &Error{Kind: events.ErrorInvalidRequest, Code: "invalid_value", Param: param, Message: message}
}

// Config configures a worker.
type Config struct {
	Bus     *bus.Bus
	Catalog *catalog.Catalog
	// Backends maps catalog model IDs to their backend; models without
	// one are not served here.
	Backends map[string]Backend
	// Geos are the geographies whose requests this worker takes.
	Geos []string
	// Instance names the worker in capacity reports.
	Instance string
	// TokensPerMinute is the capacity reported per model.
	TokensPerMinute int64
	// ReportEvery is the interval of capacity reports (default 2 s).
	ReportEvery time.Duration
	// Timeout bounds one request (default 120 s).
	Timeout time.Duration
	// Concurrency bounds the requests answered at once (default 512); a
	// slow answer holds up no other request.
	Concurrency int
	// Lanes are the request-path lanes this worker serves (default both),
	// each with its own consumer; an answer goes out on the lane its
	// request came in on.
	Lanes []bus.Lane
	Log   *zap.Logger
}

// Worker serves requests until its context ends.
type Worker struct {
	cfg   Config
	load  *load
	group string
}

// New checks cfg.
func New(cfg Config) (*Worker, error) {
	if cfg.Bus == nil || cfg.Catalog == nil || len(cfg.Backends) == 0 || len(cfg.Geos) == 0 || cfg.Log == nil || cfg.Instance == "" {
		return nil, errors.New("worker: bus, catalog, backends, geographies, instance and logger are required")
	}
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 120 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 512
	}
	cfg.Log = cfg.Log.Named("worker")
	return &Worker{cfg: cfg, load: newLoad(), group: "inference"}, nil
}

// Run consumes requests and reports capacity until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	consumers, err := w.cfg.Bus.NewLaneConsumers(w.cfg.Lanes, bus.ConsumerConfig{Group: w.group, Streams: []string{bus.StreamInference}, Geos: w.cfg.Geos, Handler: w.handle,
		Concurrency: w.cfg.Concurrency})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	// Capacity reports are what real time uses of the capacity: an
	// instance of the batch lane alone reports none, so ingress routes
	// real time by the real-time instances, and batch lines are admitted
	// against what real time leaves.
	if bus.Serves(w.cfg.Lanes, bus.LaneRealtime) {
		wg.Go(func() { w.report(ctx) })
	}
	err = bus.RunConsumers(ctx, consumers)
	wg.Wait()
	return err
}

func (w *Worker) handle(ctx context.Context, d *bus.Delivery) error {
	var req events.InferenceRequest
	if err := d.Decode(ctx, &req); err != nil {
		return err // Decode marks what can never be read as permanent
	}
	log := w.cfg.Log.WithLazy(zap.String("request_id", req.RequestID), zap.String("resource", req.Resource), zap.String("deployment", req.Deployment), zap.String("geo", d.Geo))
	start := time.Now()
	meta := d.Meta
	meta.Key = ""
	seq := 0
	// Every run of a request names itself: a redelivered request (this
	// worker stopped, or lost the partition, mid-answer) or a retried one
	// starts the answer again, and content safety must not splice it with
	// what an earlier run wrote.
	attempt := w.cfg.Instance + "-" + rand.Text()
	// Chunks go out without waiting for each acknowledgement (the
	// producer keeps their order); the result waits for all of them.
	var chunks []*bus.Sending
	completions := bus.LaneOf(d.Stream).Stream(bus.StreamCompletions)
	publish := func(ev events.Event, final bool) error {
		meta.Seq, meta.Final = seq, final
		seq++
		if !final {
			chunks = append(chunks, w.cfg.Bus.PublishAsync(ctx, d.Geo, completions, meta, ev))
			return nil
		}
		if err := bus.WaitAll(chunks...); err != nil {
			return err
		}
		return w.cfg.Bus.Publish(ctx, d.Geo, completions, meta, ev)
	}
	result := events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Attempt: attempt, Operation: req.Operation}
	// What content safety put on the request comes back on the result,
	// whatever the outcome: its output stage records the request from it.
	result.Echo(req)
	be, ok := w.cfg.Backends[req.Model]
	switch {
	case d.Expired():
		// Its caller stopped waiting: the model is not asked, and the
		// result (which still carries content safety's check, so the
		// request is recorded as for any other error) costs little.
		result.Status, result.Error = events.StatusError, &events.ResultError{Kind: events.ErrorTimeout, Code: "timeout",
			Message: "the request waited longer than its caller did; the model was not asked"}
	case !ok:
		result.Status, result.Error = events.StatusError, &events.ResultError{Kind: events.ErrorNotFound, Code: "model_not_found",
			Message: fmt.Sprintf("model %s is not served by this worker", req.Model)}
	default:
		rctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
		ans, err := be.Serve(rctx, req, func(chunk []byte) error {
			return publish(events.InferenceChunk{RequestID: req.RequestID, Seq: seq, Attempt: attempt, Operation: req.Operation, Body: chunk, CreatedAt: time.Now().UTC()}, false)
		})
		cancel()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				if ctx.Err() != nil {
					return ctx.Err() // shutting down: redelivered to another worker
				}
				log.Error("backend failed", zap.Error(err))
				e = &Error{Kind: events.ErrorInternal, Code: "internal_error", Message: "the model failed to answer"}
			}
			result.Status, result.Error = events.StatusError, &events.ResultError{Kind: e.Kind, Code: e.Code, Param: e.Param, Message: e.Message}
		} else {
			result.Body, result.Usage = ans.Body, &ans.Usage
			w.load.add(req.Model, ans.Usage.TotalTokens)
		}
	}
	result.CreatedAt = time.Now().UTC()
	// The usage record and the result go out together: the answer does
	// not wait for metering.
	var usage *bus.Sending
	if result.Usage != nil {
		u := *result.Usage
		usage = w.cfg.Bus.PublishAsync(ctx, d.Geo, bus.StreamUsage, bus.Meta{Key: req.RequestID}, events.UsageRecord{
			RequestID: req.RequestID, Resource: req.Resource, Deployment: req.Deployment, SKU: req.SKU, Model: req.Model,
			ProcessingGeo: d.Geo, HomeGeo: req.HomeGeo, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
			TotalTokens: u.TotalTokens, RecordedAt: time.Now().UTC()})
	}
	err := publish(result, true)
	if usage != nil {
		// metering lingers to travel in batches: the commit waits for it,
		// the handler does not
		err = errors.Join(err, d.After(usage))
	}
	if err != nil {
		return err
	}
	log.Debug("answered", zap.String("status", string(result.Status)), zap.Int("chunks", seq-1), zap.Duration("duration", time.Since(start)))
	return nil
}

// report publishes a capacity report per served model and geography.
func (w *Worker) report(ctx context.Context) {
	t := time.NewTicker(w.cfg.ReportEvery)
	defer t.Stop()
	for {
		for model := range w.cfg.Backends {
			for _, g := range w.cfg.Geos {
				r := events.CapacityReport{Geo: g, Instance: w.cfg.Instance, Model: model, TokensPerMinuteCapacity: w.cfg.TokensPerMinute,
					TokensPerMinuteInUse: w.load.perMinute(model), At: time.Now().UTC()}
				if err := w.cfg.Bus.Publish(ctx, g, bus.StreamCapacity, bus.Meta{Key: w.cfg.Instance + "/" + model}, r); err != nil && ctx.Err() == nil {
					w.cfg.Log.Warn("capacity report not published", zap.String("geo", g), zap.Error(err))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// load counts tokens served per model over the last minute, in one-second
// buckets.
type load struct {
	mu      sync.Mutex
	buckets map[string]*[60]int64
	stamps  map[string]*[60]int64
}

func newLoad() *load { return &load{buckets: map[string]*[60]int64{}, stamps: map[string]*[60]int64{}} }

func (l *load) add(model string, tokens int) {
	now := time.Now().Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, s := l.buckets[model], l.stamps[model]
	if b == nil {
		b, s = &[60]int64{}, &[60]int64{}
		l.buckets[model], l.stamps[model] = b, s
	}
	i := now % 60
	if s[i] != now {
		b[i], s[i] = 0, now
	}
	b[i] += int64(tokens)
}

func (l *load) perMinute(model string) int64 {
	now := time.Now().Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, s := l.buckets[model], l.stamps[model]
	if b == nil {
		return 0
	}
	var sum int64
	for i := range b {
		if now-s[i] < 60 {
			sum += b[i]
		}
	}
	return sum
}
