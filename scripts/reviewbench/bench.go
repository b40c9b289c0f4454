package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
	"github.com/terroir-ai/terroir/services/review/store"
)

// outputLag is how many requests of one publisher separate a request's
// output part from its prompt part, as the time a model takes to answer
// separates them on a live abuse log: the two parts of a request sit in
// different batches.
const outputLag = 256

// publishers seal and send records concurrently.
const publishers = 2

func (e *env) part(i int, output bool) events.AbuseRecord {
	r := events.AbuseRecord{RequestID: e.requestID(i), Resource: e.resource(i), HomeGeo: geo, ProcessingGeo: geo,
		Deployment: "chat", Operation: events.OperationChatCompletions, CreatedAt: time.Now().UTC()}
	if output {
		r.Output = e.output
		r.ContentFilterResults = []byte(`{"hate":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}`)
	} else {
		r.Prompt = e.prompt
		r.PromptFilterResults = []byte(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`)
	}
	return r
}

// publishAll publishes every request's two parts to the abuse log, as
// content safety does, with at most cfg.inflight records unacknowledged.
func (e *env) publishAll(ctx context.Context) (bench.Row, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	n := e.requests()
	var sent atomic.Int64
	stopProgress := e.progress("published", &sent, e.records())
	defer stopProgress()
	start := time.Now()
	errs := make([]error, publishers)
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Go(func() {
			window := make([]*bus.Sending, 0, e.cfg.inflight/publishers+1)
			send := func(i int, output bool) error {
				p := e.part(i, output)
				meta := bus.Meta{RequestID: p.RequestID, Resource: p.Resource, HomeGeo: geo, Deployment: p.Deployment}
				window = append(window, e.pub.PublishAsync(ctx, geo, bus.StreamAbuseLog, meta, p))
				if len(window) < cap(window) {
					return nil
				}
				err := bus.WaitAll(window...)
				sent.Add(int64(len(window)))
				window = window[:0]
				return err
			}
			var mine []int
			for i := w; i < n; i += publishers {
				mine = append(mine, i)
			}
			for k, i := range mine {
				if err := send(i, false); err != nil {
					errs[w] = err
					return
				}
				if k >= outputLag {
					if err := send(mine[k-outputLag], true); err != nil {
						errs[w] = err
						return
					}
				}
			}
			for _, i := range mine[max(len(mine)-outputLag, 0):] {
				if err := send(i, true); err != nil {
					errs[w] = err
					return
				}
			}
			errs[w] = bus.WaitAll(window...)
			sent.Add(int64(len(window)))
		})
	}
	wg.Wait()
	took := time.Since(start)
	err := errors.Join(errs...)
	rate := float64(e.records()) / took.Seconds()
	return bench.Row{Name: "publish (sealed, to the abuse log)", N: e.records(), Value: fmt.Sprintf("%.0f records/s", rate),
		Comment: fmt.Sprintf("%d records in %s, %d unacknowledged at most; the load, not a target", e.records(), took.Round(time.Millisecond), e.cfg.inflight)}, err
}

// progress prints how far a phase is every 10 s until stopped.
func (e *env) progress(what string, done *atomic.Int64, total int) func() {
	t := time.NewTicker(10 * time.Second)
	quit := make(chan struct{})
	go func() {
		start := time.Now()
		for {
			select {
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(e.stderr, "reviewbench: %s %d of %d (%.0f/s)\n", what, d, total, float64(d)/time.Since(start).Seconds())
			case <-quit:
				return
			}
		}
	}()
	return func() { t.Stop(); close(quit) }
}

// sample is how many records the store had indexed at a time.
type sample struct {
	at      time.Duration
	handled float64
}

// ingest runs the store over the whole backlog and measures how fast it
// indexes it: from Run's start (the group join included) until the
// consumer has handled every record, then waits for the offsets to be
// committed and checks the index.
func (e *env) ingest(ctx context.Context) ([]bench.Row, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	total := float64(e.records())
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- e.store.Run(runCtx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stopRun()
		return <-done
	}
	defer func() { _ = stop() }()

	var samples []sample
	var handled atomic.Int64
	stopProgress := e.progress("indexed", &handled, e.records())
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		h, _, _, err := e.counters()
		if err != nil {
			stopProgress()
			return nil, err
		}
		handled.Store(int64(h))
		samples = append(samples, sample{time.Since(start), h})
		if h >= total {
			break
		}
		select {
		case <-tick.C:
		case err := <-done:
			stopped = true
			stopProgress()
			return nil, fmt.Errorf("Store.Run returned with %.0f of %.0f records indexed: %v", h, total, err)
		case <-ctx.Done():
			stopProgress()
			return nil, fmt.Errorf("%.0f of %.0f records indexed: %w", h, total, ctx.Err())
		}
	}
	stopProgress()
	took := samples[len(samples)-1].at
	rate := total / took.Seconds()
	steady := rateBetween(samples, 0.1*total, 0.9*total)

	if err := e.waitCommitted(ctx); err != nil {
		return nil, err
	}
	if err := stop(); err != nil {
		return nil, fmt.Errorf("Store.Run: %w", err)
	}
	_, failed, dead, err := e.counters()
	if err != nil {
		return nil, err
	}
	keys, err := e.rdb.DBSize(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("counting index entries: %w", err)
	}
	mem := redisMemory(ctx, e)
	var errs []error
	if keys != int64(e.requests()) {
		errs = append(errs, fmt.Errorf("the index holds %d entries, want one per request (%d)", keys, e.requests()))
	}
	r := bench.Row{Name: "ingest (Store.Run, backlog)", N: e.records(), Value: fmt.Sprintf("%.0f records/s", rate),
		Errors: int(failed + dead), Target: fmt.Sprintf("≥ %d records/s", targetIngest), Met: bench.YesNo(rate >= targetIngest && len(errs) == 0),
		Comment: fmt.Sprintf("%d records in %s from Run's start (group join included) to the last one indexed; steady rate (10–90 %%) %.0f records/s; "+
			"index: %d Redis keys (one per request), %s used by Redis; errors = failed handler attempts + dead-lettered",
			e.records(), took.Round(time.Millisecond), steady, keys, mem)}
	return []bench.Row{r}, errors.Join(errs...)
}

// rateBetween is the rate at which samples went from lo to hi handled.
func rateBetween(s []sample, lo, hi float64) float64 {
	var tLo, tHi time.Duration
	var hLo, hHi float64
	foundLo := false
	for _, x := range s {
		if !foundLo && x.handled >= lo {
			tLo, hLo, foundLo = x.at, x.handled, true
		}
		if x.handled >= hi {
			tHi, hHi = x.at, x.handled
			break
		}
	}
	if !foundLo || tHi <= tLo {
		return 0
	}
	return (hHi - hLo) / (tHi - tLo).Seconds()
}

// counters reads the review bus's metrics of the store's group: records
// handled, failed handler attempts, records dead-lettered.
func (e *env) counters() (handled, failed, dead float64, err error) {
	fams, err := e.reg.Gather()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("reading metrics: %w", err)
	}
	sum := func(f *dto.MetricFamily) float64 {
		var v float64
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" && l.GetValue() == store.Group {
					v += m.GetCounter().GetValue()
				}
			}
		}
		return v
	}
	for _, f := range fams {
		switch f.GetName() {
		case "terroir_bus_records_handled_total":
			handled = sum(f)
		case "terroir_bus_handle_errors_total":
			failed = sum(f)
		case "terroir_bus_dead_lettered_total":
			dead = sum(f)
		}
	}
	return handled, failed, dead, nil
}

// waitCommitted waits until the store's group has committed the whole
// abuse log.
func (e *env) waitCommitted(ctx context.Context) error {
	adm, err := e.rev.Admin(geo)
	if err != nil {
		return err
	}
	topic := e.rev.Topic(geo, bus.StreamAbuseLog)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("end offsets of %s: %w", topic, err)
		}
		committed, cerr := adm.FetchOffsets(ctx, store.Group)
		behind := 0
		for _, o := range ends[topic] {
			c, ok := committed.Lookup(topic, o.Partition)
			if o.Offset > 0 && (cerr != nil || !ok || c.At < o.Offset) {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%d partitions of %s not committed: %w", behind, topic, ctx.Err())
		}
	}
}

func redisMemory(ctx context.Context, e *env) string {
	info, err := e.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			if b, err := strconv.ParseFloat(v, 64); err == nil {
				return fmt.Sprintf("%.0f MB", b/1e6)
			}
		}
	}
	return "unknown"
}

// lookups looks up random stored requests, then unknown request IDs, and
// checks every answer.
func (e *env) lookups(ctx context.Context) ([]bench.Row, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	hits := make([]int, e.cfg.lookups)
	for i := range hits {
		hits[i] = rng.IntN(e.requests())
	}
	// A few lookups first: the bus learns the partitions' leaders and the
	// abuse key on its first reads.
	for i := range min(50, e.requests()) {
		if _, err := e.store.Lookup(ctx, geo, e.resource(i), e.requestID(i)); err != nil {
			return nil, fmt.Errorf("warm-up lookup of %s: %w", e.requestID(i), err)
		}
	}
	if e.cfg.cpuProfile != "" {
		f, err := os.Create(e.cfg.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	hitLat, hitErrs, firstErr := e.measure(ctx, len(hits), func(k int) error {
		i := hits[k]
		r, err := e.store.Lookup(ctx, geo, e.resource(i), e.requestID(i))
		if err != nil {
			return err
		}
		if r.RequestID != e.requestID(i) || r.Resource != e.resource(i) || len(r.Prompt) == 0 || len(r.Output) == 0 {
			return fmt.Errorf("lookup of %s returned an incomplete or foreign record", e.requestID(i))
		}
		return nil
	})
	rows := []bench.Row{bench.LatencyRow("lookup (stored request, both parts)", hitLat)}
	rows[0].Errors = hitErrs
	rows[0].Target = "p99 ≤ " + bench.MS(targetLookup99)
	rows[0].Met = bench.YesNo(hitErrs == 0 && len(hitLat) > 0 && hitLat.Sorted().Quantile(0.99) <= targetLookup99)
	rows[0].Comment = fmt.Sprintf("random requests among %d (%d records stored), %d at a time: index read, both parts read back from the topic, opened, checked and joined",
		e.requests(), e.records(), e.cfg.concurrency)
	var errs []error
	if firstErr != nil {
		errs = append(errs, fmt.Errorf("%d lookups failed, the first: %w", hitErrs, firstErr))
	}
	if e.cfg.misses > 0 {
		missLat, missErrs, firstErr := e.measure(ctx, e.cfg.misses, func(k int) error {
			_, err := e.store.Lookup(ctx, geo, e.resource(k), "req_missing_"+strconv.Itoa(k))
			if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("lookup of an unknown request ID: %v, want ErrNotFound", err)
			}
			return nil
		})
		r := bench.LatencyRow("lookup (unknown request ID)", missLat)
		r.Errors = missErrs
		r.Comment = "answered ErrNotFound from the index alone"
		rows = append(rows, r)
		if firstErr != nil {
			errs = append(errs, fmt.Errorf("%d unknown-ID lookups failed, the first: %w", missErrs, firstErr))
		}
	}
	return rows, errors.Join(errs...)
}

// measure runs f(0..n-1) on cfg.concurrency workers and returns the
// latency of each successful call, the failures and the first failure.
func (e *env) measure(ctx context.Context, n int, f func(k int) error) (bench.Hist, int, error) {
	var next atomic.Int64
	var mu sync.Mutex
	lat := make(bench.Hist, 0, n)
	fails := 0
	var first error
	var wg sync.WaitGroup
	for range e.cfg.concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				t := time.Now()
				err := f(k)
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					fails++
					if first == nil {
						first = err
					}
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, fails, first
}
