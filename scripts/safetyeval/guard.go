package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
	"github.com/terroir-ai/terroir/services/contentsafety/guard/guardtest"
)

// guardConcurrency is how many callers the concurrent row runs, the
// guard's default limit of calls in flight.
const guardConcurrency = guard.DefaultConcurrency

// guardRows measures the guard stage's added latency per call, n calls
// per row, against a stand-in model server in this process that answers
// at once: what is measured is the client (encoding, the slot, parsing,
// metrics) and a loopback HTTP round trip, never a model.
func guardRows(ctx context.Context, n int) ([]bench.Row, error) {
	srv := httptest.NewServer(&guardtest.Server{})
	defer srv.Close()
	g, err := guard.New(guard.Config{URL: srv.URL, Model: "stand-in"}, zap.NewNop(), nil)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	question := strings.Repeat("How do I repot a fern without hurting its roots? ", 4)
	answer := strings.Repeat("Water it the day before, loosen the root ball gently and keep the soil level. ", 6)
	const note = "these guard rows ran against an in-process stand-in with zero model delay: the client's overhead and a loopback round trip only; a real guard model adds its server's time to answer"

	var rows []bench.Row
	for _, c := range []struct {
		name    string
		dir     events.Direction
		texts   []string
		callers int
	}{
		{"guard stage: prompt, 1 caller", events.DirectionPrompt, []string{question}, 1},
		{"guard stage: output, 1 caller", events.DirectionCompletion, []string{question, answer}, 1},
		{fmt.Sprintf("guard stage: prompt, %d callers", guardConcurrency), events.DirectionPrompt, []string{question}, guardConcurrency},
	} {
		// warm the connections first, so a handshake is not a sample
		for range 2 * c.callers {
			if _, err := g.Check(ctx, c.dir, c.texts); err != nil {
				return nil, fmt.Errorf("guard stand-in: %w", err)
			}
		}
		lat, errs := measure(ctx, n, c.callers, func() error {
			_, err := g.Check(ctx, c.dir, c.texts)
			return err
		})
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := bench.LatencyRow(c.name, lat)
		r.Errors = errs
		if len(rows) == 0 {
			r.Comment = note
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// measure runs n calls of f spread over callers goroutines and returns
// each call's latency and the number that failed.
func measure(ctx context.Context, n, callers int, f func() error) (bench.Hist, int) {
	var mu sync.Mutex
	lat := make(bench.Hist, 0, n)
	errs := 0
	var wg sync.WaitGroup
	for w := range callers {
		share := n / callers
		if w < n%callers {
			share++
		}
		wg.Go(func() {
			for range share {
				if ctx.Err() != nil {
					return
				}
				start := time.Now()
				err := f()
				d := time.Since(start)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, errs
}
