package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
)

// ErrReplyClosed is returned by Next after the stream was closed by its
// owner.
var ErrReplyClosed = errors.New("reply stream closed")

// Requester sends requests and routes their replies back to the caller
// that is waiting. Each instance reads one partition of its geography's
// replies topic (chosen by hashing its instance ID) from its end, and the
// reply address it puts on every request names that topic, partition and
// instance. Instances that share a partition skip each other's replies, so
// a reply reaches exactly the instance, and the caller, that waits for it.
type Requester struct {
	b         *Bus
	geo       string
	topic     string
	partition int32
	address   string
	cl        *kgo.Client
	log       *zap.Logger

	mu      sync.Mutex
	waiting map[string]*ReplyStream

	done      chan struct{}
	closeOnce sync.Once
}

// NewRequester starts reading this instance's reply partition in geo.
func (b *Bus) NewRequester(ctx context.Context, geo string) (*Requester, error) {
	adm, err := b.Admin(geo)
	if err != nil {
		return nil, err
	}
	topic := b.Topic(geo, StreamReplies)
	// A topic provisioned a moment ago may not be in every broker's
	// metadata yet: look again for a while before giving up.
	var td kadm.TopicDetails
	for deadline := time.Now().Add(30 * time.Second); ; {
		td, err = adm.ListTopics(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("bus: describing %s: %w", topic, err)
		}
		if td.Has(topic) && td[topic].Err == nil && len(td[topic].Partitions) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bus: replies topic %s does not exist", topic)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: waiting for %s: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	p := ReplyPartition(b.instance, len(td[topic].Partitions))
	// Start exactly at the current end: replies to requests sent after
	// this point cannot be missed, older ones are not ours.
	ends, err := listEndOffsets(ctx, adm, topic)
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, p)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("bus: end offset of %s/%d unknown", topic, p)
	}
	cl, err := kgo.NewClient(b.clientOpts(geo,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(end.Offset)}}),
		kgo.FetchMaxWait(quietFetchWait),
	)...)
	if err != nil {
		return nil, fmt.Errorf("bus: reply consumer for %s: %w", topic, err)
	}
	r := &Requester{
		b: b, geo: geo, topic: topic, partition: p, cl: cl,
		address: topic + "/" + strconv.Itoa(int(p)) + "/" + b.instance,
		log:     b.log.Named("requester").With(zap.String("geo", geo)),
		waiting: map[string]*ReplyStream{}, done: make(chan struct{}),
	}
	go r.run()
	return r, nil
}

// Address is the reply address this requester puts on its requests.
func (r *Requester) Address() string { return r.address }

// Request registers a waiter for meta.RequestID, then publishes ev to
// stream in geo with this instance's reply address. Read the replies from
// the returned stream; Close it when giving up (a deadline or cancellation
// of ctx ends Next as well).
func (r *Requester) Request(ctx context.Context, geo, stream string, meta Meta, ev events.Event) (*ReplyStream, error) {
	if meta.RequestID == "" {
		return nil, errors.New("bus: a request needs a request ID")
	}
	s := &ReplyStream{r: r, id: meta.RequestID, notify: make(chan struct{}, 1)}
	r.mu.Lock()
	if _, dup := r.waiting[meta.RequestID]; dup {
		r.mu.Unlock()
		return nil, fmt.Errorf("bus: request %s is already waiting", meta.RequestID)
	}
	r.waiting[meta.RequestID] = s
	r.mu.Unlock()
	meta.ReplyTo = r.address
	if dl, ok := ctx.Deadline(); ok {
		meta.ReplyBy = dl
	}
	if err := r.b.Publish(ctx, geo, stream, meta, ev); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (r *Requester) run() {
	defer close(r.done)
	for {
		fetches := r.cl.PollFetches(context.Background())
		if fetches.IsClientClosed() {
			r.closeAll()
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			r.log.Warn("reply fetch error", zap.String("topic", topic), zap.Int32("partition", p), zap.Error(err))
		})
		fetches.EachRecord(func(rec *kgo.Record) {
			d := r.b.delivery(rec)
			if d.Meta.ReplyTo != r.address {
				return // another instance's reply on a shared partition
			}
			r.mu.Lock()
			s := r.waiting[d.Meta.RequestID]
			r.mu.Unlock()
			if s == nil {
				r.log.Debug("reply without a waiter", zap.String("request_id", d.Meta.RequestID))
				return
			}
			s.push(d)
		})
	}
}

func (r *Requester) forget(id string, s *ReplyStream) {
	r.mu.Lock()
	if r.waiting[id] == s {
		delete(r.waiting, id)
	}
	r.mu.Unlock()
}

func (r *Requester) closeAll() {
	r.mu.Lock()
	all := r.waiting
	r.waiting = map[string]*ReplyStream{}
	r.mu.Unlock()
	for _, s := range all {
		s.fail(ErrReplyClosed)
	}
}

