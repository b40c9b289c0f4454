package stack

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestBrokerKeepsTopicsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	out := NewOutput(&bytes.Buffer{}, false)

	b, err := StartBroker("127.0.0.1:0", dir, out)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	func() {
		cl := newClient(t, addr)
		defer cl.Close()
		adm := kadm.NewClient(cl)
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, "terroir.eu.requests"); err != nil {
			t.Fatalf("creating topic: %v", err)
		}
		rec := &kgo.Record{Topic: "terroir.eu.requests", Key: []byte("req-1"), Value: []byte("kept")}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatalf("producing: %v", err)
		}
	}()
	b.Close()
	b.Close() // idempotent

	b2, err := StartBroker(addr, dir, out)
	if err != nil {
		t.Fatalf("restarting broker on %s: %v", addr, err)
	}
	defer b2.Close()
	cl := newClient(t, b2.Addr(), kgo.ConsumeTopics("terroir.eu.requests"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	if got := consumeOne(t, cl); string(got.Value) != "kept" {
		t.Errorf("record after restart = %q, want %q", got.Value, "kept")
	}
}

func TestBrokerDoesNotCreateTopics(t *testing.T) {
	t.Parallel()
	b, err := StartBroker("127.0.0.1:0", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl := newClient(t, b.Addr(), kgo.AllowAutoTopicCreation(), kgo.RecordRetries(1), kgo.RecordDeliveryTimeout(2*time.Second))
	defer cl.Close()
	err = cl.ProduceSync(t.Context(), &kgo.Record{Topic: "nobody.made.this", Value: []byte("x")}).FirstErr()
	if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, kgo.ErrRecordTimeout) {
		t.Errorf("producing to a missing topic: err = %v, want unknown topic or timeout", err)
	}
	topics, err := kadm.NewClient(cl).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has("nobody.made.this") {
		t.Error("broker created a topic on produce")
	}
}

func TestBrokerAddressInUse(t *testing.T) {
	t.Parallel()
	b, err := StartBroker("127.0.0.1:0", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b2, err := StartBroker(b.Addr(), t.TempDir(), nil); err == nil {
		b2.Close()
		t.Fatal("second broker on the same address started")
	}
}

func newClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatalf("creating Kafka client: %v", err)
	}
	return cl
}

func consumeOne(t *testing.T, cl *kgo.Client) *kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("no record within deadline: %v", err)
		}
		for _, e := range fs.Errors() {
			t.Logf("fetch error %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}
