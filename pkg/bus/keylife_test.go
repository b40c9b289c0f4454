package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// TestShreddedResourceGetsNoNewKeyAnywhere: after one instance shreds a
// resource, a request still in flight on another instance, or on one
// started afterwards, cannot be sealed: publishing fails closed, nothing
// reaches the topic, and no new key of the resource appears on the keys
// topic.
func TestShreddedResourceGetsNoNewKeyAnywhere(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	a := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	meta, ev := request("before", "acme", "eu", "kept")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	if err := a.Keys().Shred(t.Context(), "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	late := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	for name, inst := range map[string]*bus.Bus{"shredder": a, "other instance": b, "started later": late} {
		meta, ev := request("after-"+name, "acme", "eu", "in flight")
		err := inst.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev)
		if !errors.Is(err, keys.ErrShredded) {
			t.Errorf("%s: publishing for a shredded resource = %v, want ErrShredded", name, err)
		}
	}
	for _, r := range readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamRequests)) {
		if string(r.Key) != "before" {
			t.Errorf("a request of the shredded resource reached the topic: %s", r.Key)
		}
	}
	var live []string
	for _, r := range readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamKeys)) {
		var dk events.DataKey
		if r.Value == nil || json.Unmarshal(r.Value, &dk) != nil || dk.Deleted {
			continue
		}
		live = append(live, dk.KeyID)
	}
	if len(live) != 1 {
		t.Fatalf("data keys written for acme: %v, want only the first", live)
	}
}

// TestInstancesConvergeOnTheNewestKeyVersion: a key rolls after the
// configured number of seals; another instance then seals under the new
// version (the keys topic decides), and every version still opens what
// it sealed, on an instance started later too.
func TestInstancesConvergeOnTheNewestKeyVersion(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	opts := bustest.Options{Namespace: ns, Geos: []string{"eu"}, KeyOptions: []keys.Option{keys.WithRotation(2, 0)}}
	a, b := c.Bus(t, opts), c.Bus(t, opts)
	publish := func(inst *bus.Bus, i int) {
		meta, ev := request("r"+strconv.Itoa(i), "acme", "eu", "text "+strconv.Itoa(i))
		if err := inst.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	keyIDs := func() []string {
		ids := make([]string, 4)
		for _, r := range readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamRequests)) {
			i, _ := strconv.Atoi(strings.TrimPrefix(string(r.Key), "r"))
			ids[i] = bus.MetaOf(r).KeyID
		}
		return ids
	}
	for i := range 3 {
		publish(a, i)
	}
	// a seals twice under the first version, then rolls
	ids := keyIDs()
	if ids[0] != ids[1] || ids[1] == ids[2] || ids[2] == "" {
		t.Fatalf("key IDs of a's three records: %v", ids[:3])
	}
	// b learns of the second version from the keys topic (the topic,
	// not a clock, says which is newest) and seals under it
	deadline := time.Now().Add(10 * time.Second)
	for {
		k, err := b.Keys().ForResource(t.Context(), "eu", "acme")
		if err != nil {
			t.Fatal(err)
		}
		if k.ID == ids[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b still seals under %s, not the newest version %s", k.ID, ids[2])
		}
		time.Sleep(10 * time.Millisecond) // the key table catching up
	}
	publish(b, 3)
	if ids = keyIDs(); ids[3] != ids[2] {
		t.Fatalf("key IDs of the four records: %v", ids)
	}
	late := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	consumed := make(chan error, 4)
	consume(t, late, bus.ConsumerConfig{Group: "late", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var ev events.InferenceRequest
			err := d.Decode(ctx, &ev)
			consumed <- err
			return err
		}})
	for range 4 {
		select {
		case err := <-consumed:
			if err != nil {
				t.Fatalf("an older version no longer opens: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("records were not consumed")
		}
	}
	if err := a.Keys().Shred(t.Context(), "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := late.Keys().ByID(t.Context(), id); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Errorf("version %s survived shredding: %v", id, err)
		}
	}
}

// TestWorkOfADeletedResourceIsDropped: a handler that must publish for a
// resource shredded meanwhile fails closed; the record is neither retried
// nor dead-lettered, and nothing is published.
func TestWorkOfADeletedResourceIsDropped(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	meta, ev := request("in-flight", "acme", "eu", "text")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	if err := b.Keys().Shred(t.Context(), "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	meta2, ev2 := request("next", "globex", "eu", "text")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta2, ev2); err != nil {
		t.Fatal(err)
	}
	calls := make(chan string, 8)
	consume(t, b, bus.ConsumerConfig{Group: "worker", Streams: []string{bus.StreamRequests}, Backoff: time.Millisecond,
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			calls <- d.Meta.RequestID
			m := bus.Meta{RequestID: d.Meta.RequestID, Resource: d.Meta.Resource, HomeGeo: "eu"}
			return b.Publish(ctx, "eu", bus.StreamCompletions, m, events.InferenceResult{RequestID: d.Meta.RequestID, Status: events.StatusOK, CreatedAt: time.Now()})
		}})
	seen := map[string]int{}
	for seen["in-flight"] == 0 || seen["next"] == 0 {
		select {
		case id := <-calls:
			seen[id]++
		case <-time.After(20 * time.Second):
			t.Fatalf("handled %v", seen)
		}
	}
	if dl := readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamDLQ)); len(dl) != 0 {
		t.Fatalf("%d records dead-lettered", len(dl))
	}
	if seen["in-flight"] != 1 || len(calls) != 0 {
		t.Fatalf("handled %v (+%d): the record of the deleted resource was retried", seen, len(calls))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamCompletions))
		if len(out) > 1 || (len(out) == 1 && string(out[0].Key) != "next") {
			t.Fatalf("a completion of the deleted resource was published")
		}
		if len(out) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other resource's completion was not published")
		}
		time.Sleep(20 * time.Millisecond) // polling the topic
	}
}
