// Package jobs runs batches: it takes the batch commands of the
// batch-jobs stream, keeps each job's progress in the Redis of the
// resource's home geography, drives each job on one instance at a time
// (a lease in Redis; another instance takes over a job whose driver
// died), sends its lines through the same filtered path as real-time
// requests, paced behind real-time traffic, collects their answers from
// the batch-replies stream as a consumer group, and writes the output
// and error files into the home geography's blob store when the job
// ends. Every line is answered exactly once in the output, whatever
// process is killed meanwhile: answers are kept per line index, the
// first one wins, and the files are written from them.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/batch/validate"
)

// Files reads and writes files of the Files API (*filestore.Store).
type Files interface {
	// Get returns a resource's file by ID; filestore.ErrNotFound when
	// there is none.
	Get(ctx context.Context, res control.Resource, id string) (events.FileObject, error)
	// Open reads a file's content.
	Open(ctx context.Context, f events.FileObject, rng blob.Range) (io.ReadCloser, blob.Info, error)
	// Create stores content as the file f and its record; storing the
	// same ID again replaces it.
	Create(ctx context.Context, f events.FileObject, content io.Reader) (events.FileObject, error)
}

// Config is what the runner needs.
type Config struct {
	Bus *bus.Bus
	// Redis has a client per home geography whose batches this runner
	// keeps.
	Redis map[string]*redis.Client
	State *control.State
	Files Files
	// Admit admits each line as the real-time API admits a request.
	Admit    *admit.Admitter
	Instance string
	Log      *zap.Logger
	// Capacity reports spare capacity of a model in a geography and
	// whether any worker reported: lines are sent only while there is
	// spare capacity. Nil admits on the pacing window alone.
	Capacity func(geo, model string) (int64, bool)
	// Limits bound an input file.
	Limits validate.Limits
	// MaxInFlight bounds the lines of one job sent and not answered;
	// the pacing window moves below it. Default 256.
	MaxInFlight int
	// MaxInFlightBytes bounds the bodies of those lines, which the job
	// keeps to send again (one line is always let through). Default
	// 64 MiB.
	MaxInFlightBytes int
	// QueueTarget is the pacer's queueing target: the window grows while
	// a line's round trip exceeds the unloaded one by less than the
	// larger of it and the unloaded round trip. Default 5 ms.
	QueueTarget time.Duration
	// LineTimeout is how long a sent line may go unanswered before it is
	// sent again (a lost request); default 10 minutes.
	LineTimeout time.Duration
	// CancelGrace is how long a cancelled job waits for lines already
	// sent; default 30 s.
	CancelGrace time.Duration
	// MaxEnqueuedTokens bounds the estimated input tokens of a
	// deployment's unfinished batches; 0 means no bound.
	MaxEnqueuedTokens int64
	// OutputTTL is the lifetime of output and error files when the batch
	// set none; default 30 days.
	OutputTTL time.Duration
	// LeaseTTL is how long a job's lease lasts without renewal; default
	// 15 s (a job whose driver died resumes within it).
	LeaseTTL time.Duration
	// ProgressEvery is how often a running job's counts are published;
	// default 1 s.
	ProgressEvery time.Duration
	// Ready, when set, reports whether the service is caught up (the
	// control plane and data keys read to their end): no job is driven
	// before, so a job is never judged by a view still filling.
	Ready func(ctx context.Context) error
	Now   func() time.Time
}

// Runner runs the batches of its geographies.
type Runner struct {
	cfg    Config
	stores map[string]*store
	nudge  chan struct{}

	mu      sync.Mutex
	running map[string]*driver
}

// New checks cfg and returns a runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Bus == nil || len(cfg.Redis) == 0 || cfg.State == nil || cfg.Files == nil || cfg.Admit == nil || cfg.Log == nil || cfg.Instance == "" {
		return nil, errors.New("jobs: bus, redis, control state, files, admission, instance and logger are required")
	}
	if cfg.QueueTarget <= 0 {
		cfg.QueueTarget = 5 * time.Millisecond
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = 64 << 20
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.LineTimeout <= 0 {
		cfg.LineTimeout = 10 * time.Minute
	}
	if cfg.CancelGrace <= 0 {
		cfg.CancelGrace = 30 * time.Second
	}
	if cfg.OutputTTL <= 0 {
		cfg.OutputTTL = 30 * 24 * time.Hour
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Log = cfg.Log.Named("jobs")
	r := &Runner{cfg: cfg, stores: map[string]*store{}, nudge: make(chan struct{}, 1), running: map[string]*driver{}}
	for g, rdb := range cfg.Redis {
		r.stores[g] = &store{geo: g, rdb: rdb, keys: cfg.Bus.Keys()}
	}
	return r, nil
}

func (r *Runner) geos() []string {
	out := make([]string, 0, len(r.stores))
	for g := range r.stores {
		out = append(out, g)
	}
	return out
}

// Run consumes commands and answers and drives the jobs until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	commands, err := r.cfg.Bus.NewConsumer(bus.ConsumerConfig{Group: "terroir-batch", Streams: []string{bus.StreamBatchJobs}, Geos: r.geos(), Handler: r.command})
	if err != nil {
		return err
	}
	replies, err := r.cfg.Bus.NewConsumer(bus.ConsumerConfig{Group: "terroir-batch-replies", Streams: []string{bus.StreamBatchReplies}, Geos: r.geos(), Handler: r.reply})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- commands.Run(ctx) })
	wg.Go(func() { errs <- replies.Run(ctx) })
	r.lead(ctx)
	wg.Wait()
	r.stopAll()
	close(errs)
	var all error
	for err := range errs {
		all = errors.Join(all, err)
	}
	return all
}

