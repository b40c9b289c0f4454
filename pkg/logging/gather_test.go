package logging

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// recorder is an output that keeps each write apart.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
	syncs  int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recorder) Sync() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs++
	return nil
}

func (r *recorder) got() (writes []string, syncs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.writes {
		writes = append(writes, string(w))
	}
	return writes, r.syncs
}

func TestGatheredLinesAreWrittenTogetherAfterTheWait(t *testing.T) {
	out := &recorder{}
	g := newGatherer(out, 50*time.Millisecond, 1<<10)
	g.Write([]byte("one\n"))
	g.Write([]byte("two\n"))
	if w, _ := out.got(); len(w) != 0 {
		t.Fatalf("lines written before the wait: %q", w)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, syncs := out.got()
		if len(w) == 1 {
			if w[0] != "one\ntwo\n" || syncs != 0 {
				t.Fatalf("writes %q, syncs %d: want the two lines in one write, no sync", w, syncs)
			}
			break
		}
		if len(w) > 1 || time.Now().After(deadline) {
			t.Fatalf("writes %q: want one", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.mu.Lock()
	armed := g.timer != nil
	g.mu.Unlock()
	if armed {
		t.Fatal("the timer is still armed with nothing held: an idle process would be woken")
	}
}

func TestAFullGathererAndSyncWriteAtOnce(t *testing.T) {
	out := &recorder{}
	g := newGatherer(out, time.Hour, 8)
	g.Write([]byte("12345"))
	g.Write([]byte("6789\n"))
	if w, _ := out.got(); len(w) != 1 || w[0] != "123456789\n" {
		t.Fatalf("writes %q: want the full buffer written at once", w)
	}
	g.Write([]byte("last\n"))
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	w, syncs := out.got()
	if len(w) != 2 || w[1] != "last\n" || syncs != 1 {
		t.Fatalf("writes %q, syncs %d: want the held line written and the output synced", w, syncs)
	}
	g.mu.Lock()
	armed := g.timer != nil
	g.mu.Unlock()
	if armed {
		t.Fatal("the timer is still armed after Sync wrote everything")
	}
}
