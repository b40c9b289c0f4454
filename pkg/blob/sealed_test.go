package blob_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/blob/blobtest"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// sealedEnv is a Sealed over real stores of two geographies, the key
// manager behind it, and the directories that hold what the stores wrote.
type sealedEnv struct {
	sealed  *blob.Sealed
	stores  blob.Stores
	keys    *keys.Manager
	backing []string
}

// backends opens, per test, stores of "eu" and "us" on each backend.
func backends(t *testing.T) map[string]func(t *testing.T) (blob.Stores, []string) {
	srv := blobtest.StartS3(t)
	return map[string]func(t *testing.T) (blob.Stores, []string){
		"dir": func(t *testing.T) (blob.Stores, []string) {
			root := t.TempDir()
			m := map[string]blob.Store{}
			for _, g := range []string{"eu", "us"} {
				d, err := blob.NewDir(filepath.Join(root, g))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				m[g] = d
			}
			return blob.NewStores(m), []string{root}
		},
		"s3": func(t *testing.T) (blob.Stores, []string) {
			return blob.NewStores(map[string]blob.Store{"eu": srv.Store(t), "us": srv.Store(t)}),
				[]string{srv.DataDir, srv.MetaDir}
		},
	}
}

func newKeys(t *testing.T, opts ...keys.Option) *keys.Manager {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keyring.json")
	if err := keys.EnsureKeyFile(p, []string{"eu", "us"}); err != nil {
		t.Fatal(err)
	}
	w, err := keys.LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.NewManager(w, keys.NewMemoryStore(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const testSegment = 4096 // small segments, so short objects span several

func newSealedEnv(t *testing.T, open func(t *testing.T) (blob.Stores, []string), opts ...keys.Option) sealedEnv {
	t.Helper()
	stores, backing := open(t)
	km := newKeys(t, opts...)
	s, err := blob.NewSealed(stores, km, blob.WithSegmentSize(testSegment))
	if err != nil {
		t.Fatal(err)
	}
	return sealedEnv{sealed: s, stores: stores, keys: km, backing: backing}
}

func get(t *testing.T, s *blob.Sealed, geo, res, key string, rng blob.Range) ([]byte, error) {
	t.Helper()
	rc, _, err := s.Get(t.Context(), geo, res, key, rng)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestSealed(t *testing.T) {
	t.Parallel()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSealed(t, open)
		})
	}
}

func testSealed(t *testing.T, open func(t *testing.T) (blob.Stores, []string)) {
	// first segment: 4096-16-40 bytes of plaintext, then 4080 each
	const first, rest = testSegment - 16 - 40, testSegment - 16

	t.Run("round trip and sizes around segment boundaries", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		ctx := t.Context()
		for _, size := range []int64{0, 1, first - 1, first, first + 1, first + rest - 1, first + rest, first + rest + 1, first + 3*rest + 17} {
			key := fmt.Sprintf("files/file-%d", size)
			want := blobtest.PatternBytes(uint64(size), size, 0, size)
			info, err := e.sealed.Put(ctx, "eu", "acme", key, blobtest.NewPattern(uint64(size), size))
			if err != nil {
				t.Fatalf("Put %d bytes: %v", size, err)
			}
			if info.Size != size || info.Key != key {
				t.Errorf("Put info = %+v, want size %d", info, size)
			}
			st, err := e.sealed.Stat(ctx, "eu", "acme", key)
			if err != nil || st.Size != size || st.Key != key {
				t.Errorf("Stat = %+v, %v; want size %d", st, err, size)
			}
			got, err := get(t, e.sealed, "eu", "acme", key, blob.Range{})
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("Get of %d bytes: %d bytes back, %v", size, len(got), err)
			}
			raw, err := e.stores.For("eu")
			if err != nil {
				t.Fatal(err)
			}
			ri, err := raw.Stat(ctx, "acme/"+key)
			if err != nil {
				t.Fatal(err)
			}
			if ri.Size <= size {
				t.Errorf("stored %d bytes for %d of plaintext: not sealed?", ri.Size, size)
			}
		}
		var listed []string
		for info, err := range e.sealed.List(ctx, "eu", "acme", fmt.Sprintf("files/file-%d", first)) {
			if err != nil {
				t.Fatal(err)
			}
			listed = append(listed, fmt.Sprintf("%s=%d", info.Key, info.Size))
		}
		if want := fmt.Sprintf("[files/file-%d=%d]", first, first); fmt.Sprint(listed) != want {
			t.Errorf("List = %v, want %s", listed, want)
		}
	})

	t.Run("ranges by segment", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		const size = first + 4*rest + 100
		if _, err := e.sealed.Put(t.Context(), "eu", "acme", "files/f", blobtest.NewPattern(3, size)); err != nil {
			t.Fatal(err)
		}
		cases := []blob.Range{
			{Offset: 0, Length: 1}, {Offset: first - 1, Length: 2}, {Offset: first, Length: rest},
			{Offset: first + rest - 5, Length: 10}, {Offset: first + 2*rest + 7}, {Offset: size - 1},
			{Offset: size - 1, Length: 100}, {Offset: 10, Length: size}, {Offset: first + rest, Length: 1},
		}
		for _, rng := range cases {
			n := rng.Length
			if n == 0 || rng.Offset+n > size {
				n = size - rng.Offset
			}
			got, err := get(t, e.sealed, "eu", "acme", "files/f", rng)
			if err != nil || !bytes.Equal(got, blobtest.PatternBytes(3, size, rng.Offset, n)) {
				t.Errorf("range %+v: %d bytes, %v", rng, len(got), err)
			}
		}
		for _, rng := range []blob.Range{{Offset: size}, {Offset: size + 5, Length: 1}, {Offset: -1}} {
			if _, err := get(t, e.sealed, "eu", "acme", "files/f", rng); !errors.Is(err, blob.ErrInvalidRange) {
				t.Errorf("range %+v: %v, want ErrInvalidRange", rng, err)
			}
		}
	})

	t.Run("the plaintext never reaches the store", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		canary := "CANARY-7f3e2d-the-customer-secret"
		content := strings.Repeat(canary+" ", 2000)
		if _, err := e.sealed.Put(t.Context(), "eu", "acme", "files/canary", strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		got, err := get(t, e.sealed, "eu", "acme", "files/canary", blob.Range{})
		if err != nil || string(got) != content {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		files := 0
		for _, dir := range e.backing {
			err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				files++
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if bytes.Contains(b, []byte(canary)) || bytes.Contains(b, []byte("CANARY")) {
					t.Errorf("the plaintext canary is in %s", p)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if files == 0 {
			t.Fatal("the scan found no stored file")
		}
	})

	t.Run("altered, truncated or moved ciphertext does not open", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		ctx := t.Context()
		const size = first + 2*rest + 9
		if _, err := e.sealed.Put(ctx, "eu", "acme", "files/orig", blobtest.NewPattern(5, size)); err != nil {
			t.Fatal(err)
		}
		eu, _ := e.stores.For("eu")
		us, _ := e.stores.For("us")
		rc, info, err := eu.Get(ctx, "acme/files/orig", blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := io.ReadAll(rc)
		rc.Close()
		flip := func(i int) []byte { b := bytes.Clone(ct); b[i] ^= 1; return b }
		cases := []struct {
			name     string
			store    blob.Store
			geo, res string
			key      string
			data     []byte
		}{
			{"a flipped byte in the header", eu, "eu", "acme", "files/t1", flip(5)},
			{"a flipped byte in the first segment", eu, "eu", "acme", "files/t2", flip(100)},
			{"a flipped byte in the last segment", eu, "eu", "acme", "files/t3", flip(len(ct) - 3)},
			{"cut at a segment boundary", eu, "eu", "acme", "files/t4", ct[:2*testSegment]},
			{"cut inside a segment", eu, "eu", "acme", "files/t5", ct[:len(ct)-20]},
			{"copied under another name", eu, "eu", "acme", "files/copy", ct},
			{"copied to another resource", eu, "eu", "globex", "files/orig", ct},
			{"copied to another geography", us, "us", "acme", "files/orig", ct},
		}
		for _, c := range cases {
			if _, err := c.store.Put(ctx, c.res+"/"+c.key, bytes.NewReader(c.data), info.Metadata); err != nil {
				t.Fatal(err)
			}
			_, err := get(t, e.sealed, c.geo, c.res, c.key, blob.Range{})
			if err == nil {
				t.Errorf("%s: opened", c.name)
			} else if !errors.Is(err, blob.ErrCorrupt) {
				t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
			}
		}
		// the original still opens
		if got, err := get(t, e.sealed, "eu", "acme", "files/orig", blob.Range{}); err != nil || len(got) != size {
			t.Errorf("original: %d bytes, %v", len(got), err)
		}
	})

	t.Run("resources and geographies are apart", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		ctx := t.Context()
		if _, err := e.sealed.Put(ctx, "eu", "acme", "files/f", strings.NewReader("acme's")); err != nil {
			t.Fatal(err)
		}
		if _, err := get(t, e.sealed, "eu", "globex", "files/f", blob.Range{}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("another resource read it: %v", err)
		}
		if _, err := get(t, e.sealed, "us", "acme", "files/f", blob.Range{}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("another geography has it: %v", err)
		}
		if _, err := e.sealed.Put(ctx, "ap", "acme", "files/f", strings.NewReader("x")); !errors.Is(err, blob.ErrUnknownGeo) {
			t.Errorf("Put in an unconfigured geography = %v, want ErrUnknownGeo", err)
		}
		for _, res := range []string{"", "a/b", "..", "x\x00"} {
			if _, err := e.sealed.Put(ctx, "eu", res, "files/f", strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Put for resource %q = %v, want ErrInvalidKey", res, err)
			}
		}
		if _, err := e.sealed.Put(ctx, "eu", "acme", "../globex/files/f", strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put with a key reaching into another resource = %v, want ErrInvalidKey", err)
		}
	})

	t.Run("an object opens after its resource key rolls", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open, keys.WithRotation(1, 0)) // a new resource key after every seal
		ctx := t.Context()
		for _, k := range []string{"files/a", "files/b"} {
			if _, err := e.sealed.Put(ctx, "eu", "acme", k, strings.NewReader("content of "+k)); err != nil {
				t.Fatal(err)
			}
		}
		eu, _ := e.stores.For("eu")
		a, _ := eu.Stat(ctx, "acme/files/a")
		b, _ := eu.Stat(ctx, "acme/files/b")
		if a.Metadata["terroir-key-id"] == "" || a.Metadata["terroir-key-id"] == b.Metadata["terroir-key-id"] {
			t.Errorf("objects name resource keys %q and %q; want two versions", a.Metadata["terroir-key-id"], b.Metadata["terroir-key-id"])
		}
		for _, k := range []string{"files/a", "files/b"} {
			if got, err := get(t, e.sealed, "eu", "acme", k, blob.Range{}); err != nil || string(got) != "content of "+k {
				t.Errorf("%s: %q, %v", k, got, err)
			}
		}
	})

	t.Run("deleting an object removes it and its key", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		ctx := t.Context()
		for _, k := range []string{"files/a", "files/b"} {
			if _, err := e.sealed.Put(ctx, "eu", "acme", k, strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.sealed.Delete(ctx, "eu", "acme", "files/a"); err != nil {
			t.Fatal(err)
		}
		if _, err := get(t, e.sealed, "eu", "acme", "files/a", blob.Range{}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("after Delete: %v", err)
		}
		eu, _ := e.stores.For("eu")
		if _, err := eu.Stat(ctx, "acme/files/a"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("the stored object (and its wrapped key) is still there: %v", err)
		}
		if got, err := get(t, e.sealed, "eu", "acme", "files/b", blob.Range{}); err != nil || string(got) != "x" {
			t.Errorf("the other object: %q, %v", got, err)
		}
	})

	t.Run("shredding the resource makes every object unreadable", func(t *testing.T) {
		t.Parallel()
		e := newSealedEnv(t, open)
		ctx := t.Context()
		for _, k := range []string{"files/a", "batches/b/output"} {
			if _, err := e.sealed.Put(ctx, "eu", "acme", k, strings.NewReader("secret")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.sealed.Put(ctx, "eu", "globex", "files/a", strings.NewReader("globex's")); err != nil {
			t.Fatal(err)
		}
		if err := e.keys.Shred(ctx, "eu", "acme"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"files/a", "batches/b/output"} {
			_, err := get(t, e.sealed, "eu", "acme", k, blob.Range{})
			if !errors.Is(err, blob.ErrShredded) || !errors.Is(err, keys.ErrKeyNotFound) {
				t.Errorf("%s after Shred: %v, want ErrShredded", k, err)
			}
		}
		if _, err := e.sealed.Put(ctx, "eu", "acme", "files/new", strings.NewReader("x")); !errors.Is(err, keys.ErrResourceGone) {
			t.Errorf("Put after Shred = %v, want ErrResourceGone", err)
		}
		if got, err := get(t, e.sealed, "eu", "globex", "files/a", blob.Range{}); err != nil || string(got) != "globex's" {
			t.Errorf("another resource: %q, %v", got, err)
		}
		// DeleteResource shreds (again) and removes what is left
		if err := e.sealed.DeleteResource(ctx, "eu", "acme"); err != nil {
			t.Fatal(err)
		}
		eu, _ := e.stores.For("eu")
		for info, err := range eu.List(ctx, "acme/") {
			t.Errorf("after DeleteResource: %s, %v", info.Key, err)
		}
		if got, err := get(t, e.sealed, "eu", "globex", "files/a", blob.Range{}); err != nil || string(got) != "globex's" {
			t.Errorf("another resource after DeleteResource: %q, %v", got, err)
		}
	})
}

// TestSealedStreamsInBoundedMemory puts and gets a 96 MiB object through
// the sealed layer on each backend with 1 MiB segments and checks that the
// live heap never grows by more than a third of it: the object is streamed
// segment by segment, never held whole. It does not run in parallel, so
// other tests' allocations do not count.
func TestSealedStreamsInBoundedMemory(t *testing.T) {
	const size = 96 << 20
	const bound = 32 << 20
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			stores, _ := open(t)
			s, err := blob.NewSealed(stores, newKeys(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			m := newHeapMeter()
			if _, err := s.Put(ctx, "eu", "acme", "files/big", m.reader(blobtest.NewPattern(9, size))); err != nil {
				t.Fatal(err)
			}
			putPeak := m.peak
			m = newHeapMeter()
			rc, info, err := s.Get(ctx, "eu", "acme", "files/big", blob.Range{})
			if err != nil {
				t.Fatal(err)
			}
			want := blobtest.NewPattern(9, size)
			n, err := equalStreams(m.reader(rc), want)
			rc.Close()
			if err != nil || n != size || info.Size != size {
				t.Fatalf("Get: %d of %d bytes equal (size %d): %v", n, size, info.Size, err)
			}
			t.Logf("%s: live heap grew at most %.1f MiB during Put and %.1f MiB during Get of %d MiB",
				name, float64(putPeak)/(1<<20), float64(m.peak)/(1<<20), size>>20)
			if putPeak > bound || m.peak > bound {
				t.Errorf("live heap grew by %d (Put) and %d (Get) bytes; want at most %d", putPeak, m.peak, bound)
			}
		})
	}
}

// heapMeter samples the live heap (after a GC) every 4 MiB read through
// it, and keeps the largest growth over where it started.
type heapMeter struct {
	base, peak int64
	since      int64
}

func newHeapMeter() *heapMeter {
	return &heapMeter{base: liveHeap()}
}

func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func (m *heapMeter) reader(r io.Reader) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		m.since += int64(n)
		if m.since >= 4<<20 || err != nil {
			m.since = 0
			if g := liveHeap() - m.base; g > m.peak {
				m.peak = g
			}
		}
		return n, err
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// equalStreams reads a and b to the end and returns how many bytes were
// equal before the first difference.
func equalStreams(a, b io.Reader) (int64, error) {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	var n int64
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return n, errors.New("streams differ")
		}
		n += int64(na)
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			if eb != io.EOF && eb != io.ErrUnexpectedEOF {
				return n, errors.New("first stream ended early")
			}
			return n, nil
		}
		if ea != nil {
			return n, ea
		}
	}
}
