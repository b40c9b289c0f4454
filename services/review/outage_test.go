package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/redistest"
	"github.com/terroir-ai/terroir/services/review/detect"
	"github.com/terroir-ai/terroir/services/review/store"
)

// TestOutagesLoseNothing runs the review service while traffic flows as
// content safety sends it (an abuse record and a severe safety signal per
// request), restarts Redis for 5 s, then the broker for 5 s. Afterwards
// every abuse record is indexed once and every signal counted once: the
// service waited the outages out, dead-lettering nothing.
//
// The broker is kfake with a data directory: a restart is a new cluster on
// the same port and directory, which reloads topics, records, groups and
// committed offsets, as a Kafka broker restart does. Redis keeps an
// append-only file synced on every write, as a production Redis would.
func TestOutagesLoseNothing(t *testing.T) {
	t.Parallel()
	const outage = 5 * time.Second
	dataDir := t.TempDir()
	port := freePort(t)
	c := bustest.New(t, kfake.DataDir(dataDir), kfake.Ports(port))
	if c.Fake == nil {
		t.Skip("TERROIR_KAFKA_BROKERS names an external Kafka broker, which this test cannot stop and restart: it needs the in-process kfake cluster, the default that make test and CI use")
	}
	rds := redistest.StartServer(t)
	env := daemontest.EnvOn(t, c, map[string]string{"TERROIR_GEOS": "eu", "TERROIR_REDIS_ADDR": rds.Addr})
	svc := daemontest.StartEnv(t, run, env)
	b := c.Bus(t, bustest.Options{Namespace: env["TERROIR_KAFKA_NAMESPACE"], Geos: []string{"eu"}})
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { _ = rdb.Close() })

	const resource = "outage-res"
	// Traffic: one request every 20 ms until stopped. A publish waits
	// through an outage (the producer retries) and must not fail.
	var (
		sent    atomic.Int32
		stopPub = make(chan struct{})
		pubDone = make(chan error, 1)
	)
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := publishRequest(t.Context(), b, resource, "req-"+strconv.Itoa(i)); err != nil {
				pubDone <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			sent.Add(1)
		}
	}()
	indexed := func() int {
		n := 0
		for i := range int(sent.Load()) {
			if rdb.Exists(t.Context(), store.Key("eu", resource, "req-"+strconv.Itoa(i))).Val() == 1 {
				n++
			}
		}
		return n
	}
	waitUntil(t, 20*time.Second, "traffic to be indexed before the outages", func() bool { return sent.Load() >= 20 && indexed() >= 20 })

	rds.Stop()
	before := sent.Load()
	time.Sleep(outage) // Redis is away this long
	rds.Restart()
	if sent.Load() == before {
		t.Error("no traffic was published while Redis was away")
	}
	waitUntil(t, 20*time.Second, "indexing to resume after Redis came back", func() bool { return indexed() > int(before) })

	c.Fake.Close()
	time.Sleep(outage) // the broker is away this long
	again, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dataDir), kfake.Ports(port))
	if err != nil {
		t.Fatalf("starting the broker again: %v", err)
	}
	t.Cleanup(again.Close)
	after := sent.Load()
	waitUntil(t, 20*time.Second, "traffic to flow after the broker came back", func() bool { return sent.Load() >= after+20 })
	close(stopPub)
	if err := <-pubDone; err != nil {
		t.Fatalf("publishing through the outages: %v", err)
	}
	total := int(sent.Load())

	waitUntil(t, 30*time.Second, "every abuse record to be indexed", func() bool { return indexed() == total })
	for i := range total {
		key := store.Key("eu", resource, "req-"+strconv.Itoa(i))
		if n := rdb.HLen(t.Context(), key).Val(); n != 1 {
			t.Errorf("req-%d indexed %d times", i, n)
		}
	}
	det, err := detect.New(detect.Config{Bus: b, Redis: map[string]*redis.Client{"eu": rdb}, Geos: []string{"eu"}})
	if err != nil {
		t.Fatal(err)
	}
	var hits int
	waitUntil(t, 30*time.Second, "every safety signal to be counted", func() bool {
		cases, err := det.Cases(t.Context(), "eu", 10)
		if err != nil || len(cases) != 1 {
			return false
		}
		hits = cases[0].Hits
		return hits >= total
	})
	if hits != total {
		t.Errorf("case counted %d signals, %d were sent", hits, total)
	}

	// Nothing was given up: the dead-letter topic is empty, and the
	// service's consumers dead-lettered nothing.
	if n := endOffset(t, c.Brokers, b.Topic("eu", bus.StreamDLQ)); n != 0 {
		t.Errorf("%d records dead-lettered", n)
	}
	if _, metrics := svc.Get(t, "/metrics"); strings.Contains(metrics, "terroir_bus_dead_lettered_total{") {
		t.Errorf("the service dead-lettered records:\n%s", grepLines(metrics, "terroir_bus_dead_lettered_total"))
	}
	t.Logf("%d requests through a %v Redis restart and a %v broker restart", total, outage, outage)
}

func publishRequest(ctx context.Context, b *bus.Bus, resource, id string) error {
	meta := bus.Meta{RequestID: id, Resource: resource, HomeGeo: "eu", Deployment: "chat"}
	severe := events.CategoryResult{Severity: events.SeverityHigh, Filtered: true}
	safe := events.CategoryResult{Severity: events.SeveritySafe}
	sig := events.SafetySignal{RequestID: id, Resource: resource, Deployment: "chat", HomeGeo: "eu", Direction: events.DirectionPrompt,
		Categories:  events.Categories{Hate: severe, Sexual: safe, Violence: safe, SelfHarm: safe},
		ContentHash: fmt.Sprintf("%x", sha256.Sum256([]byte(id))), At: time.Now().UTC()}
	rec := events.AbuseRecord{RequestID: id, Resource: resource, HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat",
		Operation: events.OperationChatCompletions, Prompt: json.RawMessage(`{"messages":[{"role":"user","content":"x"}]}`),
		PromptFilterResults: json.RawMessage(`[]`), CreatedAt: time.Now().UTC()}
	return bus.WaitAll(
		b.PublishAsync(ctx, "eu", bus.StreamSafetySignals, bus.Meta{Key: id}, sig),
		b.PublishAsync(ctx, "eu", bus.StreamAbuseLog, meta, rec),
	)
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func endOffset(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(t.Context(), topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
