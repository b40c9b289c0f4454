// Package pipeline puts content safety on the request path, both ways.
//
// The prompt stage reads a geography's requests topic: it classifies the
// prompt and applies the deployment's content-filter policy. A blocked
// prompt is answered at once with Azure's content-filter error (reply seq
// 0, final). A prompt that passes goes on to the same geography's
// inference topic; for a stream the waiting ingress instance first gets
// the verdict (reply seq 0: the first SSE chunk, carrying
// prompt_filter_results), while a non-streamed request carries its
// verdict along to come back on the answer.
//
// The output stage reads the completions topic: it checks what the model
// wrote (streams window by window, holding text back until its window is
// checked), annotates each choice with content_filter_results, ends a
// filtered choice with finish_reason "content_filter", and replies to the
// waiting instance (a stream from seq 1 on; a non-streamed answer is its
// one reply, seq 0).
//
// A stream survives redelivery and rebalances. Its first record stays
// uncommitted until the stream has ended (bus.Consumer.Hold), so an
// instance that stops mid-stream, with text held back, leaves the whole
// stream to the partition's next owner, which reads it again from its
// start, decides the same replies with the same sequence numbers, and the
// waiting instance drops the ones it already has. Chunks are taken in by
// the worker's sequence number, so a redelivered chunk adds nothing. Each
// worker run names its attempt; the first run read keeps the stream,
// except that while none of its text has reached the app a new run (a
// redelivered request started again) replaces it, and once some has, a
// different run that ends first ends the stream with an error, because
// the run the app is reading will not finish and two answers are never
// spliced.
//
// Each request gets one safety signal (categories, rule IDs and keyed
// hashes, never text) and, unless the resource opted out of content
// logging, one abuse-monitoring record (sealed under the abuse key), both
// sent to the resource's home geography wherever the request was
// processed. The prompt stage writes them for a prompt it blocks. For a
// prompt it passes it writes neither: its findings travel on the request
// (events.PromptCheck) and come back on the worker's final result, with
// the prompt itself when it is logged, and the output stage writes one
// signal covering both directions and one record holding both parts,
// whatever the outcome (an answer, a stream's end, a worker's error or
// timeout). Neither stage delays a forward or a reply for them: they go
// out with the request's other records and are waited for before the
// record that caused them is committed.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
)

// Config configures the pipeline.
type Config struct {
	Bus        *bus.Bus
	State      *control.State
	Classifier *classifier.Classifier
	// Geos are the geographies whose requests and completions this
	// instance checks.
	Geos []string
	// Stream sizes the windows streamed output is checked in.
	Stream classifier.StreamOptions
	// Guards are the optional guard-model stage, one per processing
	// geography: text processed in a geography is rated only by its own
	// guard model, and a geography without one is rated by the
	// classifier alone.
	Guards map[string]*guard.Guard
	// Lanes are the request-path lanes this instance checks (default
	// both): each has its own consumers, and a request leaves on the
	// lane it came in on.
	Lanes []bus.Lane
	Log   *zap.Logger
}

// Pipeline runs both stages.
type Pipeline struct {
	cfg Config
	log *zap.Logger

	blMu    sync.Mutex
	blocks  map[string]*classifier.Blocklists // per resource
	blSince <-chan struct{}

	// outputs are the output stage's consumers by lane, which hold the
	// first record of each answer stream uncommitted until it has ended.
	outputs map[bus.Lane]*bus.Consumer

	streamsMu sync.Mutex
	streams   map[string]*streamState // per request ID
	ended     map[string]time.Time    // streams answered here, when
}

// New checks cfg.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Bus == nil || cfg.State == nil || cfg.Classifier == nil || len(cfg.Geos) == 0 || cfg.Log == nil {
		return nil, errors.New("pipeline: bus, state, classifier, geographies and logger are required")
	}
	if cfg.Stream.Window == 0 {
		cfg.Stream = classifier.StreamOptions{Window: 256, Overlap: 64}
	}
	return &Pipeline{cfg: cfg, log: cfg.Log.Named("pipeline"), blocks: map[string]*classifier.Blocklists{},
		blSince: cfg.State.Changed(), streams: map[string]*streamState{}, ended: map[string]time.Time{}}, nil
}

// Run runs both stages until ctx ends.
func (p *Pipeline) Run(ctx context.Context) error {
	prompts, err := p.cfg.Bus.NewLaneConsumers(p.cfg.Lanes, bus.ConsumerConfig{Group: "contentsafety-prompt", Streams: []string{bus.StreamRequests}, Geos: p.cfg.Geos, Handler: p.prompt})
	if err != nil {
		return err
	}
	outputs, err := p.cfg.Bus.NewLaneConsumers(p.cfg.Lanes, bus.ConsumerConfig{Group: "contentsafety-output", Streams: []string{bus.StreamCompletions}, Geos: p.cfg.Geos, Handler: p.output})
	if err != nil {
		for _, c := range prompts {
			c.Close()
		}
		return err
	}
	p.outputs = outputs
	var wg sync.WaitGroup
	wg.Go(func() { p.sweep(ctx) })
	err = bus.RunConsumers(ctx, prompts, outputs)
	wg.Wait()
	return err
}

