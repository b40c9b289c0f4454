package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/keys"
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
// delivery is at least once.
//
// Returning an error retries the record until the handler succeeds: an
// error is taken for a failure of infrastructure (Redis, the broker, a
// timeout) that heals, unless it is wrapped with Permanent, which sends the
// record to the dead-letter topic at once. Mark only what can never
// succeed (undecodable, invalid, sealed under a shredded key); an unmarked
// bug stalls its partition, visibly, rather than losing records. A panic
// dead-letters the record, its error naming the panic's type only. An
// error wrapping keys.ErrResourceGone (the resource was deleted, so
// nothing can be sealed for it) drops the record.
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
	// Handler is called for each record: records with the same key (one
	// request) in order, records of different keys concurrently.
	Handler Handler
	// Backoff is the first retry delay of a failing record, doubled each
	// try up to MaxBackoff; default 50 ms.
	Backoff time.Duration
	// MaxBackoff caps the retry delay; default 5 s.
	MaxBackoff time.Duration
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
	// Concurrency bounds how many records are handled at once, each of a
	// different key; default 256.
	Concurrency int
	// MaxInFlight bounds the records polled and not yet settled; polling
	// waits above it. Default 4 × Concurrency.
	MaxInFlight int
}

// Consumer runs a consumer group over one or more geographies.
//
// Polling never waits for handlers: each poll's records are queued by key
// and handled by a pool of workers, so a slow record (a long generation)
// holds up only the records with its key, and the next records are polled
// at once. A failing record is retried until it succeeds, with its
// partition paused meanwhile: an outage stops the partitions it touches,
// and they resume where they stopped. Offsets are marked in partition
// order, up to the first record not yet settled.
type Consumer struct {
	b       *Bus
	cfg     ConsumerConfig
	log     *zap.Logger
	clients map[string]*kgo.Client
	// runCtx ends when Run's context does: retries stop, and the records
	// they hold go to the partitions' next owner.
	runCtx context.Context
	// paused counts, per partition, the records retrying in it; the
	// partition is paused while the count is above zero.
	paused map[topicPartition]int

	mu       sync.Mutex
	cond     *sync.Cond // signalled whenever a record settles or a poll stops
	parts    map[topicPartition]*partTrack
	inflight int // records polled and not yet settled
	awaiting int // settled records whose sends (Delivery.After) are not yet written
	work     chan *keyQueue
	workers  int
	idle     atomic.Int32
	workCtx  context.Context

	closeOnce sync.Once
}

type topicPartition struct {
	topic     string
	partition int32
}

// partTrack is what the consumer holds of one assigned partition.
type partTrack struct {
	cl      *kgo.Client
	tp      topicPartition
	stop    chan struct{}        // closed when the partition is released: retries end
	pending []*pending           // polled and not yet marked, in offset order
	keys    map[string]*keyQueue // keys with records queued or running
	running int                  // records being handled now
	closing bool                 // being revoked: queued records are dropped
	gone    bool                 // revoked or lost: nothing more is marked

	// compactAt is the length of pending at which runs of settled
	// records behind a held one are collapsed (see Hold).
	compactAt int
}

type pending struct {
	r       *kgo.Record
	settled bool
	held    int // holds keeping the committed offset from passing this record
}

// keyQueue holds the records of one key, handled one at a time in order.
type keyQueue struct {
	pt   *partTrack
	key  string
	recs []*pending
	// failed is set when a record could not be settled before the work
	// context ended: the key's later records wait for redelivery too.
	failed bool
}