// Waiting returns how many requests wait for replies.
func (r *Requester) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting)
}

// Close stops reading replies; waiting streams end with ErrReplyClosed.
// It is idempotent.
func (r *Requester) Close() {
	r.closeOnce.Do(func() {
		r.cl.Close()
		<-r.done
	})
}

// ReplyStream is the sequence of replies to one request: a single final
// record, or chunk records ending in a final one. Records are handed out
// in sequence order even when they arrive out of it (several services may
// reply to one request, say a filter's verdict and then the answer);
// duplicates (at-least-once delivery) are dropped by sequence number.
type ReplyStream struct {
	r      *Requester
	id     string
	notify chan struct{}

	mu      sync.Mutex
	queue   []*Delivery
	ahead   map[int]*Delivery // arrived before their predecessors
	nextSeq int
	ended   bool // the final record was queued
	err     error
	closed  bool
}

// maxAhead bounds how many out-of-order records a stream holds.
const maxAhead = 4096

func (s *ReplyStream) push(d *Delivery) {
	s.mu.Lock()
	if s.closed || s.ended || d.Meta.Seq < s.nextSeq {
		s.mu.Unlock()
		return
	}
	if d.Meta.Seq > s.nextSeq {
		if s.ahead == nil {
			s.ahead = map[int]*Delivery{}
		}
		if _, dup := s.ahead[d.Meta.Seq]; !dup && len(s.ahead) < maxAhead {
			s.ahead[d.Meta.Seq] = d
		}
		s.mu.Unlock()
		return
	}
	for d != nil && !s.ended {
		s.nextSeq = d.Meta.Seq + 1
		s.queue = append(s.queue, d)
		if d.Meta.Final {
			s.ended = true
			s.ahead = nil
			s.r.forget(s.id, s)
			break
		}
		next := s.ahead[s.nextSeq]
		delete(s.ahead, s.nextSeq)
		d = next
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *ReplyStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Next returns the next reply in order. After the final reply it returns
// io.EOF; when ctx ends first, ctx's error.
func (s *ReplyStream) Next(ctx context.Context) (*Delivery, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			d := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return d, nil
		}
		if s.ended {
			s.mu.Unlock()
			return nil, io.EOF
		}
		if s.err != nil || s.closed {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = ErrReplyClosed
			}
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for reply to %s: %w", s.id, ctx.Err())
		}
	}
}

// Close stops waiting; later replies to the request are dropped.
func (s *ReplyStream) Close() {
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	s.r.forget(s.id, s)
}

// Reply sends one reply to the request d: seq numbers the records of a
// stream from 0, and final marks the last (a single reply is seq 0, final).
// The reply goes to the topic and partition named in the request's reply
// address, in whatever geography that is, and is sealed as its event type
// requires.
func (b *Bus) Reply(ctx context.Context, req *Delivery, seq int, final bool, ev events.Event) error {
	return b.ReplyAsync(ctx, req, seq, final, ev).Wait()
}

// ReplyAsync is Reply without the wait, as PublishAsync is to Publish.
func (b *Bus) ReplyAsync(ctx context.Context, req *Delivery, seq int, final bool, ev events.Event) *Sending {
	topic, partition, err := parseReplyTo(req.Meta.ReplyTo)
	if err != nil {
		return sendFailed(Permanent(fmt.Errorf("replying to %s: %w", req.Meta.RequestID, err)))
	}
	geo, stream, ok := SplitTopic(b.ns, topic)
	switch {
	case ok && stream == StreamReplies && partition >= 0:
	case ok && stream == StreamBatchReplies && partition == AnyPartition:
	default:
		return sendFailed(Permanent(fmt.Errorf("replying to %s: %q is not a replies topic", req.Meta.RequestID, topic)))
	}
	meta := req.Meta
	meta.Key, meta.Seq, meta.Final = "", seq, final
	rec, err := b.record(ctx, geo, topic, meta, ev)
	if err != nil {
		return sendFailed(err)
	}
	rec.Partition = partition // ignored by the key partitioner of batch-replies
	return b.produceAsync(ctx, geo, stream, rec)
}

// AnyPartition in a reply address leaves the partition to the record's
// key: replies read by a consumer group (batch-replies) rather than by
// one waiting instance.
const AnyPartition int32 = -1

// BatchReplyAddress is the reply address of a batch line: the
// batch-replies stream of the batch's home geography, read by the batch
// service as a group.
func BatchReplyAddress(namespace, homeGeo string) string {
	return TopicName(namespace, homeGeo, StreamBatchReplies) + "/-1/batch"
}

func parseReplyTo(addr string) (string, int32, error) {
	parts := strings.SplitN(addr, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return "", 0, fmt.Errorf("malformed reply address %q", addr)
	}
	p, err := strconv.Atoi(parts[1])
	if err != nil || p < int(AnyPartition) {
		return "", 0, fmt.Errorf("malformed reply address %q", addr)
	}
	return parts[0], int32(p), nil
}
