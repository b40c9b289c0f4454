package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/keys/keystest"
)

func request(id, resource, home, text string) (bus.Meta, events.InferenceRequest) {
	body, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": text}}})
	return bus.Meta{RequestID: id, Resource: resource, HomeGeo: home, Deployment: "gpt"},
		events.InferenceRequest{RequestID: id, Resource: resource, HomeGeo: home, ProcessingGeo: home, Deployment: "gpt",
			SKU: events.SKUStandard, Model: "terroir-ngram", Operation: events.OperationChatCompletions,
			APIFlavor: events.APIFlavorOpenAI, Body: body, CreatedAt: time.Now().UTC()}
}

// consume runs a consumer group until the test ends.
func consume(t *testing.T, b *bus.Bus, cfg bus.ConsumerConfig) {
	t.Helper()
	c, err := b.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer %s: %v", cfg.Group, err)
		}
	})
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

func TestRoundTripPerGeography(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{})
	for _, geo := range []string{"eu", "us"} {
		t.Run(geo, func(t *testing.T) {
			got := make(chan events.InferenceRequest, 1)
			gotMeta := make(chan bus.Meta, 1)
			consume(t, b, bus.ConsumerConfig{Group: "rt-" + geo, Streams: []string{bus.StreamRequests}, Geos: []string{geo},
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					var ev events.InferenceRequest
					if err := d.Decode(ctx, &ev); err != nil {
						return err
					}
					if d.Geo != geo {
						return bus.Permanent(fmt.Errorf("record of %s consumed in %s", d.Geo, geo))
					}
					gotMeta <- d.Meta
					got <- ev
					return nil
				}})
			meta, ev := request("req-"+geo, "acme-"+geo, geo, "hello from "+geo)
			if err := b.Publish(t.Context(), geo, bus.StreamRequests, meta, ev); err != nil {
				t.Fatal(err)
			}
			select {
			case g := <-got:
				m := <-gotMeta
				if g.RequestID != ev.RequestID || !bytes.Equal(g.Body, ev.Body) || g.HomeGeo != geo {
					t.Errorf("got %+v", g)
				}
				if m.RequestID != "req-"+geo || m.Resource != "acme-"+geo || m.HomeGeo != geo || m.Deployment != "gpt" ||
					m.Type != events.TypeInferenceRequest || !strings.HasPrefix(m.KeyID, geo+"/acme-"+geo+"/") {
					t.Errorf("headers: %+v", m)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no delivery")
			}
		})
	}
}

func TestContentCannotBePublishedInPlaintext(t *testing.T) {
	t.Parallel()
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	_, ev := request("r1", "acme", "eu", "secret")
	cases := []struct {
		name string
		meta bus.Meta
		ev   events.Event
	}{
		{"no resource", bus.Meta{RequestID: "r1", HomeGeo: "eu"}, ev},
		{"no home geography", bus.Meta{RequestID: "r1", Resource: "acme"}, ev},
		{"no request id", bus.Meta{Resource: "acme", HomeGeo: "eu"}, ev},
		{"abuse record outside its home geography", bus.Meta{RequestID: "r1", Resource: "acme", HomeGeo: "us"},
			events.AbuseRecord{RequestID: "r1", Resource: "acme", HomeGeo: "us", Prompt: json.RawMessage(`{}`)}},
		{"unregistered type", bus.Meta{RequestID: "r1"}, unregistered{}},
	}
	for _, c := range cases {
		if err := b.Publish(t.Context(), "eu", bus.StreamRequests, c.meta, c.ev); err == nil {
			t.Errorf("%s: published", c.name)
		}
	}
}

type unregistered struct{ Text string }

func (unregistered) EventType() events.Type { return events.Type{Name: "made.up", Version: 1} }

