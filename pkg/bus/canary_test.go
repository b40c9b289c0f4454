package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestCanaryNeverReachesTheLog sends a unique canary string as the content
// of every kind of content record: requests in both geographies, a
// streamed reply, an abuse-monitoring record and a dead-lettered request.
// Read back with a second, independent Kafka client (segmentio/kafka-go),
// no key, value or header of any topic contains it, and neither does any
// file the cluster wrote to disk. A plain usage record's marker, read the
// same ways, shows the scans would have found plaintext.
func TestCanaryNeverReachesTheLog(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := bustest.New(t, kfake.DataDir(dataDir))
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns})
	canary := "canary-" + bustest.Namespace() + "-do-not-store"
	marker := "usage-marker-" + bustest.Namespace()
	const (
		chunks  = 2
		refused = "refused by the test handler"
	)
	contentJSON := func(field string) json.RawMessage {
		raw, _ := json.Marshal(map[string]string{field: canary})
		return raw
	}

	stopResponder := runConsumer(t, b, bus.ConsumerConfig{Group: "canary-responder", Streams: []string{bus.StreamRequests},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var req events.InferenceRequest
			if err := d.Decode(ctx, &req); err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(req.RequestID, "refused-"):
				return bus.Permanent(errors.New(refused))
			case d.Meta.ReplyTo == "":
				return nil
			}
			for i := range chunks {
				if err := b.Reply(ctx, d, i, false, events.InferenceChunk{RequestID: req.RequestID, Seq: i,
					Body: contentJSON("delta"), CreatedAt: time.Now()}); err != nil {
					return err
				}
			}
			return b.Reply(ctx, d, chunks, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK,
				Body: contentJSON("content"), CreatedAt: time.Now()})
		}})

	ctx := t.Context()
	for _, p := range []struct{ geo, id, resource string }{
		{"eu", "plain-eu", "acme"},
		{"us", "plain-us", "acme-us"},
		{"eu", "refused-eu", "acme"},
	} {
		meta, ev := request(p.id, p.resource, p.geo, canary)
		if err := b.Publish(ctx, p.geo, bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	rq, err := b.NewRequester(ctx, "eu")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ geo, id, resource string }{
		{"eu", "asked-eu", "acme"},
		{"us", "asked-us", "acme-us"},
	} {
		meta, ev := request(p.id, p.resource, p.geo, canary)
		ev.Stream = true
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		rs, err := rq.Request(rctx, p.geo, bus.StreamRequests, meta, ev)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		n := 0
		for {
			d, err := rs.Next(rctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", p.id, err)
			}
			// The canary really travelled as content, end to end.
			pt, err := d.Payload(rctx)
			if err != nil || !bytes.Contains(pt, []byte(canary)) {
				t.Errorf("%s reply %d: opened payload lacks the canary (%v)", p.id, n, err)
			}
			n++
		}
		rs.Close()
		cancel()
		if n != chunks+1 {
			t.Errorf("%s: %d replies, want %d", p.id, n, chunks+1)
		}
	}
	if err := b.Publish(ctx, "eu", bus.StreamAbuseLog, bus.Meta{RequestID: "plain-eu", Resource: "acme", HomeGeo: "eu"},
		events.AbuseRecord{RequestID: "plain-eu", Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "gpt",
			Operation: events.OperationChatCompletions, Prompt: contentJSON("prompt"), Output: contentJSON("output"),
			PromptFilterResults: json.RawMessage(`[]`), CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "eu", bus.StreamUsage, bus.Meta{RequestID: "plain-eu", Resource: marker, HomeGeo: "eu"},
		events.UsageRecord{RequestID: "plain-eu", Resource: marker, Deployment: "gpt", SKU: events.SKUStandard,
			Model: "terroir-ngram", ProcessingGeo: "eu", HomeGeo: "eu", PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7,
			RecordedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	adm, err := b.Admin("eu")
	if err != nil {
		t.Fatal(err)
	}
	dlqTopic := b.Topic("eu", bus.StreamDLQ)
	waitFor(t, 20*time.Second, "the refused request on the dead-letter topic", func() bool {
		ends, err := adm.ListEndOffsets(ctx, dlqTopic)
		if err != nil {
			return false
		}
		var n int64
		for _, o := range ends[dlqTopic] {
			n += o.Offset
		}
		return n > 0
	})

	// Read every record of every topic of the namespace with kafka-go.
	defs, err := bus.LoadTopicDefs(bustest.TopicsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	topics, msgs := readNamespace(t, c.Brokers[0], ns)
	if want := 2 * len(defs.Streams); len(topics) != want {
		t.Errorf("kafka-go listed %d topics in the namespace, want %d", len(topics), want)
	}
	count := map[string]int{}
	for _, m := range msgs {
		count[m.Topic]++
	}
	exact := map[string]int{
		bus.TopicName(ns, "eu", bus.StreamRequests): 3,
		bus.TopicName(ns, "us", bus.StreamRequests): 2,
		bus.TopicName(ns, "eu", bus.StreamReplies):  2 * (chunks + 1),
		bus.TopicName(ns, "eu", bus.StreamAbuseLog): 1,
		bus.TopicName(ns, "eu", bus.StreamUsage):    1,
		dlqTopic:                                    1,
	}
	atLeast := map[string]int{ // data keys: eu's resource and abuse key, us's resource
		bus.TopicName(ns, "eu", bus.StreamKeys): 2,
		bus.TopicName(ns, "us", bus.StreamKeys): 1,
	}
	for topic := range topics {
		switch got := count[topic]; {
		case exact[topic] > 0 && got != exact[topic]:
			t.Errorf("%s: kafka-go read %d records, want %d", topic, got, exact[topic])
		case atLeast[topic] > 0 && got < atLeast[topic]:
			t.Errorf("%s: kafka-go read %d records, want at least %d", topic, got, atLeast[topic])
		case exact[topic] == 0 && atLeast[topic] == 0 && got != 0:
			t.Errorf("%s: kafka-go read %d records, want none", topic, got)
		}
	}

	markerFound := false
	for _, m := range msgs {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
			if bytes.Contains(x.Value, []byte(canary)) || strings.Contains(x.Key, canary) {
				t.Errorf("%s/%d@%d: header %s contains the canary", m.Topic, m.Partition, m.Offset, x.Key)
			}
		}
		if bytes.Contains(m.Key, []byte(canary)) {
			t.Errorf("%s/%d@%d: key contains the canary", m.Topic, m.Partition, m.Offset)
		}
		if bytes.Contains(m.Value, []byte(canary)) {
			t.Errorf("%s/%d@%d: value contains the canary", m.Topic, m.Partition, m.Offset)
		}
		markerFound = markerFound || bytes.Contains(m.Value, []byte(marker))
		_, stream, _ := bus.SplitTopic(ns, m.Topic)
		wantType := map[string][]events.Type{
			bus.StreamRequests: {events.TypeInferenceRequest},
			bus.StreamDLQ:      {events.TypeInferenceRequest},
			bus.StreamReplies:  {events.TypeInferenceChunk, events.TypeInferenceResult},
			bus.StreamAbuseLog: {events.TypeAbuseRecord},
		}[stream]
		if wantType == nil {
			continue
		}
		if !slices.ContainsFunc(wantType, func(t events.Type) bool {
			return h[bus.HeaderEventType] == t.Name && h[bus.HeaderEventVersion] == strconv.Itoa(t.Version)
		}) || h[bus.HeaderKeyID] == "" {
			t.Errorf("%s/%d@%d: headers as kafka-go decoded them: %v", m.Topic, m.Partition, m.Offset, h)
		}
		if stream == bus.StreamDLQ && h[bus.HeaderDLQError] != refused {
			t.Errorf("%s/%d@%d: dead-letter error %q, want %q", m.Topic, m.Partition, m.Offset, h[bus.HeaderDLQError], refused)
		}
	}
	if !markerFound {
		t.Errorf("kafka-go did not find the plain usage record's marker: the scan is blind")
	}

	// Stop everything, so the cluster writes all it holds, then scan its
	// files.
	if err := stopResponder(); err != nil {
		t.Fatal(err)
	}
	rq.Close()
	b.Close()
	if c.Fake == nil {
		t.Log("not an in-process cluster: its files are out of reach")
		return
	}
	c.Fake.Close()
	files, markerFiles := 0, 0
	err = filepath.WalkDir(dataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(raw, []byte(canary)) {
			t.Errorf("%s contains the canary", path)
		}
		if bytes.Contains(raw, []byte(marker)) {
			markerFiles++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if markerFiles == 0 {
		t.Errorf("none of the cluster's %d files holds the plain usage record's marker: the scan is blind", files)
	}
}

// readNamespace lists every partition of every topic of namespace ns with
// kafka-go and reads each from its first to its last offset. It returns
// the topics found and every record.
func readNamespace(t *testing.T, broker, ns string) (map[string]bool, []kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", broker)
	if err != nil {
		t.Fatalf("kafka-go: dialing %s: %v", broker, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	parts, err := conn.ReadPartitions()
	if err != nil {
		t.Fatalf("kafka-go: listing partitions: %v", err)
	}
	topics := map[string]bool{}
	var msgs []kafka.Message
	for _, p := range parts {
		if !strings.HasPrefix(p.Topic, ns+".") {
			continue
		}
		topics[p.Topic] = true
		msgs = append(msgs, readPartition(ctx, t, broker, p.Topic, p.ID)...)
	}
	return topics, msgs
}

func readPartition(ctx context.Context, t *testing.T, broker, topic string, partition int) []kafka.Message {
	t.Helper()
	conn, err := kafka.DialLeader(ctx, "tcp", broker, topic, partition)
	if err != nil {
		t.Fatalf("kafka-go: dialing the leader of %s/%d: %v", topic, partition, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	first, last, err := conn.ReadOffsets()
	if err != nil {
		t.Fatalf("kafka-go: offsets of %s/%d: %v", topic, partition, err)
	}
	if first >= last {
		return nil
	}
	if _, err := conn.Seek(first, kafka.SeekAbsolute); err != nil {
		t.Fatalf("kafka-go: seeking %s/%d to %d: %v", topic, partition, first, err)
	}
	var out []kafka.Message
	for next := first; next < last; {
		batch := conn.ReadBatch(1, 10<<20)
		read := 0
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			out = append(out, m)
			next = m.Offset + 1
			read++
		}
		if err := batch.Close(); err != nil {
			t.Fatalf("kafka-go: reading %s/%d at %d: %v", topic, partition, next, err)
		}
		if read == 0 {
			t.Fatalf("kafka-go: no progress reading %s/%d at %d of %d", topic, partition, next, last)
		}
	}
	return out
}
