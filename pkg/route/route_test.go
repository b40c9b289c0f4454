package route_test

import (
	"errors"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/route"
)

func TestChooseKeepsResidency(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	report := func(g, inst string, capacity, inUse int64, age time.Duration) events.CapacityReport {
		return events.CapacityReport{Geo: g, Instance: inst, Model: "m", TokensPerMinuteCapacity: capacity, TokensPerMinuteInUse: inUse, At: now.Add(-age)}
	}
	served := []string{"eu", "us", "uk"}
	cases := []struct {
		name    string
		reports []events.CapacityReport
		home    string
		sku     events.SKU
		want    string
		wantErr error // when set, the error must wrap it
	}{
		{"standard stays home even when busy", []events.CapacityReport{report("eu", "a", 100, 100, 0), report("us", "b", 100, 0, 0)}, "eu", events.SKUStandard, "eu", nil},
		{"global goes where capacity is", []events.CapacityReport{report("eu", "a", 100, 100, 0), report("us", "b", 100, 0, 0)}, "eu", events.SKUGlobalStandard, "us", nil},
		{"global prefers home on a tie", []events.CapacityReport{report("eu", "a", 100, 0, 0), report("us", "b", 100, 0, 0)}, "eu", events.SKUGlobalStandard, "eu", nil},
		{"global without eu workers", []events.CapacityReport{report("us", "b", 100, 0, 0)}, "eu", events.SKUGlobalStandard, "us", nil},
		{"global sums instances", []events.CapacityReport{report("eu", "a", 100, 60, 0), report("eu", "c", 100, 60, 0), report("us", "b", 70, 0, 0)}, "eu", events.SKUGlobalStandard, "eu", nil},
		{"stale reports do not count", []events.CapacityReport{report("eu", "a", 100, 90, 0), report("us", "b", 1000, 0, time.Minute)}, "eu", events.SKUGlobalStandard, "eu", nil},
		{"nothing reported stays home", nil, "eu", events.SKUGlobalStandard, "eu", nil},
		{"data zone never leaves the zone", []events.CapacityReport{report("eu", "a", 100, 100, 0), report("us", "b", 100, 0, 0), report("uk", "c", 100, 0, 0)}, "eu", events.SKUDataZoneStandard, "eu", nil},
		{"data zone of a geography without one stays home", nil, "uk", events.SKUDataZoneStandard, "uk", nil},
		{"home not served", nil, "jp", events.SKUStandard, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cap := route.NewCapacity(func() time.Time { return now })
			for _, r := range c.reports {
				cap.Add(r)
			}
			got, err := cap.Choose(c.home, c.sku, "m", served)
			if c.want == "" {
				if err == nil {
					t.Fatalf("Choose = %q, want an error", got)
				}
				return
			}
			if err != nil || got != c.want || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
				t.Fatalf("Choose = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestOlderReportDoesNotReplaceNewer(t *testing.T) {
	now := time.Now()
	cap := route.NewCapacity(nil)
	cap.Add(events.CapacityReport{Geo: "eu", Instance: "a", Model: "m", TokensPerMinuteCapacity: 100, At: now})
	cap.Add(events.CapacityReport{Geo: "eu", Instance: "a", Model: "m", TokensPerMinuteCapacity: 5, At: now.Add(-time.Second)})
	if spare, ok := cap.Spare("eu", "m"); !ok || spare != 100 {
		t.Fatalf("Spare = %d %v", spare, ok)
	}
}