// policy returns what applies to a request: its resource, the
// deployment's filter policy and the resource's compiled blocklists.
func (p *Pipeline) policy(resource, deployment string) (control.Resource, control.FilterPolicy, *classifier.Blocklists, error) {
	res, ok := p.cfg.State.Resource(resource)
	if !ok {
		return res, control.FilterPolicy{}, nil, fmt.Errorf("resource %s is unknown", resource)
	}
	name := control.DefaultFilterPolicyName
	if d, ok := p.cfg.State.Deployment(resource, deployment); ok {
		name = d.FilterPolicy
	}
	pol, ok := p.cfg.State.FilterPolicy(resource, name)
	if !ok {
		pol = control.DefaultFilterPolicy(resource)
	}
	bl, err := p.blocklists(resource)
	return res, pol, bl, err
}

// blocklists compiles a resource's blocklists once per control-plane
// change.
func (p *Pipeline) blocklists(resource string) (*classifier.Blocklists, error) {
	p.blMu.Lock()
	defer p.blMu.Unlock()
	select {
	case <-p.blSince:
		p.blocks = map[string]*classifier.Blocklists{}
		p.blSince = p.cfg.State.Changed()
	default:
	}
	if bl, ok := p.blocks[resource]; ok {
		return bl, nil
	}
	bl, err := p.cfg.Classifier.CompileBlocklists(p.cfg.State.Blocklists(resource))
	if err != nil {
		return nil, fmt.Errorf("compiling blocklists of %s: %w", resource, err)
	}
	p.blocks[resource] = bl
	return bl, nil
}

func rulesOf(pol control.FilterPolicy, dir events.Direction) control.FilterRules {
	if dir == events.DirectionPrompt {
		return pol.Prompt
	}
	return pol.Completion
}

// findings describes what filtering found in one classified text, with
// the text's keyed hash under the abuse key of home, the request's home
// geography.
func (p *Pipeline) findings(ctx context.Context, home string, r classifier.Result, a classifier.Annotations, blocked bool, text string) (events.Findings, error) {
	k, err := p.cfg.Bus.Keys().AbuseKey(ctx, home)
	if err != nil {
		return events.Findings{}, err
	}
	f := events.Findings{ContentHash: k.Hash([]byte(text)), Filtered: blocked, At: time.Now().UTC()}
	cat := func(c *classifier.CategoryAnnotation) events.CategoryResult {
		if c == nil {
			return events.CategoryResult{Severity: events.SeveritySafe}
		}
		return events.CategoryResult{Severity: c.Severity, Filtered: c.Filtered}
	}
	f.Categories = events.Categories{Hate: cat(a.Hate), Sexual: cat(a.Sexual), Violence: cat(a.Violence), SelfHarm: cat(a.SelfHarm)}
	if a.Jailbreak != nil {
		f.Detections.Jailbreak = &events.Detection{Detected: a.Jailbreak.Detected, Filtered: a.Jailbreak.Filtered}
	}
	if a.Profanity != nil {
		f.Detections.Profanity = &events.Detection{Detected: a.Profanity.Detected, Filtered: a.Profanity.Filtered}
	}
	for _, h := range r.Blocklists {
		f.BlocklistHits = append(f.BlocklistHits, h.List)
	}
	return f, nil
}

// signal is the safety signal of the request of m whose text in direction
// dir gave f.
func signal(m bus.Meta, dir events.Direction, f events.Findings) events.SafetySignal {
	return events.SafetySignal{RequestID: m.RequestID, Resource: m.Resource, Deployment: m.Deployment, HomeGeo: m.HomeGeo, Direction: dir,
		Categories: f.Categories, Detections: f.Detections, BlocklistHits: f.BlocklistHits, ContentHash: f.ContentHash, Filtered: f.Filtered, At: f.At}
}

// rate classifies text in direction dir with the classifier and, where
// the policy lets it, the guard model of geo (the geography processing
// the text), whose verdict merges with the classifier's (the stricter
// wins). closed is set when the guard model was unavailable and the
// policy fails closed: the text is blocked whatever the ratings say. An
// error (the context ended) means the record must be processed again.
func (p *Pipeline) rate(ctx context.Context, geo string, dir events.Direction, pol control.FilterPolicy, bl *classifier.Blocklists, text string) (r classifier.Result, closed bool, err error) {
	rules := rulesOf(pol, dir)
	r = p.cfg.Classifier.ClassifyWith(text, dir, bl, rules.Blocklists)
	return p.guarded(ctx, geo, dir, rules, text, r)
}

// guarded merges the verdict of geo's guard model on text into r.
func (p *Pipeline) guarded(ctx context.Context, geo string, dir events.Direction, rules control.FilterRules, text string, r classifier.Result) (classifier.Result, bool, error) {
	g := p.cfg.Guards[geo]
	if g == nil {
		return r, false, nil
	}
	d := g.Evaluate(ctx, rules.Guard, dir, []string{text})
	switch {
	case d.Outcome == guard.OutcomeError:
		return r, false, d.Err
	case d.Blocked:
		r = classifier.Merge(r, classifier.Result{Rules: []string{"guard.unavailable"}})
		return r, true, nil
	}
	return classifier.Merge(r, d.Result), false, nil
}
