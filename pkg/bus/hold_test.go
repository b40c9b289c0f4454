package bus_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestHeldRecordIsReadAgainByTheNextOwner: a consumer that holds a record
// and stops before releasing it commits nothing from that record on, so
// the group's next member reads the held record and everything behind it
// again; a released hold commits past them as if there had been none. The
// long case puts enough settled records behind the hold for their
// bookkeeping to be collapsed.
func TestHeldRecordIsReadAgainByTheNextOwner(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		records int
		release bool
	}{
		{"held, then the consumer stops", 6, false},
		{"held and released", 6, true},
		{"held behind many settled records", 300, false},
		{"released behind many settled records", 300, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
			const group = "holder"
			ids := make([]string, tc.records)
			for i := range ids {
				ids[i] = fmt.Sprintf("r%03d", i)
			}
			publish := func(id string) {
				t.Helper()
				meta, ev := request(id, "acme", "eu", "content of "+id)
				meta.Key = "one-partition"
				if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range ids {
				publish(id)
			}

			var (
				mu    sync.Mutex
				first []string
				hold  *bus.Hold
			)
			var c1 *bus.Consumer
			c1, err := b.NewConsumer(bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests}, CommitInterval: 100 * time.Millisecond,
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					var req events.InferenceRequest
					if err := d.Decode(ctx, &req); err != nil {
						return err
					}
					mu.Lock()
					defer mu.Unlock()
					first = append(first, req.RequestID)
					switch req.RequestID {
					case ids[1]:
						hold = c1.Hold(d.Record)
						if hold.Revoked() {
							t.Errorf("a hold on a record being handled reports its partition revoked")
						}
					case ids[len(ids)-1]:
						if tc.release {
							hold.Release()
							hold.Release() // idempotent
						}
					}
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c1.Run(ctx) }()
			waitFor(t, 20*time.Second, "the first member to handle every record", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(first) == len(ids)
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("first member: %v", err)
			}
			if !hold.Revoked() {
				t.Errorf("hold not revoked after its consumer stopped")
			}

			var second []string
			consume(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests},
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					mu.Lock()
					defer mu.Unlock()
					second = append(second, d.Meta.RequestID)
					return nil
				}})
			publish("last")
			waitFor(t, 20*time.Second, "the next member to read the newest record", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return slices.Contains(second, "last")
			})
			mu.Lock()
			defer mu.Unlock()
			want := []string{"last"}
			if !tc.release {
				want = append(slices.Clone(ids[1:]), "last")
			}
			if !slices.Equal(second, want) {
				t.Errorf("the next member read %d records %v..., want %d from %v", len(second), head(second), len(want), head(want))
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 3)] }
