package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// samePartitionKeys returns two keys the bus puts on one partition of a
// topic with n partitions, and a third on another partition.
func samePartitionKeys(t *testing.T, n int) (a, b, other string) {
	t.Helper()
	part := kgo.StickyKeyPartitioner(nil).ForTopic("any")
	of := func(k string) int { return part.Partition(&kgo.Record{Key: []byte(k)}, n) }
	a = "stuck-" + bustest.Namespace()
	for i := 0; b == "" || other == ""; i++ {
		k := fmt.Sprintf("key-%d", i)
		switch {
		case of(k) == of(a) && b == "":
			b = k
		case of(k) != of(a) && other == "":
			other = k
		}
	}
	return a, b, other
}

// dialFailure is the kind of error a handler sees while Redis or another
// store restarts.
func dialFailure() error {
	_, err := net.DialTimeout("tcp", "127.0.0.1:1", 100*time.Millisecond)
	if err == nil {
		return errors.New("port 1 answered")
	}
	return fmt.Errorf("indexing request: %w", err)
}

// TestFailureIsRetriedUntilItHeals fails a record's handler far more often
// than any bounded retry would allow, as an outage does. The record is not
// dead-lettered; its partition is paused meanwhile (a record behind it,
// of another key, waits), other partitions keep flowing, and once the
// failure heals both are handled, each once.
func TestFailureIsRetriedUntilItHeals(t *testing.T) {
	t.Parallel()
	failures := map[string]func() error{
		"plain error":        func() error { return errors.New("store refused") },
		"connection refused": dialFailure,
		"deadline exceeded":  func() error { return fmt.Errorf("indexing: %w", context.DeadlineExceeded) },
	}
	for name, fail := range failures {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := bustest.New(t)
			b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
			stuck, behind, other := samePartitionKeys(t, 12)
			var (
				healed   atomic.Bool
				attempts atomic.Int32
				mu       sync.Mutex
				calls    = map[string]int{}
			)
			consume(t, b, bus.ConsumerConfig{Group: "outage", Streams: []string{bus.StreamRequests},
				Backoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					if d.Meta.Key == stuck && !healed.Load() {
						attempts.Add(1)
						return fail()
					}
					mu.Lock()
					calls[d.Meta.Key]++
					mu.Unlock()
					return nil
				}})
			publish := func(key string) {
				meta, ev := request(key, "acme", "eu", "hello")
				meta.Key = key
				if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
					t.Fatal(err)
				}
			}
			handled := func(key string) int {
				mu.Lock()
				defer mu.Unlock()
				return calls[key]
			}
			publish(stuck)
			waitFor(t, 10*time.Second, "many more failed attempts than a bounded retry makes", func() bool { return attempts.Load() >= 20 })
			publish(behind)
			publish(other)
			waitFor(t, 10*time.Second, "the record on another partition", func() bool { return handled(other) == 1 })
			time.Sleep(300 * time.Millisecond) // the paused partition's record has had time to be fetched
			if n := handled(behind); n != 0 {
				t.Errorf("a record behind the failing one on its partition was handled %d times while the partition should be paused", n)
			}
			healed.Store(true)
			waitFor(t, 10*time.Second, "the healed record and the one behind it", func() bool { return handled(stuck) == 1 && handled(behind) == 1 })
			if dlq := readTopic(t, c.Brokers, b.Topic("eu", bus.StreamDLQ)); len(dlq) != 0 {
				t.Errorf("%d records dead-lettered during an outage", len(dlq))
			}
		})
	}
}

// TestPanicIsDeadLetteredByItsType lets a handler panic, once with a
// message carrying content and once with a runtime error. Each record is
// dead-lettered with the panic's type and nothing of its value, and the
// consumer goes on with the next record.
func TestPanicIsDeadLetteredByItsType(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	const canary = "canary-panic-7f3a"
	var after atomic.Int32
	stop := runConsumer(t, b, bus.ConsumerConfig{Group: "panics", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			switch d.Meta.RequestID {
			case "panic-string":
				panic("cannot handle " + canary)
			case "panic-runtime":
				var parts []string
				_ = parts[len(d.Meta.RequestID)] // index out of range
			default:
				after.Add(1)
			}
			return nil
		}})
	for _, id := range []string{"panic-string", "panic-runtime", "after"} {
		meta, ev := request(id, "acme", "eu", canary)
		meta.Key = "one-key"
		if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the record after the panics", func() bool { return after.Load() == 1 })
	got := map[string]string{}
	for _, r := range readTopic(t, c.Brokers, b.Topic("eu", bus.StreamDLQ)) {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
			if strings.Contains(string(x.Value), canary) {
				t.Errorf("dead-letter header %s carries the panic's value", x.Key)
			}
		}
		got[h[bus.HeaderRequestID]] = h[bus.HeaderDLQError]
	}
	want := map[string]string{"panic-string": "panic: string", "panic-runtime": "panic: runtime.Error"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead-lettered %v, want %v", got, want)
	}
	if err := stop(); err != nil {
		t.Errorf("consumer after panics: %v", err)
	}
}

