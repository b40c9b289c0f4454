package watch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStatusPath(t *testing.T) {
	for in, want := range map[string]string{
		"d/acme/inbox/q1.jsonl":          "d/acme/outbox/q1.status.json",
		"d/acme/processed/chat.q1.jsonl": "d/acme/outbox/chat.q1.status.json",
		"d/acme/outbox/q1.status.json":   "d/acme/outbox/q1.status.json",
		"d/acme/outbox/q1.output.jsonl":  "d/acme/outbox/q1.status.json",
	} {
		if got := StatusPath(in); got != want {
			t.Errorf("StatusPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWatchADropFileUntilItsBatchEnds(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "acme", "outbox", "q.status.json")
	write := func(s string) {
		if err := os.MkdirAll(filepath.Dir(status), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(status+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(status+".tmp", status); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(t.Context(), func(string) string { return "" }, []string{"-interval", "10ms", filepath.Join(dir, "acme", "inbox", "q.jsonl")}, &out)
	}()
	time.Sleep(50 * time.Millisecond) // not written yet: it waits
	write(`{"id":"batch_1","status":"in_progress","request_counts":{"total":4,"completed":1,"failed":1}}`)
	time.Sleep(50 * time.Millisecond)
	write(`{"id":"batch_1","status":"completed","request_counts":{"total":4,"completed":3,"failed":1}}`)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end with the batch")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "2/4 lines  1 failed") || !strings.Contains(lines[len(lines)-1], "4/4 lines  1 failed") ||
		!strings.HasSuffix(lines[len(lines)-1], "completed") {
		t.Fatalf("watch wrote:\n%s", out.String())
	}
	if err := Run(context.Background(), nil, []string{"a", "b"}, &out); err == nil {
		t.Fatal("two arguments accepted")
	}
}
