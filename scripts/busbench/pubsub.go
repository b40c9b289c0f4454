package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// tracker follows a numbered set of records or requests: when each was
// sent, when it arrived, and when all of them have.
type tracker struct {
	base    time.Time      // monotonic origin of sent and arrived
	sent    []atomic.Int64 // nanoseconds since base
	arrived []atomic.Int64 // nanoseconds since base; 0 until it arrives
	count   atomic.Int64   // distinct arrivals
	all     chan struct{}  // closed when every one has arrived
	once    sync.Once
}

func newTracker(n int) *tracker {
	return &tracker{base: time.Now(), sent: make([]atomic.Int64, n), arrived: make([]atomic.Int64, n), all: make(chan struct{})}
}

func (t *tracker) now() int64 { return int64(time.Since(t.base)) + 1 }

// arrive records the arrival of i; a redelivery counts once.
func (t *tracker) arrive(i int) {
	if i < 0 || i >= len(t.arrived) || !t.arrived[i].CompareAndSwap(0, t.now()) {
		return
	}
	if t.count.Add(1) == int64(len(t.arrived)) {
		t.once.Do(func() { close(t.all) })
	}
}

// wait blocks until every one has arrived, ctx ends or timeout passes.
func (t *tracker) wait(ctx context.Context, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.all:
		return nil
	case <-timer.C:
		return fmt.Errorf("only %d of %d arrived within %s", t.count.Load(), len(t.arrived), timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// requestID names record i of a phase ("warm" or "rec"); index parses it.
func requestID(phase string, i int) string { return phase + "-" + strconv.Itoa(i) }

func index(phase, id string) int {
	s, ok := strings.CutPrefix(id, phase+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return i
}

func (e *env) request(id string) (bus.Meta, events.InferenceRequest) {
	meta := bus.Meta{RequestID: id, Resource: resource, HomeGeo: geo, Deployment: "bench-gpt"}
	ev := events.InferenceRequest{
		RequestID: id, Resource: resource, HomeGeo: geo, ProcessingGeo: geo, Deployment: "bench-gpt",
		SKU: events.SKUStandard, Model: "bench", Operation: events.OperationChatCompletions,
		APIFlavor: events.APIFlavorOpenAI, Body: e.body, CreatedAt: time.Now().UTC(),
	}
	return meta, ev
}

// benchPubSub publishes sealed inference requests from many goroutines to
// a consumer group on another bus and measures publish-to-decoded latency
// and throughput.
func benchPubSub(ctx context.Context, e *env) ([]bench.Row, error) {
	cfg := e.cfg
	warm, meas := newTracker(200), newTracker(cfg.records)
	var sealedBytes atomic.Int64
	var handleErrs atomic.Int64
	handler := func(ctx context.Context, d *bus.Delivery) error {
		var req events.InferenceRequest
		if err := d.Decode(ctx, &req); err != nil {
			handleErrs.Add(1)
			return err
		}
		sealedBytes.Store(int64(len(d.Record.Value)))
		if i := index("rec", req.RequestID); i >= 0 {
			meas.arrive(i)
		} else {
			warm.arrive(index("warm", req.RequestID))
		}
		return nil
	}
	cons, err := e.back.NewConsumer(bus.ConsumerConfig{
		Group: e.ns + "-pubsub", Streams: []string{bus.StreamRequests}, Geos: []string{geo}, Handler: handler,
	})
	if err != nil {
		return nil, err
	}
	stop := runConsumer(ctx, cons)
	defer stop()

	// Warm up: the group joins, both buses learn the data key.
	if _, err := e.publishAll(ctx, warm, "warm", 8); err != nil {
		return nil, fmt.Errorf("warming up: %w", err)
	}
	if err := warm.wait(ctx, 60*time.Second); err != nil {
		return nil, fmt.Errorf("warming up: %w", err)
	}

	pubLat, err := e.publishAll(ctx, meas, "rec", cfg.publishers)
	if err != nil {
		return nil, err
	}
	if err := meas.wait(ctx, 120*time.Second); err != nil {
		return nil, fmt.Errorf("consuming: %w", err)
	}
	var e2e bench.Hist
	var first, lastArrived int64 = 1 << 62, 0
	for i := range meas.sent {
		s, a := meas.sent[i].Load(), meas.arrived[i].Load()
		e2e = append(e2e, time.Duration(a-s))
		first, lastArrived = min(first, s), max(lastArrived, a)
	}
	n := len(meas.sent)
	consumeRate := float64(n) / time.Duration(lastArrived-first).Seconds()
	var lastAcked int64
	for i := range pubLat {
		lastAcked = max(lastAcked, meas.sent[i].Load()+int64(pubLat[i]))
	}
	publishRate := float64(n) / time.Duration(lastAcked-first).Seconds()

	size := fmt.Sprintf("%d B body, %d B sealed value", cfg.bodyBytes, sealedBytes.Load())
	r1 := bench.LatencyRow("produce→consume 1 KB sealed", e2e)
	r1.Value = fmt.Sprintf("%.0f rec/s", consumeRate)
	r1.Errors = int(handleErrs.Load())
	r1.Comment = fmt.Sprintf("%d records from %d concurrent publishers to a consumer group on another bus decoding them (%s); latency from Publish call to decoded in the handler; rate = records / (last decoded − first publish)", n, cfg.publishers, size)
	r2 := bench.LatencyRow("publish 1 KB sealed (acked)", pubLat)
	r2.Value = fmt.Sprintf("%.0f rec/s", publishRate)
	r2.Comment = "time of the Publish call (seal + produce, acks=all) under the same load; rate = records / (last ack − first publish)"
	return []bench.Row{r1, r2}, nil
}

// publishAll publishes every record of t from the given number of
// goroutines and returns the latency of each Publish call, by index.
func (e *env) publishAll(ctx context.Context, t *tracker, phase string, workers int) (bench.Hist, error) {
	lat := make(bench.Hist, len(t.sent))
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(t.sent) || ctx.Err() != nil {
					return
				}
				meta, ev := e.request(requestID(phase, i))
				start := t.now()
				t.sent[i].Store(start)
				if err := e.front.Publish(ctx, geo, bus.StreamRequests, meta, ev); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Duration(t.now() - start)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("publishing: %w", firstErr)
	}
	return lat, ctx.Err()
}

// runConsumer runs c until the returned stop is called; stop waits for it
// to drain.
func runConsumer(ctx context.Context, c *bus.Consumer) (stop func()) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(cctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
