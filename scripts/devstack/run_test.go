package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/scripts/devstack/stack"
)

func TestRunWithoutServices(t *testing.T) {
	root := newRoot(t)
	kafkaAddr, redisAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"-dir", filepath.Join(root, "scripts"),
			"-kafka", kafkaAddr,
			"-redis", redisAddr,
			"-services=false",
		}, &out)
	}()
	waitFor(t, done, func() bool { return strings.Contains(out.String(), "Ctrl-C stops everything") })

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr), kgo.ConsumeTopics("terroir.us.control"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "terroir.us.control"); err != nil {
		t.Fatalf("creating topic: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "terroir.us.control", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	pollCtx, pollCancel := context.WithTimeout(ctx, 15*time.Second)
	defer pollCancel()
	for got := 0; got == 0; {
		fs := cl.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			t.Fatal("consumed nothing within 15s")
		}
		got = fs.NumRecords()
	}
	if err := stack.Ping(ctx, redisAddr); err != nil {
		t.Errorf("Redis: %v", err)
	}
	fi, err := os.Stat(filepath.Join(root, ".terroir", "keys", "keyring.json"))
	if err != nil {
		t.Errorf("keyring: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("keyring mode = %v, want 0600", fi.Mode().Perm())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(out.String(), "stopped cleanly") {
		t.Errorf("output lacks 'stopped cleanly':\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(root, ".terroir", "kafka")); err != nil {
		t.Errorf("Kafka data directory: %v", err)
	}
}

func TestRunReportsServiceThatDoesNotBuild(t *testing.T) {
	root := newRoot(t)
	var out syncBuffer
	err := run(t.Context(), []string{
		"-dir", root,
		"-kafka", freeAddr(t),
		"-redis", freeAddr(t),
		"-smoke",
	}, &out)
	if err == nil || !strings.Contains(err.Error(), "service ingress did not build") {
		t.Fatalf("run error = %v, want it to name ingress", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"-no-such-flag"}, &out); err == nil {
		t.Fatal("run accepted an unknown flag")
	}
}

// newRoot returns a temporary repository root holding a go.work file.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitFor polls cond until it holds, failing if run returns first or a
// deadline passes.
func waitFor(t *testing.T, done <-chan error, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-deadline:
			t.Fatal("stack not up within 30s")
		case <-tick.C:
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
