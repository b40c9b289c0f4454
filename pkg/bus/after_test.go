package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestAfterCommitsOnceTheSideRecordIsWritten: a handler hands its side
// record to Delivery.After and returns. While the broker refuses the side
// record (a non-retriable error, so the producer gives up on it), the
// handled record's offset is not committed; the consumer produces the side
// record again, and once it is written the commit passes the record.
func TestAfterCommitsOnceTheSideRecordIsWritten(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	if c.Fake == nil {
		t.Skip("fault injection needs the in-process kfake cluster: TERROIR_KAFKA_BROKERS names an external broker, whose produce requests cannot be refused on cue")
	}
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	usageTopic := b.Topic("eu", bus.StreamUsage)
	adm, err := b.Admin("eu")
	if err != nil {
		t.Fatal(err)
	}
	details, err := adm.ListTopics(t.Context(), usageTopic)
	if err != nil {
		t.Fatal(err)
	}
	usageID := details[usageTopic].ID // produce requests name topics by ID from v13
	var refuse atomic.Bool
	var refused atomic.Int32
	refuse.Store(true)
	c.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !refuse.Load() || len(pr.Topics) != 1 || (pr.Topics[0].Topic != usageTopic && pr.Topics[0].TopicID != usageID) {
			return nil, nil, false
		}
		refused.Add(1)
		return produceError(pr, kerr.InvalidRecord), nil, true
	})

	meta, ev := request("after-1", "acme", "eu", "hello")
	if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	const group = "after"
	consume(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests}, CommitInterval: 100 * time.Millisecond,
		Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			handled.Add(1)
			return d.After(b.PublishAsync(ctx, "eu", bus.StreamUsage, bus.Meta{Key: d.Meta.RequestID},
				events.UsageRecord{RequestID: d.Meta.RequestID, Resource: "acme", TotalTokens: 3, RecordedAt: time.Now().UTC()}))
		}})
	committed := func() int64 {
		offs, err := adm.FetchOffsets(t.Context(), group)
		if err != nil {
			return -1
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == b.Topic("eu", bus.StreamRequests) && o.Err == nil && o.At > 0 {
				sum += o.At
			}
		})
		return sum
	}
	waitFor(t, 10*time.Second, "the side record to be refused twice", func() bool { return refused.Load() >= 2 })
	time.Sleep(500 * time.Millisecond) // several commit intervals
	if got := committed(); got != 0 {
		t.Fatalf("committed %d records of requests while the handled record's side record was unwritten", got)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("handler ran %d times: a failed side record is produced again, the handler is not rerun", n)
	}
	refuse.Store(false)
	waitFor(t, 10*time.Second, "the commit to pass the record", func() bool { return committed() == 1 })
	if got := readTopic(t, c.Brokers, usageTopic); len(got) != 1 {
		t.Fatalf("%d usage records written, want 1", len(got))
	}
}
