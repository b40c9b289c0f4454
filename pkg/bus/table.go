package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Table materialises a compacted stream of one geography: it reads the
// topic from its start and calls apply for every record in offset order per
// partition (a tombstone arrives with a nil Record.Value). Sync waits until
// everything written before the call has been applied, which gives readers
// their own writes.
type Table struct {
	b     *Bus
	geo   string
	topic string
	apply func(*Delivery)
	cl    *kgo.Client

	mu      sync.Mutex
	next    map[int32]int64 // next offset to apply, per partition
	changed chan struct{}   // closed and replaced on every advance

	done      chan struct{}
	closeOnce sync.Once
}

// quietFetchWait is how long the broker holds a table's or a requester's
// fetch while nothing arrives. A record ends the wait at once, so it costs
// no latency; it only sets how often an idle reader asks again. These
// readers never pause a partition, whose resumption would wait out a
// fetch in flight, so they can wait longer than a group consumer.
const quietFetchWait = 5 * time.Second

// NewTable starts materialising stream of geo.
func (b *Bus) NewTable(geo, stream string, apply func(*Delivery)) (*Table, error) {
	if _, ok := b.prod[geo]; !ok {
		return nil, fmt.Errorf("bus: table %s: not connected to geography %q", stream, geo)
	}
	t := &Table{b: b, geo: geo, topic: b.Topic(geo, stream), apply: apply,
		next: map[int32]int64{}, changed: make(chan struct{}), done: make(chan struct{})}
	cl, err := kgo.NewClient(b.clientOpts(geo,
		kgo.ConsumeTopics(t.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(quietFetchWait),
	)...)
	if err != nil {
		return nil, fmt.Errorf("bus: table %s: %w", t.topic, err)
	}
	t.cl = cl
	go t.run()
	return t, nil
}

func (t *Table) run() {
	defer close(t.done)
	for {
		fetches := t.cl.PollFetches(context.Background())
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.b.log.Warn("table fetch error", zap.String("topic", topic), zap.Int32("partition", p), zap.Error(err))
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				t.apply(t.b.delivery(r))
			}
			t.mu.Lock()
			if n := len(p.Records); n > 0 {
				t.next[p.Partition] = p.Records[n-1].Offset + 1
			}
			close(t.changed)
			t.changed = make(chan struct{})
			t.mu.Unlock()
		})
	}
}

// Sync waits until every record written to the topic before the call has
// been applied.
func (t *Table) Sync(ctx context.Context) error {
	ends, err := listEndOffsets(ctx, t.b.adm[t.geo], t.topic)
	if err != nil {
		return fmt.Errorf("table %s: %w", t.topic, err)
	}
	for {
		t.mu.Lock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > t.next[o.Partition] {
				behind = true
			}
		})
		ch := t.changed
		t.mu.Unlock()
		if !behind {
			return nil
		}
		select {
		case <-ch:
		case <-t.done:
			return errors.New("table " + t.topic + " is closed")
		case <-ctx.Done():
			return fmt.Errorf("table %s: catching up: %w", t.topic, ctx.Err())
		}
	}
}

// WaitFor waits until the record at offset of partition has been applied,
// which gives a writer its own write without asking the cluster for its
// end offsets.
func (t *Table) WaitFor(ctx context.Context, partition int32, offset int64) error {
	for {
		t.mu.Lock()
		applied := t.next[partition] > offset
		ch := t.changed
		t.mu.Unlock()
		if applied {
			return nil
		}
		select {
		case <-ch:
		case <-t.done:
			return errors.New("table " + t.topic + " is closed")
		case <-ctx.Done():
			return fmt.Errorf("table %s: waiting for offset %d of partition %d: %w", t.topic, offset, partition, ctx.Err())
		}
	}
}

// Close stops materialising. It is idempotent.
func (t *Table) Close() {
	t.closeOnce.Do(func() {
		t.cl.Close()
		<-t.done
	})
}

// listEndOffsets lists the end offsets of topic, retrying while the
// cluster does not know the topic yet (just after it was created).
func listEndOffsets(ctx context.Context, adm *kadm.Client, topic string) (kadm.ListedOffsets, error) {
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			return ends, nil
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, kerr.LeaderNotAvailable) && !errors.Is(err, kerr.NotLeaderForPartition) {
			return nil, fmt.Errorf("listing end offsets: %w", err)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return nil, fmt.Errorf("listing end offsets: %w", err)
		}
	}
}
