package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Dead-letter headers, added to the original record's headers.
const (
	HeaderDLQError     = "terroir-dlq-error"
	HeaderDLQTopic     = "terroir-dlq-topic"
	HeaderDLQPartition = "terroir-dlq-partition"
	HeaderDLQOffset    = "terroir-dlq-offset"
	HeaderDLQAttempts  = "terroir-dlq-attempts"
	HeaderDLQGroup     = "terroir-dlq-group"
)

// Handler handles one record. It must be idempotent by request ID:
// delivery is at least once. Returning an error retries the record;
// an error wrapped with Permanent sends it to the dead-letter topic at once.
// Errors must never contain prompt or output text: they travel in headers.
type Handler func(ctx context.Context, d *Delivery) error

// ConsumerConfig configures a consumer group.
type ConsumerConfig struct {
	// Group is the consumer group, e.g. "terroir-contentsafety".
	Group string
	// Streams to consume in each geography.
	Streams []string
	// Geos to consume; default every geography of the bus.
	Geos []string
	// Handler is called for each record, partitions in parallel, records
	// of one partition in order.
	Handler Handler
	// MaxAttempts bounds the tries of a failing record before it goes to
	// the dead-letter topic; default 5.
	MaxAttempts int
	// Backoff is the first retry delay, doubled each try up to 5 s;
	// default 50 ms.
	Backoff time.Duration
	// CommitInterval is how often handled offsets are committed; they are
	// also committed when partitions are revoked and on shutdown.
	// Default 1 s.
	CommitInterval time.Duration
	// DrainTimeout bounds how long in-flight records may take to finish
	// after Run's context ends; default 10 s.
	DrainTimeout time.Duration
	// MaxPollRecords bounds the records taken per poll; default 500.
	MaxPollRecords int
	// StartAtEnd makes a group with no committed offsets start at the end
	// of its topics rather than the start.
	StartAtEnd bool
}

// Consumer runs a consumer group over one or more geographies.
type Consumer struct {
	b       *Bus
	cfg     ConsumerConfig
	log     *zap.Logger
	clients map[string]*kgo.Client

	closeOnce sync.Once
}

// NewConsumer joins cfg.Group in every geography of cfg.Geos.
func (b *Bus) NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Group == "" || len(cfg.Streams) == 0 || cfg.Handler == nil {
		return nil, errors.New("bus: a consumer needs a group, streams and a handler")
	}
	if len(cfg.Geos) == 0 {
		cfg.Geos = b.Geos()
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 50 * time.Millisecond
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 500
	}
	c := &Consumer{b: b, cfg: cfg, log: b.log.Named("consumer").With(zap.String("group", cfg.Group)), clients: map[string]*kgo.Client{}}
	for _, g := range cfg.Geos {
		if _, ok := b.prod[g]; !ok {
			c.Close()
			return nil, fmt.Errorf("bus: consumer %s: not connected to geography %q", cfg.Group, g)
		}
		topics := make([]string, len(cfg.Streams))
		for i, s := range cfg.Streams {
			topics[i] = b.Topic(g, s)
		}
		reset := kgo.NewOffset().AtStart()
		if cfg.StartAtEnd {
			reset = kgo.NewOffset().AtEnd()
		}
		cl, err := kgo.NewClient(b.clientOpts(g,
			kgo.ConsumerGroup(cfg.Group),
			kgo.ConsumeTopics(topics...),
			kgo.ConsumeResetOffset(reset),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			// Offsets are marked only after a record is handled, and
			// rebalances wait for the current poll to be fully handled,
			// so a revoked partition's marks are complete when committed.
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(cfg.CommitInterval),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
				if err := cl.CommitMarkedOffsets(ctx); err != nil {
					c.log.Warn("committing on revoke failed", zap.String("geo", g), zap.Error(err))
				}
			}),
			kgo.FetchMaxWait(time.Second),
		)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("bus: consumer %s in %s: %w", cfg.Group, g, err)
		}
		c.clients[g] = cl
	}
	return c, nil
}