// NewConsumer joins cfg.Group in every geography of cfg.Geos.
func (b *Bus) NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Group == "" || len(cfg.Streams) == 0 || cfg.Handler == nil {
		return nil, errors.New("bus: a consumer needs a group, streams and a handler")
	}
	if len(cfg.Geos) == 0 {
		cfg.Geos = b.Geos()
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	cfg.Backoff = min(cfg.Backoff, cfg.MaxBackoff)
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 500
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4 * cfg.Concurrency
	}
	c := &Consumer{b: b, cfg: cfg, log: b.log.Named("consumer").With(zap.String("group", cfg.Group)), clients: map[string]*kgo.Client{},
		parts: map[topicPartition]*partTrack{}, paused: map[topicPartition]int{}, work: make(chan *keyQueue, cfg.MaxInFlight)}
	c.cond = sync.NewCond(&c.mu)
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
		group := []kgo.Opt{kgo.ConsumerGroup(cfg.Group)}
		if st := b.cfg.SessionTimeout; st > 0 {
			group = append(group, kgo.SessionTimeout(st), kgo.HeartbeatInterval(min(3*time.Second, st/5)))
		}
		cl, err := kgo.NewClient(b.clientOpts(g, append(group,
			kgo.ConsumeTopics(topics...),
			kgo.ConsumeResetOffset(reset),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			// Offsets are marked only after a record is handled. A
			// rebalance cannot come between a poll and the queueing of
			// its records, and the revoke callback waits for the revoked
			// partitions' running records, so the marks it commits are
			// complete.
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(cfg.CommitInterval),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
				c.release(revoked, true)
				if err := cl.CommitMarkedOffsets(ctx); err != nil {
					c.log.Warn("committing on revoke failed", zap.String("geo", g), zap.Error(err))
				}
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
				c.release(lost, false)
			}),
			kgo.FetchMaxWait(time.Second),
		)...)...)
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
	c.mu.Lock()
	c.workCtx = workCtx
	c.runCtx = ctx
	c.mu.Unlock()
	// Waiters on cond must see the end of ctx and of the drain.
	wake := func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	}
	defer context.AfterFunc(ctx, wake)()
	defer context.AfterFunc(workCtx, wake)()

	var wg sync.WaitGroup
	for g, cl := range c.clients {
		wg.Go(func() { c.poll(ctx, g, cl) })
	}
	wg.Wait()

	// Drain: every polled record settles, or the drain timeout ends the
	// work context and the rest wait for redelivery.
	c.mu.Lock()
	for (c.inflight > 0 || c.awaiting > 0) && workCtx.Err() == nil {
		c.cond.Wait()
	}
	c.mu.Unlock()
	var all []error
	for g, cl := range c.clients {
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := cl.CommitMarkedOffsets(commitCtx); err != nil {
			all = append(all, fmt.Errorf("consumer %s in %s: committing on shutdown: %w", c.cfg.Group, g, err))
		}
		cancel()
	}
	c.Close()
	close(c.work)
	return errors.Join(all...)
}

// poll polls one geography's client until ctx ends and queues what it
// gets; it waits while MaxInFlight records are unsettled.
func (c *Consumer) poll(ctx context.Context, geo string, cl *kgo.Client) {
	for {
		c.mu.Lock()
		for c.inflight >= c.cfg.MaxInFlight && ctx.Err() == nil {
			c.cond.Wait()
		}
		room := min(c.cfg.MaxInFlight-c.inflight, c.cfg.MaxPollRecords)
		c.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		fetches := cl.PollRecords(ctx, room)
		if fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch error", zap.String("geo", geo), zap.String("topic", topic), zap.Int32("partition", p), zap.Error(err))
			}
		})
		c.queue(cl, fetches)
		// Rebalances were held off since the poll: the records are
		// queued against partitions this member still owns.
		cl.AllowRebalance()
	}
}

// queue puts a poll's records on their keys' queues and hands newly
// active keys to the workers.
func (c *Consumer) queue(cl *kgo.Client, fetches kgo.Fetches) {
	var ready []*keyQueue
	c.mu.Lock()
	fetches.EachRecord(func(r *kgo.Record) {
		tp := topicPartition{r.Topic, r.Partition}
		pt := c.parts[tp]
		if pt == nil {
			pt = &partTrack{cl: cl, tp: tp, stop: make(chan struct{}), keys: map[string]*keyQueue{}}
			c.parts[tp] = pt
		}
		p := &pending{r: r}
		pt.pending = append(pt.pending, p)
		k := string(r.Key)
		kq := pt.keys[k]
		if kq == nil {
			kq = &keyQueue{pt: pt, key: k}
			pt.keys[k] = kq
			ready = append(ready, kq)
		}
		kq.recs = append(kq.recs, p)
		c.inflight++
	})
	spawn := 0
	if need := len(ready) - int(c.idle.Load()); need > 0 {
		spawn = min(need, c.cfg.Concurrency-c.workers)
		c.workers += spawn
	}
	workCtx := c.workCtx
	c.mu.Unlock()
	for range spawn {
		go c.worker(workCtx)
	}
	for _, kq := range ready {
		c.work <- kq // never blocks: at most MaxInFlight keys are queued
	}
}

// worker handles queued keys, each until its queue is empty.
func (c *Consumer) worker(ctx context.Context) {
	for {
		c.idle.Add(1)
		kq, ok := <-c.work
		c.idle.Add(-1)
		if !ok {
			return
		}
		c.drainKey(ctx, kq)
	}
}

