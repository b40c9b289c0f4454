package drops

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/blob"
)

func TestAFileIsCompleteWhenSettledOrRenamedIn(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	whole := false
	w := &Watcher{cfg: Config{Settle: 2 * time.Second}, seen: map[string]sighting{},
		deps: Deps{Now: func() time.Time { return now }, Whole: func(context.Context, string) bool { return whole }}}
	info := blob.Info{Key: "acme/inbox/q.jsonl", Size: 10, Created: t0}
	steps := []struct {
		advance time.Duration
		size    int64
		whole   bool
		want    bool
	}{
		{0, 10, false, false},                       // first seen
		{time.Second, 10, false, false},             // unchanged for 1s
		{1500 * time.Millisecond, 20, false, false}, // grew: starts over
		{1900 * time.Millisecond, 20, false, false},
		{100 * time.Millisecond, 20, false, true}, // unchanged for 2s
		{0, 30, true, true},                       // renamed in: at once
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		info.Size, whole = s.size, s.whole
		if got := w.complete(context.Background(), info); got != s.want {
			t.Fatalf("step %d: complete = %v, want %v", i, got, s.want)
		}
	}
}

func TestFolderWholeTellsARenamedFileFromAWrittenOne(t *testing.T) {
	dir := t.TempDir()
	f, err := NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.WriteFile(filepath.Join(dir, "written.jsonl"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".tmp"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(25 * time.Millisecond) // past the file system clock's tick (10ms where HZ=100)
	if err := os.Rename(filepath.Join(dir, ".tmp"), filepath.Join(dir, "renamed.jsonl")); err != nil {
		t.Fatal(err)
	}
	if f.Whole(t.Context(), "written.jsonl") {
		t.Error("a file still being written counts as whole")
	}
	if !f.Whole(t.Context(), "renamed.jsonl") {
		t.Error("a file renamed in is not whole")
	}
	var keys []string
	for in, err := range f.List(t.Context(), "") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, in.Key)
	}
	if len(keys) != 2 || keys[0] != "renamed.jsonl" || keys[1] != "written.jsonl" {
		t.Fatalf("listed %v (hidden files must not be)", keys)
	}
	if _, err := f.Stat(t.Context(), "../escape"); err == nil {
		t.Fatal("a key outside the folder was accepted")
	}
}
