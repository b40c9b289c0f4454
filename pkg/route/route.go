// Package route decides where a request is processed, keeping promise 2
// (residency): a Standard deployment only in the resource's home
// geography, a DataZone deployment only inside the home geography's data
// zone, a Global deployment in whichever geography has the most spare
// capacity, as inference workers report it.
package route

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/geo"
)

// Staleness is how old a capacity report may be and still count: a
// worker that stopped reporting has no capacity.
const Staleness = 15 * time.Second

// Capacity is the latest capacity report of every inference worker, per
// geography and model; it is the apply function of the capacity tables.
type Capacity struct {
	now func() time.Time

	mu      sync.RWMutex
	reports map[string]events.CapacityReport // geo/instance/model → latest
}

// NewCapacity returns an empty view; now defaults to time.Now.
func NewCapacity(now func() time.Time) *Capacity {
	if now == nil {
		now = time.Now
	}
	return &Capacity{now: now, reports: map[string]events.CapacityReport{}}
}

// Apply folds one record of a capacity topic into the view.
func (c *Capacity) Apply(d *bus.Delivery) {
	var r events.CapacityReport
	if d.Record.Value == nil || d.Decode(context.Background(), &r) != nil {
		return
	}
	c.Add(r)
}

// Add records a report, unless an instance's newer one is already in.
func (c *Capacity) Add(r events.CapacityReport) {
	key := r.Geo + "/" + r.Instance + "/" + r.Model
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.reports[key]; ok && old.At.After(r.At) {
		return
	}
	c.reports[key] = r
}

// Spare returns the spare tokens per minute for model in g over fresh
// reports, and whether any worker reported at all.
func (c *Capacity) Spare(g, model string) (int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	cutoff := c.now().Add(-Staleness)
	var spare int64
	seen := false
	for _, r := range c.reports {
		if r.Geo != g || r.Model != model || r.At.Before(cutoff) {
			continue
		}
		seen = true
		if s := r.TokensPerMinuteCapacity - r.TokensPerMinuteInUse; s > 0 {
			spare += s
		}
	}
	return spare, seen
}

// ErrNoCapacity means no eligible geography has a worker for the model.
var ErrNoCapacity = errors.New("no eligible geography has capacity")

// Choose returns the processing geography of a request to model of a
// deployment with sku, for a resource homed in home, among the
// geographies this instance serves.
func (c *Capacity) Choose(home string, sku events.SKU, model string, served []string) (string, error) {
	var eligible []string
	switch sku {
	case events.SKUGlobalStandard, events.SKUGlobalBatch:
		eligible = served
	case events.SKUDataZoneStandard, events.SKUDataZoneBatch:
		for _, g := range served {
			if geo.SameDataZone(home, g) {
				eligible = append(eligible, g)
			}
		}
	default: // Standard, ManagedCompute, Serverless: the home geography only
		if slices.Contains(served, home) {
			return home, nil
		}
		return "", fmt.Errorf("home geography %s is not served here", home)
	}
	if len(eligible) == 0 {
		return "", fmt.Errorf("no geography of %s's data zone is served here", home)
	}
	// The home geography first, so it wins ties.
	slices.SortStableFunc(eligible, func(a, b string) int {
		switch {
		case a == home:
			return -1
		case b == home:
			return 1
		}
		return 0
	})
	best, bestSpare, anyReport := "", int64(-1), false
	for _, g := range eligible {
		spare, seen := c.Spare(g, model)
		anyReport = anyReport || seen
		if seen && spare > bestSpare {
			best, bestSpare = g, spare
		}
	}
	switch {
	case best != "" && bestSpare > 0:
		return best, nil
	case !anyReport && slices.Contains(eligible, home):
		// Nothing reported yet (a stack just starting): stay home.
		return home, nil
	case best != "":
		return best, nil // all saturated: the least bad
	}
	return "", ErrNoCapacity
}