func (c *Consumer) drainKey(ctx context.Context, kq *keyQueue) {
	pt := kq.pt
	for {
		c.mu.Lock()
		if len(kq.recs) == 0 {
			delete(pt.keys, kq.key)
			c.mu.Unlock()
			return
		}
		p := kq.recs[0]
		kq.recs = kq.recs[1:]
		run := !pt.closing && !pt.gone && !kq.failed && ctx.Err() == nil
		if run {
			pt.running++
		}
		c.mu.Unlock()

		settled := run && c.handle(ctx, pt, p.r)

		c.mu.Lock()
		if run {
			pt.running--
		}
		if settled {
			p.settled = true
			c.advance(pt)
		} else if run {
			kq.failed = true
		}
		c.inflight--
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// advance marks the partition's settled prefix for committing. c.mu is
// held.
func (c *Consumer) advance(pt *partTrack) {
	n := 0
	for n < len(pt.pending) && pt.pending[n].settled && pt.pending[n].held == 0 {
		n++
	}
	if n == 0 {
		compact(pt)
		return
	}
	if !pt.gone {
		pt.cl.MarkCommitRecords(pt.pending[n-1].r)
	}
	clear(pt.pending[:n])
	pt.pending = pt.pending[n:]
}

// release lets go of revoked or lost partitions. For a revocation it
// first waits (up to DrainTimeout) for their running records, so what
// they settle is marked and committed with the revocation; records still
// queued are dropped and go to the partitions' next owner.
func (c *Consumer) release(parts map[string][]int32, wait bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var tracks []*partTrack
	for topic, ps := range parts {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			if pt := c.parts[tp]; pt != nil {
				pt.closing = true
				close(pt.stop)
				tracks = append(tracks, pt)
				delete(c.parts, tp)
			}
		}
	}
	if wait {
		timedOut := false
		t := time.AfterFunc(c.cfg.DrainTimeout, func() {
			c.mu.Lock()
			timedOut = true
			c.cond.Broadcast()
			c.mu.Unlock()
		})
		defer t.Stop()
		for _, pt := range tracks {
			for pt.running > 0 && !timedOut {
				c.cond.Wait()
			}
		}
	}
	for _, pt := range tracks {
		pt.gone = true
	}
}

// handle runs the handler until the record settles: it succeeds, or it
// fails permanently (or panics) and is dead-lettered. Any other failure is
// retried with backoff while the record's partition is paused. It reports
// whether the record may be marked: false when Run's context, the drain
// or the partition's ownership ended first, and the record is left for
// redelivery.
func (c *Consumer) handle(ctx context.Context, pt *partTrack, r *kgo.Record) bool {
	d := c.b.delivery(r)
	d.consumed = true
	start := time.Now()
	defer func() {
		c.b.metrics.handleSeconds.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Observe(time.Since(start).Seconds())
	}()
	c.mu.Lock()
	runCtx := c.runCtx
	c.mu.Unlock()
	attempts := 0
	delay := c.cfg.Backoff
	for {
		attempts++
		d.after = d.after[:0]
		err := c.call(ctx, d)
		if err == nil {
			c.b.metrics.handled.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Inc()
			if len(d.after) > 0 {
				c.await(pt, r, d.after)
			}
			return true
		}
		c.b.metrics.handleErrors.WithLabelValues(d.Geo, d.Stream, c.cfg.Group).Inc()
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, keys.ErrResourceGone) {
			// The resource was deleted while its work was in flight: the
			// work is owed to nobody, and nothing may be sealed for it.
			c.log.Info("record of a deleted resource dropped", zap.String("request_id", d.Meta.RequestID),
				zap.String("resource", d.Meta.Resource), zap.String("topic", d.Record.Topic), zap.Int64("offset", d.Record.Offset))
			return true
		}
		if IsPermanent(err) {
			return c.deadLetter(ctx, d, attempts, err)
		}
		if attempts == 1 {
			c.pause(pt)
			defer c.resume(pt)
		}
		// Every failure of a long outage would flood the log: the first
		// ones, then at doubling intervals.
		if attempts&(attempts-1) == 0 {
			c.log.Warn("handler failed, retrying with the partition paused", zap.String("request_id", d.Meta.RequestID),
				zap.String("topic", r.Topic), zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset),
				zap.Int("attempt", attempts), zap.Error(err))
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-runCtx.Done():
			// Shutting down: the record is not settled, so it is not
			// committed, and the group's next owner takes it up.
			t.Stop()
			return false
		case <-pt.stop:
			t.Stop()
			return false
		}
		delay = min(2*delay, c.cfg.MaxBackoff)
	}
}

