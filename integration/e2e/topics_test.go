package e2e

import (
	"context"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// allRecords reads every record of every topic of the stack's namespace,
// from start to current end, with a client of its own.
func (s *stack) allRecords() []*kgo.Record {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	brokers := strings.Split(s.env["TERROIR_KAFKA_BROKERS"], ",")
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	td, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for name := range td {
		if strings.HasPrefix(name, s.env["TERROIR_KAFKA_NAMESPACE"]+".") {
			topics = append(topics, name)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for int64(len(out)) < want {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), want)
		}
		out = append(out, f.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// geoOf returns the geography of a topic name "<ns>.<geo>.<stream>".
func geoOf(topic string) (geo, stream string) {
	parts := strings.SplitN(topic, ".", 3)
	if len(parts) < 3 {
		return "", ""
	}
	return parts[1], parts[2]
}
