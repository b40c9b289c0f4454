package bus_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestBrokerFaultsLoseNothingAndDuplicateNothing injects broker
// misbehaviour with kfake's ControlKey: the first produce request of the
// run fails (connection dropped, or a partition error), and the first fetch
// fails. Publish still succeeds, and the consumer sees each record exactly
// once.
func TestBrokerFaultsLoseNothingAndDuplicateNothing(t *testing.T) {
	t.Parallel()
	faults := map[string]func(kmsg.Request) (kmsg.Response, error, bool){
		"connection dropped on produce": func(kmsg.Request) (kmsg.Response, error, bool) {
			return nil, errors.New("injected: connection dropped"), true
		},
		"not leader on produce": func(req kmsg.Request) (kmsg.Response, error, bool) {
			return produceError(req.(*kmsg.ProduceRequest), kerr.NotLeaderForPartition), nil, true
		},
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := bustest.New(t)
			if c.Fake == nil {
				t.Skip("fault injection needs the in-process kfake cluster")
			}
			b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
			// Fail the next produce, and the first fetch the consumer makes.
			var producesSeen, fetchFaults atomic.Int32
			c.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				producesSeen.Add(1)
				return fault(req)
			})
			c.Fake.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
				fetchFaults.Add(1)
				return nil, errors.New("injected: fetch connection dropped"), true
			})
			const n = 20
			for i := range n {
				meta, ev := request("fault-"+strconv.Itoa(i), "acme", "eu", "hello")
				if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
					t.Fatalf("publish %d despite a transient fault: %v", i, err)
				}
			}
			if producesSeen.Load() != 1 {
				t.Fatalf("fault hit %d produce requests, want 1", producesSeen.Load())
			}
			var mu sync.Mutex
			seen := map[string]int{}
			done := make(chan struct{})
			var count atomic.Int32
			consume(t, b, bus.ConsumerConfig{Group: "faults", Streams: []string{bus.StreamRequests},
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					var ev events.InferenceRequest
					if err := d.Decode(ctx, &ev); err != nil {
						return err
					}
					mu.Lock()
					seen[ev.RequestID]++
					mu.Unlock()
					if count.Add(1) == n {
						close(done)
					}
					return nil
				}})
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("consumed %d of %d", count.Load(), n)
			}
			if fetchFaults.Load() != 1 {
				t.Errorf("fetch fault hit %d times, want 1", fetchFaults.Load())
			}
			// Give a duplicate the chance to show up before counting.
			extra := bustest.Namespace()
			meta, ev := request(extra, "acme", "eu", "last")
			if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the marker record", func() bool { return count.Load() == n+1 })
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				if got := seen["fault-"+strconv.Itoa(i)]; got != 1 {
					t.Errorf("fault-%d handled %d times", i, got)
				}
			}
		})
	}
}

// TestNextEventVersionIsAccepted produces records as an upgraded producer
// would: a registered type one version ahead, with a field this consumer
// does not know. They decode; two versions ahead goes to the dead-letter
// topic.
func TestNextEventVersionIsAccepted(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	produce := func(id string, version int) {
		rec := &kgo.Record{
			Topic: b.Topic("eu", bus.StreamUsage), Key: []byte(id),
			Value: []byte(`{"request_id":"` + id + `","resource":"acme","deployment":"d","sku":"Standard","model":"m","processing_geo":"eu","home_geo":"eu","prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"recorded_at":"2026-01-01T00:00:00Z","cached_tokens":1}`),
			Headers: []kgo.RecordHeader{{Key: bus.HeaderEventType, Value: []byte("usage.record")}, {Key: bus.HeaderEventVersion, Value: []byte(strconv.Itoa(version))},
				{Key: bus.HeaderRequestID, Value: []byte(id)}},
		}
		if err := raw.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan events.UsageRecord, 2)
	errs := make(chan error, 2)
	consume(t, b, bus.ConsumerConfig{Group: "versions", Streams: []string{bus.StreamUsage},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var u events.UsageRecord
			if err := d.Decode(ctx, &u); err != nil {
				errs <- err
				return err
			}
			got <- u
			return nil
		}})
	produce("v2", 2)
	select {
	case u := <-got:
		if u.RequestID != "v2" || u.TotalTokens != 7 {
			t.Fatalf("v2 decoded as %+v", u)
		}
	case err := <-errs:
		t.Fatalf("v2 refused: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("v2 not delivered")
	}
	produce("v3", 3)
	select {
	case u := <-got:
		t.Fatalf("v3 accepted: %+v", u)
	case err := <-errs:
		if !bus.IsPermanent(err) {
			t.Fatalf("v3 error is not permanent: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("v3 not delivered")
	}
}

// produceError answers a produce request with err on every partition it
// names.
func produceError(pr *kmsg.ProduceRequest, err *kerr.Error) *kmsg.ProduceResponse {
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = err.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
