package e2e

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// TestCanaryOnlyAsCiphertext sends a canary in the prompts of a resource
// with content logging on and of one with it off. The canary is in no
// topic (key, value or header), no Redis key or value and no log line;
// the opted-out resource has no abuse-monitoring record at all, and the
// other's records open, with the abuse key, to the canary.
func TestCanaryOnlyAsCiphertext(t *testing.T) {
	s := startStack(t, nil)
	open := s.tenant("open", "eu", true)
	quiet := s.tenant("quiet", "eu", false)
	canary := "canary" + bustest.Namespace() + "zebra"
	ids := map[string]string{}
	for name, key := range map[string]string{"open": open, "quiet": quiet} {
		for _, stream := range []string{"false", "true"} {
			r := s.call("POST", "/v1/chat/completions", key, `{"model":"chat","stream":`+stream+`,"max_tokens":20,"messages":[{"role":"user","content":"Please repeat `+canary+` back to me."}]}`)
			if r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", name, r.status, r.raw)
			}
			ids[r.header.Get("x-request-id")] = name
		}
	}

	// Abuse records are side records: written after the answer, within
	// the side linger. Wait for the logging resource's before scanning,
	// so that the scan covers them.
	var abuse map[string]int // resource → abuse-log records of these requests
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		abuse = map[string]int{}
		for _, r := range s.allRecords() {
			if _, stream := geoOf(r.Topic); stream == bus.StreamAbuseLog {
				if who, ok := ids[header(r, "terroir-request-id")]; ok {
					abuse[who]++
				}
			}
		}
		if abuse["open"] >= 2 || time.Now().After(deadline) {
			break
		}
	}
	s.noPlaintext(canary)
	if abuse["quiet"] != 0 {
		t.Errorf("%d abuse-monitoring records of the opted-out resource", abuse["quiet"])
	}
	if abuse["open"] != 2 { // one record per request, holding its prompt and its output
		t.Errorf("%d abuse-monitoring records of the logging resource, want 2", abuse["open"])
	}

	// The logging resource's records are the canary, sealed.
	w, err := keys.LoadKeyFile(s.env["TERROIR_KEY_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	brokers := strings.Split(s.env["TERROIR_KAFKA_BROKERS"], ",")
	b, err := bus.New(t.Context(), bus.Config{Namespace: s.env["TERROIR_KAFKA_NAMESPACE"], InstanceID: "verifier",
		Brokers: map[string][]string{"eu": brokers}, KeyWrapper: w})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu sync.Mutex
	opened := 0
	c, err := b.NewConsumer(bus.ConsumerConfig{Group: "verifier", Streams: []string{bus.StreamAbuseLog}, Geos: []string{"eu"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var rec events.AbuseRecord
			if err := d.Decode(ctx, &rec); err != nil {
				return err
			}
			if ids[rec.RequestID] == "open" && bytes.Contains(rec.Prompt, []byte(canary)) && len(rec.Output) > 0 {
				mu.Lock()
				opened++
				mu.Unlock()
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := opened
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("opened %d of 2 abuse records", n)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	cancel()
	<-done
}

// noPlaintext checks that canary is in no record of any topic (key,
// value or header), no service's log line, and no Redis key or value.
func (s *stack) noPlaintext(canary string) {
	t := s.t
	t.Helper()
	for _, r := range s.allRecords() {
		var hs bytes.Buffer
		for _, h := range r.Headers {
			hs.WriteString(h.Key + "=" + string(h.Value) + "\n")
		}
		if bytes.Contains(r.Value, []byte(canary)) || bytes.Contains(r.Key, []byte(canary)) || strings.Contains(hs.String(), canary) {
			t.Errorf("canary in plaintext on %s", r.Topic)
		}
	}
	if strings.Contains(s.logs.String(), canary) {
		t.Error("canary in a service's log")
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.env["TERROIR_REDIS_ADDR"]})
	defer rdb.Close()
	iter := rdb.Scan(t.Context(), 0, "*", 0).Iterator()
	for iter.Next(t.Context()) {
		v, _ := rdb.Dump(t.Context(), iter.Val()).Result()
		if strings.Contains(iter.Val()+v, canary) {
			t.Error("canary in Redis")
		}
	}
}