// call runs the handler. A panic is turned into a permanent error naming
// only the panic's type: its value may quote the record.
func (c *Consumer) call(ctx context.Context, d *Delivery) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		kind := fmt.Sprintf("%T", v)
		if _, ok := v.(runtime.Error); ok {
			kind = "runtime.Error"
		}
		c.log.Error("handler panicked", zap.String("request_id", d.Meta.RequestID), zap.String("topic", d.Record.Topic),
			zap.Int32("partition", d.Record.Partition), zap.Int64("offset", d.Record.Offset),
			zap.String("panic", kind), zap.Stack("stack"))
		err = Permanent(errors.New("panic: " + kind))
	}()
	return c.cfg.Handler(ctx, d)
}

// await keeps the committed offset of r's partition from passing r until
// sends are written (see Delivery.After). Until then r counts as running
// in its partition, so a revocation waits for it as for a handler, and the
// drain of Run waits for it too.
func (c *Consumer) await(pt *partTrack, r *kgo.Record, sends []*Sending) {
	h := c.Hold(r)
	c.mu.Lock()
	pt.running++
	c.awaiting++
	c.mu.Unlock()
	var left atomic.Int32
	var lost atomic.Bool // a send given up: the hold stays, r is redone
	left.Store(int32(len(sends)))
	settled := func(written bool) {
		if !written {
			lost.Store(true)
		}
		if left.Add(-1) > 0 {
			return
		}
		if !lost.Load() {
			h.Release()
		}
		c.mu.Lock()
		pt.running--
		c.awaiting--
		c.cond.Broadcast()
		c.mu.Unlock()
	}
	for _, s := range sends {
		s.onDone(func() {
			if s.err == nil {
				settled(true)
				return
			}
			go c.resend(pt, s, settled)
		})
	}
}

// resend produces a failed send's record again, with backoff, until it
// is written (done(true)) or the consumer stops or loses the partition
// (done(false): the hold stays, and the record is handled again by
// whoever reads it next).
func (c *Consumer) resend(pt *partTrack, s *Sending, done func(written bool)) {
	c.mu.Lock()
	runCtx := c.runCtx
	c.mu.Unlock()
	delay := c.cfg.Backoff
	for attempt := 1; ; attempt++ {
		if attempt&(attempt-1) == 0 {
			c.log.Warn("a handled record's send failed, producing it again", zap.String("stream", s.stream),
				zap.String("geo", s.geo), zap.Int("attempt", attempt), zap.Error(s.err))
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-runCtx.Done():
			t.Stop()
			done(false)
			return
		case <-pt.stop:
			t.Stop()
			done(false)
			return
		}
		r := s.rec
		s = c.b.produceAsync(context.WithoutCancel(runCtx), s.geo, s.stream, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
		if s.Wait() == nil {
			done(true)
			return
		}
		delay = min(2*delay, c.cfg.MaxBackoff)
	}
}

// pause stops fetching pt's partition while one of its records retries;
// records already polled are still handled.
func (c *Consumer) pause(pt *partTrack) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused[pt.tp]++
	if c.paused[pt.tp] == 1 {
		pt.cl.PauseFetchPartitions(map[string][]int32{pt.tp.topic: {pt.tp.partition}})
		c.b.metrics.pausedPartitions.WithLabelValues(c.cfg.Group).Inc()
	}
}

// resume undoes pause once no record of the partition retries. Pausing
// outlives a rebalance in franz-go, so a released partition is resumed
// too: its next assignment must fetch.
func (c *Consumer) resume(pt *partTrack) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused[pt.tp]--
	if c.paused[pt.tp] > 0 {
		return
	}
	delete(c.paused, pt.tp)
	pt.cl.ResumeFetchPartitions(map[string][]int32{pt.tp.topic: {pt.tp.partition}})
	c.b.metrics.pausedPartitions.WithLabelValues(c.cfg.Group).Dec()
}

func (c *Consumer) deadLetter(ctx context.Context, d *Delivery, attempts int, cause error) bool {
	r := d.Record
	value := r.Value // still sealed: the dead-letter topic is no plaintext back door
	if d.Stream == StreamAbuseLog {
		// An abuse record must be gone 30 days after it was written; a
		// copy here would live the dead-letter retention from now. It
		// stays in the abuse log, which the headers point to.
		value = nil
	}
	dl := &kgo.Record{
		Topic: c.b.Topic(d.Geo, StreamDLQ),
		Key:   r.Key,
		Value: value,
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
		delay = min(2*delay, c.cfg.MaxBackoff)
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
