package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/services/batch/watch"
)

func TestLifecycle(t *testing.T) { daemontest.CheckLifecycle(t, run) }

// busOn returns a bus on the service's cluster and namespace.
func busOn(t *testing.T, env map[string]string) *bus.Bus {
	t.Helper()
	w, err := keys.LoadKeyFile(env["TERROIR_KEY_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	brokers := strings.Split(env["TERROIR_KAFKA_BROKERS"], ",")
	b, err := bus.New(t.Context(), bus.Config{Namespace: env["TERROIR_KAFKA_NAMESPACE"], InstanceID: "test",
		Brokers: map[string][]string{"eu": brokers, "us": brokers}, KeyWrapper: w})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestTheServiceWatchesDrops: the batch binary makes a new resource's
// drop folders and takes a file dropped into its inbox, its runner
// drives the batch to its end, and `batch watch` follows the batch by
// its ID on the stream until then.
func TestTheServiceWatchesDropsAndWatchFollowsTheBatch(t *testing.T) {
	s := daemontest.Start(t, run, map[string]string{"TERROIR_BATCH_DROP_POLL": "50ms"})
	b := busOn(t, s.Env)
	spec, _ := json.Marshal(control.Resource{Name: "acme", Location: "eu", ContentLogging: true})
	if err := b.Publish(t.Context(), "eu", bus.StreamControl, bus.Meta{Key: "resource/acme"},
		events.ControlChange{Kind: events.ControlResource, ID: "acme", Actor: "test", At: time.Now().UTC(), Spec: spec}); err != nil {
		t.Fatal(err)
	}
	loc := filepath.Join(s.Env["TERROIR_BATCH_DROPS_DIR"], "acme")
	eventually(t, "the drop folders", func() bool { _, err := os.Stat(filepath.Join(loc, "outbox")); return err == nil })
	line := `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"embed","input":"hi"}}` + "\n"
	if err := os.WriteFile(filepath.Join(loc, "inbox", ".q.jsonl"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(25 * time.Millisecond)
	if err := os.Rename(filepath.Join(loc, "inbox", ".q.jsonl"), filepath.Join(loc, "inbox", "q.jsonl")); err != nil {
		t.Fatal(err)
	}
	var status struct {
		ID       string `json:"id"`
		Endpoint string `json:"endpoint"`
	}
	eventually(t, "the status file", func() bool {
		raw, err := os.ReadFile(filepath.Join(loc, "outbox", "q.status.json"))
		return err == nil && json.Unmarshal(raw, &status) == nil && status.ID != ""
	})
	if status.Endpoint != "/v1/embeddings" {
		t.Fatalf("endpoint %q", status.Endpoint)
	}
	if _, err := os.Stat(filepath.Join(loc, "processed", "q.jsonl")); err != nil {
		t.Fatal("the drop was not moved to processed/")
	}

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- watch.Run(ctx, func(k string) string { return s.Env[k] }, []string{"-resource", "acme", "-interval", "20ms", status.ID}, &out)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The service's own runner ends the batch: acme has no deployment
	// embed, so its one line is refused (an error line) and it completes.
	if !strings.Contains(out.String(), "1/1 lines  1 failed") || !strings.HasSuffix(strings.TrimSpace(out.String()), "completed") {
		t.Fatalf("watch wrote:\n%s", out.String())
	}
}