// Run consumes until ctx ends, then drains: records already polled are
// handled (bounded by DrainTimeout), their offsets committed, and the
// group left. It returns nil after a clean drain.
func (c *Consumer) Run(ctx context.Context) error {
	// Handlers get a context that outlives ctx by the drain timeout, so
	// a SIGTERM lets in-flight work finish instead of failing it.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.cfg.DrainTimeout, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stop()

	var wg sync.WaitGroup
	errs := make(chan error, len(c.clients))
	for g, cl := range c.clients {
		wg.Go(func() {
			if err := c.loop(ctx, workCtx, g, cl); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	c.Close()
	return errors.Join(all...)
}

func (c *Consumer) loop(ctx, workCtx context.Context, geo string, cl *kgo.Client) error {
	for {
		fetches := cl.PollRecords(ctx, c.cfg.MaxPollRecords)
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch error", zap.String("geo", geo), zap.String("topic", topic), zap.Int32("partition", p), zap.Error(err))
			}
		})
		var wg sync.WaitGroup
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			wg.Go(func() { c.partition(workCtx, cl, p.Records) })
		})
		wg.Wait()
		if ctx.Err() != nil {
			commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := cl.CommitMarkedOffsets(commitCtx)
			cancel()
			// Leaving the group is a rebalance: it must not wait on a poll.
			cl.AllowRebalance()
			if err != nil {
				return fmt.Errorf("consumer %s in %s: committing on shutdown: %w", c.cfg.Group, geo, err)
			}
			return nil
		}
		cl.AllowRebalance()
	}
}

// keyWorkers bounds how many records of one partition are handled at
// once.
const keyWorkers = 32

// partition handles one partition's records of a poll. Records with
// different keys (different requests) are handled concurrently; records
// with the same key keep their order. Offsets are marked in order, up to
// the first record that was not settled, which is redelivered after a
// restart.
func (c *Consumer) partition(ctx context.Context, cl *kgo.Client, records []*kgo.Record) {
	if len(records) == 1 {
		if c.handle(ctx, records[0]) {
			cl.MarkCommitRecords(records[0])
		}
		return
	}
	settled := make([]bool, len(records))
	byKey := map[string][]int{}
	var order []string
	for i, r := range records {
		k := string(r.Key)
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	sem := make(chan struct{}, keyWorkers)
	var wg sync.WaitGroup
	for _, k := range order {
		idx := byKey[k]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, i := range idx {
				if !c.handle(ctx, records[i]) {
					return // the rest of this key waits for redelivery too
				}
				settled[i] = true
			}
		})
	}
	wg.Wait()
	for i, r := range records {
		if !settled[i] {
			return
		}
		cl.MarkCommitRecords(r)
	}
}

// handle runs the handler with bounded retries and dead-letters the record
// when they are spent. It reports whether the record may be marked: false
// only when the work context ended before the record was settled.
func (c *Consumer) handle(ctx context.Context, r *kgo.Record) bool {
	d := c.b.delivery(r)
	start := time.Now()
	defer func() {
		c.b.metrics.handleSeconds.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Observe(time.Since(start).Seconds())
	}()
	var err error
	attempts := 0
	delay := c.cfg.Backoff
	for attempts < c.cfg.MaxAttempts {
		attempts++
		err = c.cfg.Handler(ctx, d)
		if err == nil {
			c.b.metrics.handled.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Inc()
			return true
		}
		c.b.metrics.handleErrors.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Inc()
		if ctx.Err() != nil {
			return false
		}
		if IsPermanent(err) {
			break
		}
		c.log.Debug("handler failed, retrying", zap.String("request_id", d.Meta.RequestID), zap.Int("attempt", attempts), zap.Error(err))
		if attempts < c.cfg.MaxAttempts && !sleepCtx(ctx, delay) {
			return false
		}
		delay = min(2*delay, 5*time.Second)
	}
	return c.deadLetter(ctx, d, attempts, err)
}

func (c *Consumer) deadLetter(ctx context.Context, d *Delivery, attempts int, cause error) bool {
	r := d.Record
	dl := &kgo.Record{
		Topic: c.b.Topic(d.Geo, StreamDLQ),
		Key:   r.Key,
		Value: r.Value, // still sealed: the dead-letter topic is no plaintext back door
		Headers: append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(cause.Error())},
			kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			kgo.RecordHeader{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(attempts))},
			kgo.RecordHeader{Key: HeaderDLQGroup, Value: []byte(c.cfg.Group)},
		),
	}
	delay := c.cfg.Backoff
	for {
		err := c.b.produce(ctx, d.Geo, StreamDLQ, dl)
		if err == nil {
			c.b.metrics.deadLettered.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Inc()
			c.log.Warn("record dead-lettered", zap.String("request_id", d.Meta.RequestID), zap.String("topic", r.Topic),
				zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Int("attempts", attempts), zap.Error(cause))
			return true
		}
		// Never mark a record that reached neither its handler nor the
		// dead-letter topic: it would be lost.
		c.log.Error("dead-lettering failed", zap.String("request_id", d.Meta.RequestID), zap.Error(err))
		if !sleepCtx(ctx, delay) {
			return false
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Close leaves the group and closes the clients. Leaving revokes the
// partitions, and the revoke callback commits what was marked, so records
// already handled are not redelivered. It is idempotent; Run calls it after
// draining.
func (c *Consumer) Close() {
	c.closeOnce.Do(func() {
		for _, cl := range c.clients {
			cl.Close()
		}
	})
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