// TestShutdownIsPromptWhileRetrying stops a consumer whose record is
// failing: Run returns at once rather than after the drain timeout, and
// the record, never settled, goes to the group's next member.
func TestShutdownIsPromptWhileRetrying(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	var attempts atomic.Int32
	stop := runConsumer(t, b, bus.ConsumerConfig{Group: "prompt", Streams: []string{bus.StreamRequests}, DrainTimeout: 10 * time.Second,
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			attempts.Add(1)
			return dialFailure()
		}})
	meta, ev := request("outlasting", "acme", "eu", "hello")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "failed attempts", func() bool { return attempts.Load() >= 2 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v to return while a record was retrying", took)
	}
	got := make(chan string, 1)
	consume(t, b, bus.ConsumerConfig{Group: "prompt", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			select {
			case got <- d.Meta.RequestID:
			default:
			}
			return nil
		}})
	select {
	case id := <-got:
		if id != "outlasting" {
			t.Errorf("next member got %s", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the unsettled record never reached the next member")
	}
}

// TestDeadLetteredAbuseRecordIsOnlyAReference dead-letters an abuse
// record: the dead-letter topic gets its headers and where it is, not its
// value, so nothing of it outlives the abuse log's 30 days.
func TestDeadLetteredAbuseRecordIsOnlyAReference(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	consume(t, b, bus.ConsumerConfig{Group: "abuse", Streams: []string{bus.StreamAbuseLog},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			return bus.Permanent(errors.New("not indexable"))
		}})
	if err := b.Publish(t.Context(), "eu", bus.StreamAbuseLog, bus.Meta{RequestID: "abuse-1", Resource: "acme", HomeGeo: "eu"},
		events.AbuseRecord{RequestID: "abuse-1", Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "gpt",
			Operation: events.OperationChatCompletions, Prompt: json.RawMessage(`"p"`), Output: json.RawMessage(`"o"`),
			PromptFilterResults: json.RawMessage(`[]`), CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	var dlq []*kgo.Record
	waitFor(t, 20*time.Second, "the dead letter", func() bool {
		dlq = readTopic(t, c.Brokers, b.Topic("eu", bus.StreamDLQ))
		return len(dlq) > 0
	})
	dl := dlq[0]
	if len(dl.Value) != 0 {
		t.Errorf("dead letter of an abuse record holds %d bytes of it", len(dl.Value))
	}
	h := map[string]string{}
	for _, x := range dl.Headers {
		h[x.Key] = string(x.Value)
	}
	if h[bus.HeaderDLQTopic] != b.Topic("eu", bus.StreamAbuseLog) || h[bus.HeaderDLQOffset] != "0" || h[bus.HeaderRequestID] != "abuse-1" {
		t.Errorf("dead letter does not say where the record is: %v", h)
	}
}

// TestKeyLookupOutageIsRetried reads a record sealed under a data key
// this instance has not seen, while its key table cannot catch up (here:
// closed). That is no reason to give the record up; a shredded key is.
func TestKeyLookupOutageIsRetried(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	writer := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	reader := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	reader.KeyStore().Close()
	errs := make(chan error, 1)
	consume(t, reader, bus.ConsumerConfig{Group: "lookup", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var ev events.InferenceRequest
			select {
			case errs <- d.Decode(ctx, &ev):
			default:
			}
			return nil
		}})
	meta, ev := request("unseen-key", "resource-"+ns, "eu", "hello")
	if err := writer.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err == nil || bus.IsPermanent(err) {
			t.Fatalf("key table unavailable: got %v, want an error to retry", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("record not delivered")
	}
}
