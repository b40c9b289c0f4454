package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/redistest"
)

// TestPoisonRecordIsDeadLettered publishes a record its handler marks as
// never able to succeed, then good records behind it on the same
// partition. The failing record is tried once, lands on the dead-letter
// topic unchanged (still sealed) with the failure in its headers, and the
// partition moves on to the records behind it.
func TestPoisonRecordIsDeadLettered(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		fail         func(id string) error
		wantAttempts int
	}{
		{"permanent error dead-lettered at once", func(id string) error {
			return bus.Permanent(fmt.Errorf("request %s can never succeed", id))
		}, 1},
		{"permanent error wrapped again", func(id string) error {
			return fmt.Errorf("handling: %w", bus.Permanent(fmt.Errorf("request %s can never succeed", id)))
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := bustest.New(t)
			b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
			const (
				group  = "poison"
				poison = "poison-0"
			)
			goods := []string{"good-1", "good-2", "good-3", "good-4", "good-5"}
			failure := tc.fail(poison)

			var (
				mu    sync.Mutex
				calls = map[string]int{}
				order []string
			)
			consume(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests},
				Backoff: 5 * time.Millisecond,
				Handler: func(ctx context.Context, d *bus.Delivery) error {
					var req events.InferenceRequest
					if err := d.Decode(ctx, &req); err != nil {
						return err
					}
					mu.Lock()
					calls[req.RequestID]++
					order = append(order, req.RequestID)
					mu.Unlock()
					if req.RequestID == poison {
						return failure
					}
					return nil
				}})
			// One record key for all: one partition, in this order.
			for _, id := range append([]string{poison}, goods...) {
				meta, ev := request(id, "acme", "eu", "content of "+id)
				meta.Key = "one-partition"
				if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 20*time.Second, "the records behind the poisoned one", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return calls[goods[len(goods)-1]] > 0
			})

			mu.Lock()
			if calls[poison] != tc.wantAttempts {
				t.Errorf("handler called %d times for the poisoned record, want %d", calls[poison], tc.wantAttempts)
			}
			for _, id := range goods {
				if calls[id] != 1 {
					t.Errorf("handler called %d times for %s, want 1", calls[id], id)
				}
			}
			wantOrder := append(slices.Repeat([]string{poison}, tc.wantAttempts), goods...)
			if fmt.Sprint(order) != fmt.Sprint(wantOrder) {
				t.Errorf("handled in order %v, want %v", order, wantOrder)
			}
			mu.Unlock()

			origs := readTopic(t, c.Brokers, b.Topic("eu", bus.StreamRequests))
			var orig *kgo.Record
			for _, r := range origs {
				if bus.MetaOf(r).RequestID == poison {
					orig = r
				}
			}
			if orig == nil {
				t.Fatalf("poisoned record not found among %d requests", len(origs))
			}
			dlq := readTopic(t, c.Brokers, b.Topic("eu", bus.StreamDLQ))
			if len(dlq) != 1 {
				t.Fatalf("dead-letter topic holds %d records, want 1", len(dlq))
			}
			dl := dlq[0]
			if !bytes.Equal(dl.Key, orig.Key) {
				t.Errorf("dead-letter key %q, want %q", dl.Key, orig.Key)
			}
			if !bytes.Equal(dl.Value, orig.Value) {
				t.Errorf("dead-letter value differs from the original record's")
			}
			if bytes.Contains(dl.Value, []byte("content of")) {
				t.Errorf("dead-letter value is plaintext")
			}
			if len(dl.Headers) < len(orig.Headers) {
				t.Fatalf("dead-letter record has %d headers, the original %d", len(dl.Headers), len(orig.Headers))
			}
			for i, h := range orig.Headers {
				if g := dl.Headers[i]; g.Key != h.Key || !bytes.Equal(g.Value, h.Value) {
					t.Errorf("header %d is %s=%q, want the original %s=%q", i, g.Key, g.Value, h.Key, h.Value)
				}
			}
			extra := map[string]string{}
			for _, h := range dl.Headers[len(orig.Headers):] {
				extra[h.Key] = string(h.Value)
			}
			want := map[string]string{
				bus.HeaderDLQError:     failure.Error(),
				bus.HeaderDLQTopic:     orig.Topic,
				bus.HeaderDLQPartition: strconv.Itoa(int(orig.Partition)),
				bus.HeaderDLQOffset:    strconv.FormatInt(orig.Offset, 10),
				bus.HeaderDLQAttempts:  strconv.Itoa(tc.wantAttempts),
				bus.HeaderDLQGroup:     group,
			}
			if fmt.Sprint(extra) != fmt.Sprint(want) {
				t.Errorf("dead-letter headers %v, want %v", extra, want)
			}
		})
	}
}