func TestShreddedResourceIsUnreadable(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	errs := make(chan error, 4)
	consume(t, b, bus.ConsumerConfig{Group: "shred", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var ev events.InferenceRequest
			err := d.Decode(ctx, &ev)
			errs <- err
			return err
		}})
	meta, ev := request("before", "acme", "eu", "kept")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("before shredding: %v", err)
	}
	if err := b.Keys().Shred(t.Context(), "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	// A second instance that starts after the shredding reads the old
	// record from the log and cannot open it.
	late := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	lateErr := make(chan error, 1)
	consume(t, late, bus.ConsumerConfig{Group: "late", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var ev events.InferenceRequest
			err := d.Decode(ctx, &ev)
			lateErr <- err
			return err
		}})
	select {
	case err := <-lateErr:
		if !errors.Is(err, keys.ErrKeyNotFound) || !bus.IsPermanent(err) {
			t.Fatalf("old record after shredding: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("late consumer saw nothing")
	}
}

func TestProvisioningIsIdempotent(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	defs, err := bus.LoadTopicDefs(bustest.TopicsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	adm, _ := b.Admin("eu")
	for range 2 {
		if err := bus.Provision(t.Context(), adm, ns, "eu", defs, 1); err != nil {
			t.Fatalf("provisioning again: %v", err)
		}
	}
	topics, err := adm.ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range defs.Streams {
		name := bus.TopicName(ns, "eu", s.Name)
		td, ok := topics[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if len(td.Partitions) != int(s.Partitions) {
			t.Errorf("%s has %d partitions, want %d", name, len(td.Partitions), s.Partitions)
		}
	}
	want := map[string]map[string]string{
		bus.StreamAbuseLog: {"retention.ms": "2592000000"},
		bus.StreamControl:  {"cleanup.policy": "compact"},
		bus.StreamKeys:     {"cleanup.policy": "compact"},
	}
	for stream, kv := range want {
		rc, err := adm.DescribeTopicConfigs(t.Context(), bus.TopicName(ns, "eu", stream))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := rc.On(bus.TopicName(ns, "eu", stream), nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range kv {
			if got := configValue(cfg, k); got != v {
				t.Errorf("%s %s = %q, want %q", stream, k, got, v)
			}
		}
	}
}

func configValue(rc kadm.ResourceConfig, name string) string {
	for _, c := range rc.Configs {
		if c.Key == name {
			return c.MaybeValue()
		}
	}
	return ""
}

func TestParseTopicDefsRejectsBadFiles(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"unknown field":                 "streams:\n  - name: replies\n    partitons: 3\n",
		"missing required":              "streams:\n  - name: requests\n",
		"dotted name":                   "streams:\n  - name: a.b\n  - name: replies\n  - name: control\n  - name: keys\n  - name: dlq\n",
		"duplicate":                     "streams:\n  - name: replies\n  - name: replies\n  - name: control\n  - name: keys\n  - name: dlq\n",
		"transit retention in the file": "streams:\n  - name: replies\n    config: {retention.ms: \"604800000\"}\n  - name: control\n  - name: keys\n  - name: dlq\n",
	}
	for name, doc := range cases {
		if _, err := bus.ParseTopicDefs([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKafkaKeyStoreContract(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	keystest.Run(t, func(t *testing.T) func() keys.Store {
		ns := bustest.Namespace()
		return func() keys.Store {
			b := c.Bus(t, bustest.Options{Namespace: ns})
			return kafkaStore{b}
		}
	})
}

// kafkaStore reaches the bus's key store through its Manager-facing
// surface: the store is what the bus's key manager was built on.
type kafkaStore struct{ b *bus.Bus }

func (s kafkaStore) Put(ctx context.Context, k keys.WrappedKey) error {
	return s.b.KeyStore().Put(ctx, k)
}
func (s kafkaStore) Get(ctx context.Context, id string) (keys.WrappedKey, error) {
	return s.b.KeyStore().Get(ctx, id)
}
func (s kafkaStore) Current(ctx context.Context, geo, res string) (keys.WrappedKey, error) {
	return s.b.KeyStore().Current(ctx, geo, res)
}
func (s kafkaStore) Delete(ctx context.Context, geo, res string) error {
	return s.b.KeyStore().Delete(ctx, geo, res)
}
func (s kafkaStore) Reopen(ctx context.Context, geo, res string) error {
	return s.b.KeyStore().Reopen(ctx, geo, res)
}

func TestKeyCreatedByAnotherInstanceIsFound(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	a := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	k, err := a.Keys().ForResource(t.Context(), "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	// b has not seen the key yet when it asks; the lookup catches up.
	kb, err := b.Keys().ByID(t.Context(), k.ID)
	if err != nil || kb.ID != k.ID {
		t.Fatalf("ByID on another instance: %v %v", kb, err)
	}
	cur, err := b.Keys().ForResource(t.Context(), "eu", "acme")
	if err != nil || cur.ID != k.ID {
		t.Fatalf("another instance made a second key: %v %v", cur, err)
	}
}

// TestRequestReplyReachesOnlyTheWaitingInstance runs two requester
// instances that read the same reply partition and a responder that
// answers each request with a single reply or a stream of chunks. Every
// caller gets exactly its own replies, in order.
func TestRequestReplyReachesOnlyTheWaitingInstance(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	// Two instance IDs that hash to the same reply partition, so the
	// filter by instance, not the partition, is what keeps them apart.
	idA, idB := sharedPartitionIDs(t, 16)
	instA := c.Bus(t, bustest.Options{Namespace: ns, InstanceID: idA})
	instB := c.Bus(t, bustest.Options{Namespace: ns, InstanceID: idB})
	responder := c.Bus(t, bustest.Options{Namespace: ns})

	const chunks = 5
	consume(t, responder, bus.ConsumerConfig{Group: "responder", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var req events.InferenceRequest
			if err := d.Decode(ctx, &req); err != nil {
				return err
			}
			if !req.Stream {
				body, _ := json.Marshal(map[string]string{"echo": string(req.Body)})
				return responder.Reply(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Body: body, CreatedAt: time.Now()})
			}
			for i := range chunks {
				body, _ := json.Marshal(map[string]any{"id": req.RequestID, "n": i})
				if err := responder.Reply(ctx, d, i, false, events.InferenceChunk{RequestID: req.RequestID, Seq: i, Body: body, CreatedAt: time.Now()}); err != nil {
					return err
				}
			}
			return responder.Reply(ctx, d, chunks, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Body: json.RawMessage(`{}`), CreatedAt: time.Now()})
		}})

	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			var wg sync.WaitGroup
			for i, inst := range []*bus.Bus{instA, instB} {
				rq, err := inst.NewRequester(t.Context(), "eu")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(rq.Close)
				for j := range 20 {
					wg.Go(func() {
						id := fmt.Sprintf("inst%d-stream%v-%d", i, stream, j)
						home := []string{"eu", "us"}[j%2]
						meta, ev := request(id, "acme", home, "question "+id)
						ev.Stream = stream
						ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
						defer cancel()
						rs, err := rq.Request(ctx, home, bus.StreamRequests, meta, ev)
						if err != nil {
							t.Error(err)
							return
						}
						defer rs.Close()
						n := 0
						for {
							d, err := rs.Next(ctx)
							if err == io.EOF {
								break
							}
							if err != nil {
								t.Errorf("%s: %v", id, err)
								return
							}
							if d.Meta.RequestID != id || d.Meta.Seq != n {
								t.Errorf("%s got reply of %s seq %d (want seq %d)", id, d.Meta.RequestID, d.Meta.Seq, n)
							}
							if d.Meta.Final {
								var res events.InferenceResult
								if err := d.Decode(ctx, &res); err != nil || res.RequestID != id {
									t.Errorf("%s final: %+v %v", id, res, err)
								}
								if !stream && !strings.Contains(string(res.Body), "question "+id) {
									t.Errorf("%s: reply body is not its own", id)
								}
							} else {
								var ch events.InferenceChunk
								if err := d.Decode(ctx, &ch); err != nil || ch.RequestID != id || ch.Seq != n {
									t.Errorf("%s chunk: %+v %v", id, ch, err)
								}
							}
							n++
						}
						want := 1
						if stream {
							want = chunks + 1
						}
						if n != want {
							t.Errorf("%s: %d replies, want %d", id, n, want)
						}
					})
				}
			}
			wg.Wait()
		})
	}
}

func sharedPartitionIDs(t *testing.T, partitions int) (string, string) {
	t.Helper()
	seen := map[int32]string{}
	for i := range 1000 {
		id := fmt.Sprintf("ingress-%s-%d", bustest.Namespace(), i)
		p := bus.ReplyPartition(id, partitions)
		if other, ok := seen[p]; ok {
			return other, id
		}
		seen[p] = id
	}
	t.Fatal("no two IDs share a partition")
	return "", ""
}

func TestRequestTimesOutAndCancels(t *testing.T) {
	t.Parallel()
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	rq := requester(t, b)
	meta, ev := request("nobody-answers", "acme", "eu", "hello?")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	rs, err := rq.Request(ctx, "eu", bus.StreamRequests, meta, ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next after deadline: %v", err)
	}
	rs.Close()
	if n := rq.Waiting(); n != 0 {
		t.Errorf("%d waiters left after Close", n)
	}
	if _, err := rq.Request(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatalf("request ID reusable after Close: %v", err)
	}
	rq.Close()
}

// TestShreddingRemovesTheWrappedKeyFromTheLog checks crypto-shredding at
// the Kafka level: after the tombstone and a compaction, no record of the
// keys topic holds the resource's wrapped data key any more.
func TestShreddingRemovesTheWrappedKeyFromTheLog(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	if c.Fake == nil {
		t.Skip("compaction on demand needs the in-process kfake cluster; a real broker compacts on its own schedule")
	}
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	victim, err := b.Keys().ForResource(t.Context(), "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := b.Keys().ForResource(t.Context(), "eu", "globex")
	if err != nil {
		t.Fatal(err)
	}
	// Compaction never touches the last batch of a partition; later
	// writes push the tombstone's predecessors out of it.
	if err := b.Keys().Shred(t.Context(), "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"later1", "later2"} {
		if _, err := b.Keys().ForResource(t.Context(), "eu", r); err != nil {
			t.Fatal(err)
		}
	}
	c.Fake.Compact()

	values := map[string][][]byte{}
	for _, r := range readTopic(t, c.Brokers, bus.TopicName(ns, "eu", bus.StreamKeys)) {
		values[string(r.Key)] = append(values[string(r.Key)], r.Value)
	}
	for _, v := range values[victim.ID] {
		if v != nil {
			t.Fatalf("the shredded key's wrapped value is still in the log")
		}
	}
	if len(values[bystander.ID]) == 0 || values[bystander.ID][len(values[bystander.ID])-1] == nil {
		t.Fatal("compaction took another resource's key")
	}
}

// TestDecodeErrorsQuoteNoContent feeds payloads that fail to decode and
// checks that the error, which reaches logs and dead-letter headers, says
// where and why without quoting the payload.
func TestDecodeErrorsQuoteNoContent(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cases := map[string]string{
		"malformed":  `{"request_id":"Zq"Zsecret-canary`,
		"wrong type": `{"request_id":"x","total_tokens":"Zsecret-canary"}`,
	}
	errs := make(chan error, len(cases))
	consume(t, b, bus.ConsumerConfig{Group: "decode-errors", Streams: []string{bus.StreamUsage},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var u events.UsageRecord
			err := d.Decode(ctx, &u)
			errs <- err
			return err
		}})
	for name, payload := range cases {
		rec := &kgo.Record{Topic: b.Topic("eu", bus.StreamUsage), Key: []byte(name), Value: []byte(payload),
			Headers: []kgo.RecordHeader{{Key: bus.HeaderEventType, Value: []byte("usage.record")}, {Key: bus.HeaderEventVersion, Value: []byte("1")}}}
		if err := raw.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for range cases {
		select {
		case err := <-errs:
			if err == nil || !bus.IsPermanent(err) {
				t.Fatalf("bad payload: %v", err)
			}
			if strings.Contains(err.Error(), "Z") || strings.Contains(err.Error(), "canary") {
				t.Errorf("decode error quotes the payload: %v", err)
			}
			if !strings.Contains(err.Error(), "byte") && !strings.Contains(err.Error(), "total_tokens") {
				t.Errorf("decode error does not say where: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("bad payload not delivered")
		}
	}
}

// TestRepliesAreHandedOutInSequenceOrder: when several services reply to
// one request, their records may reach the waiting instance out of
// order; the stream hands them out in sequence order, once each.
func TestRepliesAreHandedOutInSequenceOrder(t *testing.T) {
	t.Parallel()
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	order := []struct {
		seq   int
		final bool
	}{{3, true}, {1, false}, {1, false}, {0, false}, {3, true}, {2, false}, {0, false}}
	consume(t, b, bus.ConsumerConfig{Group: "shuffler", Streams: []string{bus.StreamRequests}, Geos: []string{"eu"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			for _, o := range order {
				ev := events.InferenceChunk{RequestID: d.Meta.RequestID, Seq: o.seq, Body: json.RawMessage(fmt.Sprintf(`{"n":%d}`, o.seq)), CreatedAt: time.Now()}
				if err := b.Reply(ctx, d, o.seq, o.final, ev); err != nil {
					return err
				}
			}
			return nil
		}})
	rq := requester(t, b)
	meta, ev := request("shuffled", "acme", "eu", "hello")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rs, err := rq.Request(ctx, "eu", bus.StreamRequests, meta, ev)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		d, err := rs.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Meta.Seq)
	}
	if fmt.Sprint(got) != "[0 1 2 3]" {
		t.Fatalf("replies in order %v, want [0 1 2 3]", got)
	}
}

// TestBatchRepliesGoToTheGroupStream answers requests whose reply address
// is a batch's: every reply lands on the home geography's batch-replies
// stream, read by a consumer group, whichever partition its key picks;
// a batch address naming a partition, or a replies address naming none,
// is refused.
func TestBatchRepliesGoToTheGroupStream(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns})
	got := make(chan string, 64)
	consume(t, b, bus.ConsumerConfig{Group: "batch", Streams: []string{bus.StreamBatchReplies}, Geos: []string{"eu"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var res events.InferenceResult
			if err := d.Decode(ctx, &res); err != nil {
				return err
			}
			got <- res.RequestID
			return nil
		}})
	for i := range 20 {
		id := fmt.Sprintf("batch-line-%d", i)
		meta, _ := request(id, "acme", "eu", "")
		meta.ReplyTo = bus.BatchReplyAddress(ns, "eu")
		d := &bus.Delivery{Meta: meta}
		if err := b.Reply(t.Context(), d, 0, true, events.InferenceResult{RequestID: id, Status: events.StatusOK, Body: json.RawMessage(`{}`), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 20 {
		select {
		case id := <-got:
			seen[id] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of 20 batch replies arrived", len(seen))
		}
	}
	for _, addr := range []string{bus.TopicName(ns, "eu", bus.StreamBatchReplies) + "/3/batch", bus.TopicName(ns, "eu", bus.StreamReplies) + "/-1/x"} {
		meta, _ := request("bad", "acme", "eu", "")
		meta.ReplyTo = addr
		if err := b.Reply(t.Context(), &bus.Delivery{Meta: meta}, 0, true, events.InferenceResult{RequestID: "bad", Status: events.StatusOK, CreatedAt: time.Now()}); err == nil {
			t.Errorf("reply to %s was accepted", addr)
		}
	}
}

// TestARequestCarriesWhenItsCallerStopsWaiting: the deadline of a
// request's context travels as Meta.ReplyBy, and a consumer that reads it
// after the deadline sees it expired; a request without a deadline (a
// batch line) never expires.
func TestARequestCarriesWhenItsCallerStopsWaiting(t *testing.T) {
	t.Parallel()
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	rq := requester(t, b)
	type seen struct {
		replyBy          time.Time
		expiredOnArrival bool
	}
	got := make(chan seen, 4)
	release := make(chan struct{})
	consume(t, b, bus.ConsumerConfig{Group: "reply-by", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			s := seen{replyBy: d.Meta.ReplyBy, expiredOnArrival: d.Expired()}
			if d.Meta.RequestID == "waited-for" {
				<-release // held past its deadline, as in an overloaded stack
				if !d.Expired() {
					t.Errorf("request read after its caller's deadline %v is not expired", d.Meta.ReplyBy)
				}
			}
			got <- s
			return nil
		}})

	deadline := time.Now().Add(300 * time.Millisecond)
	ctx, cancel := context.WithDeadline(t.Context(), deadline)
	defer cancel()
	meta, ev := request("waited-for", "acme", "eu", "hello")
	rs, err := rq.Request(ctx, "eu", bus.StreamRequests, meta, ev)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	time.AfterFunc(400*time.Millisecond, func() { close(release) })
	s := <-got
	if s.replyBy.UnixMilli() != deadline.UnixMilli() {
		t.Errorf("ReplyBy %v, want the context's deadline %v", s.replyBy, deadline)
	}
	if s.expiredOnArrival {
		t.Error("a request read before its deadline is expired")
	}

	meta, ev = request("batch-line", "acme", "eu", "hello")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	if s := <-got; !s.replyBy.IsZero() || s.expiredOnArrival {
		t.Errorf("a request nobody waits on carries ReplyBy %v (expired %v)", s.replyBy, s.expiredOnArrival)
	}
}

// requester is a requester of b in eu, closed when the test ends.
func requester(t *testing.T, b *bus.Bus) *bus.Requester {
	t.Helper()
	rq, err := b.NewRequester(t.Context(), "eu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rq.Close)
	return rq
}
