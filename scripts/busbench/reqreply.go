package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// Round-trip targets of the bus, from the issue that introduced it.
const (
	targetP50 = 800 * time.Microsecond
	targetP99 = 3 * time.Millisecond
)

// pacer ticks at a fixed interval for the open-loop generator.
type pacer interface {
	// Wait blocks until the next tick.
	Wait() error
	Stop()
}

// loadResult is what an open-loop run measured.
type loadResult struct {
	lat      bench.Hist // round trips of the requests that succeeded
	lag      bench.Hist // how late each call started after its scheduled time
	errors   int
	firstErr error
	achieved float64 // successful requests per second
}

// openLoop calls fn rate times a second for dur, each call in its own
// goroutine, whatever the previous calls are doing. A call's latency runs
// from when it was scheduled, not from when its goroutine got going, so a
// generator or scheduler that falls behind shows in the numbers instead of
// hiding them (no coordinated omission).
func openLoop(ctx context.Context, rate int, dur, timeout time.Duration, fn func(ctx context.Context, i int) error) (loadResult, error) {
	interval := time.Second / time.Duration(rate)
	n := max(int(dur/interval), 1)
	lat := make([]time.Duration, n)
	lag := make([]time.Duration, n)
	failed := make([]error, n)
	p, err := newPacer(interval)
	if err != nil {
		return loadResult{}, err
	}
	defer p.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	next := 0
	for next < n && ctx.Err() == nil {
		// Ticks may come late or merge: launch everything due by now.
		due := min(int(time.Since(start)/interval)+1, n)
		for ; next < due; next++ {
			i, sched := next, start.Add(time.Duration(next)*interval)
			wg.Go(func() {
				lag[i] = time.Since(sched)
				rctx, cancel := context.WithDeadline(ctx, sched.Add(timeout))
				defer cancel()
				failed[i] = fn(rctx, i)
				lat[i] = time.Since(sched)
			})
		}
		if next < n {
			if err := p.Wait(); err != nil {
				wg.Wait()
				return loadResult{}, err
			}
		}
	}
	wg.Wait()
	var r loadResult
	var last time.Duration
	for i := range next {
		r.lag = append(r.lag, lag[i])
		if failed[i] != nil {
			r.errors++
			if r.firstErr == nil {
				r.firstErr = failed[i]
			}
			continue
		}
		r.lat = append(r.lat, lat[i])
		last = max(last, time.Duration(i)*interval+lat[i])
	}
	if last > 0 {
		r.achieved = float64(len(r.lat)) / last.Seconds()
	}
	return r, nil
}