// TestKilledConsumerRedeliversAndEffectsStayOnce kills a consumer that has
// handled every record but committed none. Its successor in the group gets
// every record again, and the idempotent handler keeps one effect each.
func TestKilledConsumerRedeliversAndEffectsStayOnce(t *testing.T) {
	t.Parallel()
	c, ns, b, addr, rdb := childSetup(t)
	const (
		group = "effects"
		n     = 5
	)

	ch := startChild(t, childKill, c, ns, addr, group)
	for i := range n {
		meta, ev := request(fmt.Sprintf("effect-%d", i), "acme", "eu", "order "+strconv.Itoa(i))
		if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	ch.waitFor(t, 20*time.Second, "the child to handle every record", func() bool {
		return redisCard(t, rdb, keyProcessed) == n
	})
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !ch.exited(10 * time.Second) {
		t.Fatal("child survived SIGKILL")
	}
	if got := redisGet(t, rdb, keyInvocations); got != n {
		t.Fatalf("child handled %d times, want %d", got, n)
	}

	stop := runConsumer(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests}, Handler: applyOnce(rdb)})
	waitFor(t, 20*time.Second, "every record to be redelivered", func() bool {
		return redisGet(t, rdb, keyInvocations) >= 2*n
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := redisGet(t, rdb, keyInvocations); got != 2*n {
		t.Errorf("%d handler calls, want %d (each record once in the child, once after it)", got, 2*n)
	}
	if got := redisCard(t, rdb, keyProcessed); got != n {
		t.Errorf("%d processed request IDs, want %d", got, n)
	}
	if got := redisGet(t, rdb, keyTotal); got != n*effectAmount {
		t.Errorf("total %d, want %d: an effect was applied twice", got, n*effectAmount)
	}
}

// TestSIGTERMDrainsAndCommits stops a consumer with SIGTERM while records
// stream in. It exits 0 after committing what it handled; its successor
// starts from there and, between them, every record is handled.
func TestSIGTERMDrainsAndCommits(t *testing.T) {
	t.Parallel()
	c, ns, b, addr, rdb := childSetup(t)
	const (
		group = "drain"
		total = 3000
	)

	ch := startChild(t, childDrain, c, ns, addr, group)
	ctx, cancel := context.WithCancel(context.Background())
	var produced atomic.Int64
	produceErr := make(chan error, 1)
	producing := make(chan struct{})
	t.Cleanup(func() { // before the bus closes
		cancel()
		<-producing
	})
	go func() {
		defer close(producing)
		for i := range total {
			meta, ev := request(fmt.Sprintf("drain-%04d", i), "acme", "eu", "record "+strconv.Itoa(i))
			if err := b.Publish(ctx, "eu", bus.StreamRequests, meta, ev); err != nil {
				produceErr <- err
				return
			}
			produced.Add(1)
		}
		produceErr <- nil
	}()

	ch.waitFor(t, 20*time.Second, "the child to handle 300 records", func() bool {
		return redisGet(t, rdb, keyChildCount) >= 300
	})
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM after %d of %d records were produced", produced.Load(), total)
	if !ch.exited(15 * time.Second) {
		t.Fatalf("child still running 15 s after SIGTERM; its output:\n%s", ch.output())
	}
	if code := ch.exitCode(); code != 0 {
		t.Fatalf("child exited with status %d (%v) after SIGTERM, want 0; its output:\n%s", code, ch.err, ch.output())
	}
	childCount := redisGet(t, rdb, keyChildCount)
	if seen := redisCard(t, rdb, keySeen); seen != childCount {
		t.Errorf("child handled %d times but saw %d request IDs", childCount, seen)
	}
	select {
	case err := <-produceErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("producing did not finish")
	}

	// The committed offsets are exactly what the child handled: every
	// partition's handled records are a prefix of it, all committed.
	adm, err := b.Admin("eu")
	if err != nil {
		t.Fatal(err)
	}
	offs, err := adm.FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == b.Topic("eu", bus.StreamRequests) && o.Err == nil {
			committed += o.At
		}
	})
	if committed != childCount {
		t.Errorf("group committed %d records, the child handled %d: shutdown did not commit what it handled", committed, childCount)
	}

	stop := runConsumer(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests}, Handler: markSeen(rdb, keyParentCount)})
	waitFor(t, 20*time.Second, "every record to be seen", func() bool {
		return redisCard(t, rdb, keySeen) == total
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	parentCount := redisGet(t, rdb, keyParentCount)
	t.Logf("child handled %d, successor %d", childCount, parentCount)
	if limit := total - childCount + 100; parentCount > limit {
		t.Errorf("successor handled %d records, more than %d: it redid the child's work", parentCount, limit)
	}
}

// childSetup gives a test with a child consumer its cluster (dropping dead
// group members fast), namespace, bus, and a Redis for effects.
func childSetup(t *testing.T) (*bustest.Cluster, string, *bus.Bus, string, *redis.Client) {
	t.Helper()
	c := bustest.New(t, kfake.GroupMinSessionTimeout(500*time.Millisecond))
	ns := bustest.Namespace()
	b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
	addr := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return c, ns, b, addr, rdb
}

// runConsumer runs a consumer group and returns the function that stops it
// and returns Run's error. It is also stopped when t ends.
func runConsumer(t *testing.T, b *bus.Bus, cfg bus.ConsumerConfig) (stop func() error) {
	t.Helper()
	c, err := b.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var (
		once   sync.Once
		runErr error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// redisGet returns the integer at key; a missing key is 0.
func redisGet(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	n, err := rdb.Get(t.Context(), key).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return n
}

// redisCard returns the size of the set at key.
func redisCard(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	n, err := rdb.SCard(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readTopic reads every record of topic, up to the end offsets at the
// time of the call, with a plain franz-go client.
func readTopic(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	ends, err := kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	if len(remaining) == 0 {
		return nil
	}
	start := map[int32]kgo.Offset{}
	for p := range remaining {
		start[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s: %v (%d partitions unfinished)", topic, err, len(remaining))
		}
		fetches.EachError(func(_ string, p int32, err error) { t.Errorf("reading %s/%d: %v", topic, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			out = append(out, r)
			if r.Offset == end-1 {
				delete(remaining, r.Partition)
			}
		})
	}
	return out
}

// TestSlowRecordHoldsUpOnlyItsKey blocks the handler of one record. The
// records of other keys polled after it are handled meanwhile; the later
// records of its key wait and then follow in order; and the group's
// committed offsets never pass the blocked record until it is done.
func TestSlowRecordHoldsUpOnlyItsKey(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	const (
		group  = "slow"
		others = 60
	)
	release := make(chan struct{})
	var mu sync.Mutex
	var slowOrder []string
	var otherDone atomic.Int32
	runConsumer(t, b, bus.ConsumerConfig{Group: group, Streams: []string{bus.StreamRequests}, CommitInterval: 100 * time.Millisecond,
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			if d.Meta.Key != "slow-key" {
				otherDone.Add(1)
				return nil
			}
			if d.Meta.RequestID == "slow-0" {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			mu.Lock()
			slowOrder = append(slowOrder, d.Meta.RequestID)
			mu.Unlock()
			return nil
		}})
	publish := func(id, key string) {
		meta, ev := request(id, "acme", "eu", "hello")
		meta.Key = key
		if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	publish("slow-0", "slow-key")
	for i := range others {
		publish(fmt.Sprintf("other-%d", i), fmt.Sprintf("other-%d", i))
		if i%20 == 0 {
			publish(fmt.Sprintf("slow-%d", i/20+1), "slow-key")
		}
	}
	waitFor(t, 20*time.Second, "the other keys' records to be handled around the blocked one", func() bool { return otherDone.Load() == others })
	mu.Lock()
	if len(slowOrder) != 0 {
		t.Errorf("records %v of the blocked key ran before it finished", slowOrder)
	}
	mu.Unlock()

	// The slow key's partition holds records after the blocked one, all
	// handled but not committable yet.
	adm, err := b.Admin("eu")
	if err != nil {
		t.Fatal(err)
	}
	topic := b.Topic("eu", bus.StreamRequests)
	slowPartition := int32(-1)
	for _, r := range readTopic(t, c.Brokers, topic) {
		if string(r.Key) == "slow-key" && slowPartition < 0 {
			slowPartition = r.Partition
		}
	}
	committedAt := func() int64 {
		offs, err := adm.FetchOffsets(t.Context(), group)
		if err != nil {
			t.Fatal(err)
		}
		at := int64(0)
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic && o.Partition == slowPartition && o.Err == nil {
				at = o.At
			}
		})
		return at
	}
	time.Sleep(400 * time.Millisecond) // several commit intervals
	if at := committedAt(); at > 0 {
		t.Errorf("partition %d committed up to %d while its first record is still being handled", slowPartition, at)
	}

	close(release)
	waitFor(t, 10*time.Second, "the blocked key's records", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(slowOrder) == 4
	})
	mu.Lock()
	if want := []string{"slow-0", "slow-1", "slow-2", "slow-3"}; !slices.Equal(slowOrder, want) {
		t.Errorf("blocked key handled as %v, want %v", slowOrder, want)
	}
	mu.Unlock()
	var total int64
	for _, r := range readTopic(t, c.Brokers, topic) {
		if r.Partition == slowPartition {
			total++
		}
	}
	waitFor(t, 10*time.Second, "the partition to be committed to its end", func() bool { return committedAt() == total })
}
