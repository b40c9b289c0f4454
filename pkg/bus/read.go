package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrNoRecord is returned by ReadAt when the offset holds no record: it
// was never written, has expired with the topic's retention, or is a
// transaction marker.
var ErrNoRecord = errors.New("bus: no record at that offset")

// Reading a record by its position is a point lookup: one fetch request to
// the partition's leader, with no consumer group and no fetch session. It
// serves indexes that point into a topic (the review store's index into
// the abuse log) and readers of short topics (the audit chain).

// leaders caches the leader broker and topic ID of each topic's
// partitions.
type leaders struct {
	mu sync.Mutex
	m  map[string]topicLeaders
}

type topicLeaders struct {
	id      [16]byte
	leaders map[int32]int32
}

func (b *Bus) leader(ctx context.Context, geo, topic string, partition int32, refresh bool) (int32, [16]byte, error) {
	b.lead.mu.Lock()
	tl, ok := b.lead.m[topic]
	b.lead.mu.Unlock()
	if ok && !refresh {
		if l, ok := tl.leaders[partition]; ok {
			return l, tl.id, nil
		}
	}
	adm, err := b.Admin(geo)
	if err != nil {
		return 0, [16]byte{}, err
	}
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return 0, [16]byte{}, fmt.Errorf("reading %s: metadata: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return 0, [16]byte{}, fmt.Errorf("reading %s: topic not found", topic)
	}
	tl = topicLeaders{id: td.ID, leaders: map[int32]int32{}}
	for p, pd := range td.Partitions {
		tl.leaders[p] = pd.Leader
	}
	b.lead.mu.Lock()
	if b.lead.m == nil {
		b.lead.m = map[string]topicLeaders{}
	}
	b.lead.m[topic] = tl
	b.lead.mu.Unlock()
	l, ok := tl.leaders[partition]
	if !ok {
		return 0, [16]byte{}, fmt.Errorf("reading %s: no partition %d", topic, partition)
	}
	return l, tl.id, nil
}

// fetch returns the committed records of partition from offset on, as
// many as one fetch of up to maxBytes brings, the offset to fetch next and
// the partition's high watermark.
func (b *Bus) fetch(ctx context.Context, geo, stream string, partition int32, offset int64, maxBytes int32) ([]*kgo.Record, int64, int64, error) {
	cl, ok := b.prod[geo]
	if !ok {
		return nil, 0, 0, fmt.Errorf("reading %s: not connected to geography %q", stream, geo)
	}
	topic := b.Topic(geo, stream)
	for attempt := 0; ; attempt++ {
		leader, id, err := b.leader(ctx, geo, topic, partition, attempt > 0)
		if err != nil {
			return nil, 0, 0, err
		}
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MinBytes = 1
		req.MaxBytes = maxBytes
		req.IsolationLevel = 1 // read committed
		req.SessionEpoch = -1  // no fetch session
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = partition
		rp.FetchOffset = offset
		rp.CurrentLeaderEpoch = -1
		rp.LogStartOffset = -1
		rp.PartitionMaxBytes = maxBytes
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			return nil, 0, 0, fmt.Errorf("reading %s/%d@%d: %w", topic, partition, offset, err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return nil, 0, 0, fmt.Errorf("reading %s/%d@%d: %w", topic, partition, offset, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, 0, 0, fmt.Errorf("reading %s/%d@%d: malformed fetch response", topic, partition, offset)
		}
		rpResp := &resp.Topics[0].Partitions[0]
		err = kerr.ErrorForCode(rpResp.ErrorCode)
		switch {
		case errors.Is(err, kerr.OffsetOutOfRange):
			return nil, offset, rpResp.HighWatermark, nil
		case (errors.Is(err, kerr.NotLeaderForPartition) || errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) ||
			errors.Is(err, kerr.FencedLeaderEpoch)) && attempt < 2:
			continue
		case err != nil:
			return nil, 0, 0, fmt.Errorf("reading %s/%d@%d: %w", topic, partition, offset, err)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offset, IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: partition},
			rpResp, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil {
			return nil, 0, 0, fmt.Errorf("reading %s/%d@%d: %w", topic, partition, offset, fp.Err)
		}
		return fp.Records, max(next, offset), rpResp.HighWatermark, nil
	}
}

// ReadAt returns the record at offset of partition of stream in geo, or
// ErrNoRecord. Its payload opens like any delivery's.
func (b *Bus) ReadAt(ctx context.Context, geo, stream string, partition int32, offset int64) (*Delivery, error) {
	// The broker always returns the whole batch holding the offset, however
	// small the limit: asking for one byte brings that batch and no more.
	recs, _, _, err := b.fetch(ctx, geo, stream, partition, offset, 1)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Offset == offset {
			return b.delivery(r), nil
		}
		if r.Offset > offset {
			break
		}
	}
	return nil, ErrNoRecord
}

// ReadFrom calls fn with every committed record of partition of stream
// in geo from offset up to the end the partition had when ReadFrom
// started, in order, and returns the offset after the last one read.
func (b *Bus) ReadFrom(ctx context.Context, geo, stream string, partition int32, offset int64, fn func(*Delivery) error) (int64, error) {
	end := int64(-1)
	for {
		recs, next, hwm, err := b.fetch(ctx, geo, stream, partition, offset, 4<<20)
		if err != nil {
			return offset, err
		}
		if end < 0 {
			end = hwm
		}
		for _, r := range recs {
			if r.Offset >= end {
				return end, nil
			}
			if err := fn(b.delivery(r)); err != nil {
				return r.Offset, err
			}
		}
		if next <= offset || next >= end {
			return min(max(next, offset), end), nil
		}
		offset = next
	}
}

// EndOffset returns the offset the next record of partition of stream in
// geo will get.
func (b *Bus) EndOffset(ctx context.Context, geo, stream string, partition int32) (int64, error) {
	adm, err := b.Admin(geo)
	if err != nil {
		return 0, err
	}
	topic := b.Topic(geo, stream)
	offs, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("end offset of %s: %w", topic, err)
	}
	o, ok := offs.Lookup(topic, partition)
	if !ok {
		return 0, fmt.Errorf("end offset of %s: no partition %d", topic, partition)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("end offset of %s/%d: %w", topic, partition, o.Err)
	}
	return o.Offset, nil
}