// measureRoundTrip primes the path with one request (which waits for the
// consumer group to form), warms up, then measures.
func measureRoundTrip(ctx context.Context, e *env, name string, fn func(ctx context.Context, id string) error) (bench.Row, error) {
	cfg := e.cfg
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := fn(pctx, "prime-0")
	cancel()
	if err != nil {
		return bench.Row{}, fmt.Errorf("first request: %w", err)
	}
	if cfg.warmup > 0 {
		w, err := openLoop(ctx, cfg.rate, cfg.warmup, cfg.timeout, func(ctx context.Context, i int) error {
			return fn(ctx, requestID("warm", i))
		})
		if err != nil {
			return bench.Row{}, err
		}
		if w.firstErr != nil {
			fmt.Fprintf(e.stderr, "busbench: %s: %d warm-up requests failed, first: %v\n", name, w.errors, w.firstErr)
		}
	}
	cpu0, cpuOK := processCPU()
	ticks0, steal0, ticksOK := cpuTicks()
	res, err := openLoop(ctx, cfg.rate, cfg.duration, cfg.timeout, func(ctx context.Context, i int) error {
		return fn(ctx, requestID("rr", i))
	})
	if err != nil {
		return bench.Row{}, err
	}
	cpu1, _ := processCPU()
	ticks1, steal1, _ := cpuTicks()
	r := bench.LatencyRow(name, res.lat)
	lag := res.lag.Sorted()
	r.Comment = fmt.Sprintf("generator lag (call start − scheduled) p50 %s p99 %s", bench.MS(lag.Quantile(0.5)), bench.MS(lag.Quantile(0.99)))
	if done := len(res.lat) + res.errors; cpuOK && done > 0 {
		who := "this process only"
		if e.fake != nil {
			who = "the in-process broker included"
		}
		r.Comment += fmt.Sprintf("; process CPU (user+sys, %s) %s per round trip", who, bench.MS((cpu1-cpu0)/time.Duration(done)))
	}
	if ticksOK && ticks1 > ticks0 {
		r.Comment += fmt.Sprintf("; CPU time stolen by the hypervisor %.1f%%", 100*float64(steal1-steal0)/float64(ticks1-ticks0))
	}
	r.N = len(res.lat) + res.errors
	r.Errors = res.errors
	r.Value = fmt.Sprintf("%.1f req/s", res.achieved)
	if res.firstErr != nil {
		fmt.Fprintf(e.stderr, "busbench: %s: %d requests failed, first: %v\n", name, res.errors, res.firstErr)
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if res.errors > 0 {
		return r, fmt.Errorf("%d of %d requests failed, first: %w", res.errors, r.N, res.firstErr)
	}
	return r, nil
}

// benchBusRoundTrip measures request/reply through the bus: a Requester
// on the front bus, a consumer group on the back bus that decodes each
// request and replies with a sealed result.
func benchBusRoundTrip(ctx context.Context, e *env) ([]bench.Row, error) {
	reply := func(ctx context.Context, d *bus.Delivery) error {
		var req events.InferenceRequest
		if err := d.Decode(ctx, &req); err != nil {
			return err
		}
		return e.back.Reply(ctx, d, 0, true, events.InferenceResult{
			RequestID: req.RequestID, Status: events.StatusOK, Body: e.result,
			Usage:     &events.Usage{PromptTokens: 200, CompletionTokens: 200, TotalTokens: 400},
			CreatedAt: time.Now().UTC(),
		})
	}
	cons, err := e.back.NewConsumer(bus.ConsumerConfig{
		Group: e.ns + "-responder", Streams: []string{bus.StreamInference}, Geos: []string{geo}, Handler: reply,
	})
	if err != nil {
		return nil, err
	}
	stop := runConsumer(ctx, cons)
	defer stop()
	rq, err := e.front.NewRequester(ctx, geo)
	if err != nil {
		return nil, err
	}
	defer rq.Close()

	roundTrip := func(ctx context.Context, id string) error {
		meta, ev := e.request(id)
		s, err := rq.Request(ctx, geo, bus.StreamInference, meta, ev)
		if err != nil {
			return err
		}
		defer s.Close()
		for {
			d, err := s.Next(ctx)
			if err == io.EOF {
				return fmt.Errorf("request %s: reply stream ended without a final reply", id)
			}
			if err != nil {
				return err
			}
			var res events.InferenceResult
			if err := d.Decode(ctx, &res); err != nil {
				return err
			}
			if res.RequestID != id || res.Status != events.StatusOK {
				return fmt.Errorf("request %s: unexpected reply %s/%s", id, res.RequestID, res.Status)
			}
			if d.Meta.Final {
				return nil
			}
		}
	}
	name := fmt.Sprintf("request/reply via bus @%d/s", e.cfg.rate)
	r, err := measureRoundTrip(ctx, e, name, roundTrip)
	if len(r.Lat) > 0 {
		p50, p99 := r.Lat.Quantile(0.50), r.Lat.Quantile(0.99)
		r.Target = fmt.Sprintf("p50≤%s p99≤%s", bench.MS(targetP50), bench.MS(targetP99))
		r.Met = bench.YesNo(p50 <= targetP50 && p99 <= targetP99)
		r.Comment = fmt.Sprintf("open loop, each request in its own goroutine, latency from its scheduled send to its sealed reply decoded; %d B request body and reply body, both sealed; requester and responder on separate buses; %s",
			e.cfg.bodyBytes, r.Comment)
	}
	return []bench.Row{r}, err
}