// command applies a batch command to the job's state.
func (r *Runner) command(ctx context.Context, d *bus.Delivery) error {
	var c events.BatchCommand
	if err := d.Decode(ctx, &c); err != nil {
		return err
	}
	st, ok := r.stores[d.Geo]
	if !ok || c.HomeGeo != d.Geo {
		return bus.Permanent(fmt.Errorf("batch command for %s read in %s", c.HomeGeo, d.Geo))
	}
	switch c.Action {
	case events.BatchActionCreate:
		if c.Batch == nil || c.Batch.ID != c.BatchID || c.Batch.Resource != c.Resource {
			return bus.Permanent(errors.New("create command without its batch"))
		}
		if _, err := st.register(ctx, *c.Batch); err != nil {
			return err
		}
	case events.BatchActionCancel:
		if _, err := st.requestCancel(ctx, c.BatchID); err != nil {
			return err
		}
		r.wake(c.BatchID)
	default:
		return bus.Permanent(fmt.Errorf("unknown batch action %q", c.Action))
	}
	select {
	case r.nudge <- struct{}{}:
	default:
	}
	return nil
}

// reply stores the answer of one line.
func (r *Runner) reply(ctx context.Context, d *bus.Delivery) error {
	if !d.Meta.Final {
		return nil // a non-streamed line has one reply, its result
	}
	batchID, index, ok := parseLineRequestID(d.Meta.RequestID)
	if !ok {
		return bus.Permanent(errors.New("a batch reply whose request ID names no batch line"))
	}
	st, ok := r.stores[d.Geo]
	if !ok {
		return bus.Permanent(fmt.Errorf("batch reply read in unserved geography %s", d.Geo))
	}
	var res events.InferenceResult
	if err := d.Decode(ctx, &res); err != nil {
		return err
	}
	var in, out int64
	if res.Usage != nil {
		in, out = int64(res.Usage.PromptTokens), int64(res.Usage.CompletionTokens)
	}
	if _, err := st.record(ctx, d.Meta.Resource, batchID, index, answerOf(d.Meta.RequestID, res), in, out); err != nil {
		return err
	}
	r.wake(batchID)
	return nil
}

// wake tells a local driver of batchID that something changed.
func (r *Runner) wake(batchID string) {
	r.mu.Lock()
	dr := r.running[batchID]
	r.mu.Unlock()
	if dr != nil {
		select {
		case dr.wake <- struct{}{}:
		default:
		}
	}
}

// lead takes the lease of every active job no live instance drives and
// drives it, until ctx ends.
func (r *Runner) lead(ctx context.Context) {
	for r.cfg.Ready != nil {
		err := r.cfg.Ready(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	t := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		for g, st := range r.stores {
			ids, err := st.active(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Log.Warn("listing batch jobs failed", zap.String("geo", g), zap.Error(err))
				}
				continue
			}
			for _, id := range ids {
				r.start(ctx, st, id)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.nudge:
		}
	}
}

// start drives job id if no instance holds its lease.
func (r *Runner) start(ctx context.Context, st *store, id string) {
	r.mu.Lock()
	_, busy := r.running[id]
	r.mu.Unlock()
	if busy {
		return
	}
	ok, err := st.lease(ctx, id, r.cfg.Instance, r.cfg.LeaseTTL)
	if err != nil || !ok {
		return
	}
	dctx, cancel := context.WithCancel(ctx)
	dr := &driver{r: r, st: st, id: id, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.running[id] = dr
	r.mu.Unlock()
	go func() {
		defer close(dr.done)
		defer func() {
			r.mu.Lock()
			delete(r.running, id)
			r.mu.Unlock()
		}()
		dr.run(dctx)
	}()
}

// stopAll stops every driver and gives up its lease, so another instance
// (or this one restarted) resumes the job at once.
func (r *Runner) stopAll() {
	r.mu.Lock()
	drivers := make([]*driver, 0, len(r.running))
	for _, dr := range r.running {
		drivers = append(drivers, dr)
	}
	r.mu.Unlock()
	for _, dr := range drivers {
		dr.cancel()
		<-dr.done
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = dr.st.release(ctx, dr.id, r.cfg.Instance)
		cancel()
	}
}
