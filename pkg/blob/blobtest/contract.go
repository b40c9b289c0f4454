// Package blobtest is the contract test every blob.Store implementation
// runs, so the directory and the S3 stores behave the same, and starts a
// real S3-protocol server (versitygw) for tests that need one.
package blobtest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/blob"
)

// Run exercises a Store. open is called once per subtest and must return
// an empty store of its own; subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	t.Helper()

	t.Run("put get stat round trip with metadata", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		before := time.Now()
		md := map[string]string{"purpose": "batch", "x-1": "a b/c=d"}
		info, err := s.Put(ctx, "acme/files/file-1", strings.NewReader("hello, blob"), md)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		after := time.Now()
		if info.Key != "acme/files/file-1" || info.Size != 11 {
			t.Errorf("Put info = %+v", info)
		}
		st, err := s.Stat(ctx, "acme/files/file-1")
		if err != nil {
			t.Fatalf("Stat: %v", err)
		}
		checkInfo(t, "Stat", st, "acme/files/file-1", 11, md, before, after)
		rc, gi, err := s.Get(ctx, "acme/files/file-1", blob.Range{})
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got := readAll(t, rc); got != "hello, blob" {
			t.Errorf("Get = %q", got)
		}
		checkInfo(t, "Get", gi, "acme/files/file-1", 11, md, before, after)
	})

	t.Run("empty object", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		if _, err := s.Put(ctx, "acme/empty", strings.NewReader(""), nil); err != nil {
			t.Fatalf("Put: %v", err)
		}
		rc, info, err := s.Get(ctx, "acme/empty", blob.Range{})
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got := readAll(t, rc); got != "" || info.Size != 0 {
			t.Errorf("Get = %q, size %d", got, info.Size)
		}
		if _, _, err := s.Get(ctx, "acme/empty", blob.Range{Offset: 1}); !errors.Is(err, blob.ErrInvalidRange) {
			t.Errorf("range past the end of an empty object = %v, want ErrInvalidRange", err)
		}
	})

	t.Run("put replaces the object and its metadata", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		if _, err := s.Put(ctx, "acme/k", strings.NewReader("first version"), map[string]string{"v": "1", "old": "x"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "acme/k", strings.NewReader("2nd"), map[string]string{"v": "2"}); err != nil {
			t.Fatal(err)
		}
		rc, info, err := s.Get(ctx, "acme/k", blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, rc); got != "2nd" || info.Size != 3 || !mapsEqual(info.Metadata, map[string]string{"v": "2"}) {
			t.Errorf("after replace: %q, %+v", got, info)
		}
	})

	t.Run("a failed put leaves the old object whole", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		if _, err := s.Put(ctx, "acme/k", strings.NewReader("old content"), nil); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("source broke")
		src := io.MultiReader(strings.NewReader(strings.Repeat("new", 1000)), errReader{boom})
		if _, err := s.Put(ctx, "acme/k", src, nil); err == nil {
			t.Fatal("Put from a failing reader succeeded")
		}
		if _, err := s.Put(ctx, "acme/never", io.MultiReader(strings.NewReader("partial"), errReader{boom}), nil); err == nil {
			t.Fatal("Put from a failing reader succeeded")
		}
		rc, _, err := s.Get(ctx, "acme/k", blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, rc); got != "old content" {
			t.Errorf("after a failed put: %q", got)
		}
		if _, err := s.Stat(ctx, "acme/never"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("a failed put left an object: %v", err)
		}
		for info, err := range s.List(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			if info.Key != "acme/k" {
				t.Errorf("a failed put left %q", info.Key)
			}
		}
	})

	t.Run("ranges", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		const content = "0123456789abcdefghij"
		if _, err := s.Put(ctx, "acme/r", strings.NewReader(content), nil); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name    string
			rng     blob.Range
			want    string
			wantErr error
		}{
			{"whole", blob.Range{}, content, nil},
			{"from an offset to the end", blob.Range{Offset: 15}, "fghij", nil},
			{"offset and length", blob.Range{Offset: 3, Length: 4}, "3456", nil},
			{"first byte", blob.Range{Length: 1}, "0", nil},
			{"last byte", blob.Range{Offset: 19, Length: 1}, "j", nil},
			{"length past the end is cut", blob.Range{Offset: 18, Length: 100}, "ij", nil},
			{"offset at the end", blob.Range{Offset: 20}, "", blob.ErrInvalidRange},
			{"offset past the end", blob.Range{Offset: 25, Length: 2}, "", blob.ErrInvalidRange},
			{"negative offset", blob.Range{Offset: -1}, "", blob.ErrInvalidRange},
			{"negative length", blob.Range{Offset: 1, Length: -1}, "", blob.ErrInvalidRange},
		}
		for _, c := range cases {
			rc, info, err := s.Get(ctx, "acme/r", c.rng)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Errorf("%s: err = %v, want %v", c.name, err, c.wantErr)
				}
				if rc != nil {
					rc.Close()
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if got := readAll(t, rc); got != c.want || info.Size != int64(len(content)) {
				t.Errorf("%s: got %q (size %d), want %q", c.name, got, info.Size, c.want)
			}
		}
	})

	t.Run("missing keys are ErrNotFound", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		if _, err := s.Stat(ctx, "acme/none"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat = %v, want ErrNotFound", err)
		}
		if _, _, err := s.Get(ctx, "acme/none", blob.Range{}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get = %v, want ErrNotFound", err)
		}
		if _, _, err := s.Get(ctx, "acme/none", blob.Range{Offset: 5, Length: 2}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("ranged Get = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "acme/none"); err != nil {
			t.Errorf("Delete of a missing key = %v, want nil", err)
		}
		// a "directory" of other keys is not an object
		if _, err := s.Put(ctx, "acme/files/f1", strings.NewReader("x"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "acme/files"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat of a key prefix = %v, want ErrNotFound", err)
		}
	})

	t.Run("delete removes the object and only it", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		for _, k := range []string{"acme/files/f1", "acme/files/f2"} {
			if _, err := s.Put(ctx, k, strings.NewReader(k), map[string]string{"m": "v"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, "acme/files/f1"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, _, err := s.Get(ctx, "acme/files/f1", blob.Range{}); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Get after Delete = %v", err)
		}
		if _, err := s.Stat(ctx, "acme/files/f1"); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after Delete = %v", err)
		}
		if err := s.Delete(ctx, "acme/files/f1"); err != nil {
			t.Errorf("second Delete = %v", err)
		}
		if got := listKeys(t, s, "acme/"); !slices.Equal(got, []string{"acme/files/f2"}) {
			t.Errorf("List after Delete = %q", got)
		}
	})

	t.Run("list by prefix in key order", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		keys := []string{"b/x", "a/files/2", "a/files/1", "a/batches/1", "ab/files/1", "a-b", "a/files/1-part", "a/files/10"}
		for i, k := range keys {
			if _, err := s.Put(ctx, k, strings.NewReader(strings.Repeat("x", i)), nil); err != nil {
				t.Fatalf("Put %s: %v", k, err)
			}
		}
		cases := []struct {
			prefix string
			want   []string
		}{
			{"", []string{"a-b", "a/batches/1", "a/files/1", "a/files/1-part", "a/files/10", "a/files/2", "ab/files/1", "b/x"}},
			{"a/", []string{"a/batches/1", "a/files/1", "a/files/1-part", "a/files/10", "a/files/2"}},
			{"a", []string{"a-b", "a/batches/1", "a/files/1", "a/files/1-part", "a/files/10", "a/files/2", "ab/files/1"}},
			{"a/files/1", []string{"a/files/1", "a/files/1-part", "a/files/10"}},
			{"a/files/", []string{"a/files/1", "a/files/1-part", "a/files/10", "a/files/2"}},
			{"a/fi", []string{"a/files/1", "a/files/1-part", "a/files/10", "a/files/2"}},
			{"zzz", nil},
			{"zzz/", nil},
		}
		for _, c := range cases {
			if got := listKeys(t, s, c.prefix); !slices.Equal(got, c.want) {
				t.Errorf("List(%q) = %q, want %q", c.prefix, got, c.want)
			}
		}
		for info, err := range s.List(ctx, "a/files/2") {
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != 1 || info.Created.IsZero() {
				t.Errorf("List info = %+v, want size 1 and a creation time", info)
			}
		}
		// stopping early is allowed
		for _, err := range s.List(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	})

	t.Run("keys that could leave the store are refused", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		bad := []string{
			"", "/etc/passwd", "../escape", "acme/../../escape", "acme/..", "..", ".", "acme/./x",
			"acme//x", "acme/", "/", "acme/nul\x00byte", "acme\\..\\x", "acme/\nnewline",
			strings.Repeat("a", blob.MaxKeyLen+1), "acme/\xff\xfe", "acme/" + strings.Repeat("s", blob.MaxSegmentLen+1),
		}
		for _, k := range bad {
			if _, err := s.Put(ctx, k, strings.NewReader("x"), nil); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Put(%q) = %v, want ErrInvalidKey", k, err)
			}
			if _, _, err := s.Get(ctx, k, blob.Range{}); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Get(%q) = %v, want ErrInvalidKey", k, err)
			}
			if _, err := s.Stat(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Stat(%q) = %v, want ErrInvalidKey", k, err)
			}
			if err := s.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("Delete(%q) = %v, want ErrInvalidKey", k, err)
			}
		}
		for _, p := range []string{"../", "/", "acme/../", "a\x00"} {
			var err error
			for _, e := range s.List(ctx, p) {
				err = e
			}
			if !errors.Is(err, blob.ErrInvalidKey) {
				t.Errorf("List(%q) = %v, want ErrInvalidKey", p, err)
			}
		}
		if got := listKeys(t, s, ""); len(got) != 0 {
			t.Errorf("refused keys stored something: %q", got)
		}
		// the longest valid key is accepted
		seg := strings.Repeat("k", blob.MaxSegmentLen)
		long := strings.Repeat(seg+"/", 4) + strings.Repeat("l", blob.MaxKeyLen-4*(blob.MaxSegmentLen+1))
		if _, err := s.Put(ctx, long, strings.NewReader("x"), nil); err != nil {
			t.Errorf("Put of a %d-byte key: %v", len(long), err)
		}
	})

	t.Run("metadata a store cannot keep is refused", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		for _, md := range []map[string]string{
			{"Upper": "x"}, {"with space": "x"}, {"": "x"}, {"k": "caf\u00e9"}, {"k": "line\nbreak"},
			{"k": strings.Repeat("v", blob.MaxMetadataLen)},
		} {
			if _, err := s.Put(ctx, "acme/md", strings.NewReader("x"), md); !errors.Is(err, blob.ErrInvalidMetadata) {
				t.Errorf("Put with metadata %q = %v, want ErrInvalidMetadata", md, err)
			}
		}
	})

	t.Run("concurrent puts", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		const writers = 8
		versions := make([]string, writers)
		for i := range versions {
			versions[i] = strings.Repeat(fmt.Sprintf("writer %d ", i), 2000+i)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*writers)
		for i := range writers {
			wg.Go(func() {
				if _, err := s.Put(ctx, "acme/same", strings.NewReader(versions[i]), map[string]string{"w": fmt.Sprint(i)}); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				k := fmt.Sprintf("acme/own/%d", i)
				if _, err := s.Put(ctx, k, strings.NewReader(versions[i]), nil); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent Put: %v", err)
		}
		rc, info, err := s.Get(ctx, "acme/same", blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, rc)
		w := info.Metadata["w"]
		if !slices.Contains(versions, got) || versions[atoi(w)] != got {
			t.Errorf("concurrent puts to one key left %d bytes that are no single writer's (metadata w=%q)", len(got), w)
		}
		for i := range writers {
			rc, _, err := s.Get(ctx, fmt.Sprintf("acme/own/%d", i), blob.Range{})
			if err != nil {
				t.Fatal(err)
			}
			if readAll(t, rc) != versions[i] {
				t.Errorf("acme/own/%d has the wrong content", i)
			}
		}
	})

	t.Run("a large stream of unknown length", func(t *testing.T) {
		t.Parallel()
		s, ctx := open(t), t.Context()
		const size = 13<<20 + 12345 // more than two S3 multipart parts
		sum := sha256.New()
		if _, err := io.Copy(sum, NewPattern(7, size)); err != nil {
			t.Fatal(err)
		}
		info, err := s.Put(ctx, "acme/big", NewPattern(7, size), nil)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if info.Size != size {
			t.Errorf("Put size = %d, want %d", info.Size, size)
		}
		rc, _, err := s.Get(ctx, "acme/big", blob.Range{})
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		if _, err := io.Copy(got, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if !bytes.Equal(got.Sum(nil), sum.Sum(nil)) {
			t.Error("the large object came back different")
		}
		// a range across the boundary of the first 5 MiB part
		const off, n = 5<<20 - 100, 300
		want := PatternBytes(7, size, off, n)
		rc, _, err = s.Get(ctx, "acme/big", blob.Range{Offset: off, Length: n})
		if err != nil {
			t.Fatal(err)
		}
		if g := readAll(t, rc); g != string(want) {
			t.Error("a range across a part boundary came back different")
		}
	})
}

func checkInfo(t *testing.T, op string, got blob.Info, key string, size int64, md map[string]string, before, after time.Time) {
	t.Helper()
	if got.Key != key || got.Size != size || !mapsEqual(got.Metadata, md) {
		t.Errorf("%s info = %+v, want key %s, size %d, metadata %v", op, got, key, size, md)
	}
	// S3 keeps whole seconds
	if got.Created.Before(before.Add(-2*time.Second)) || got.Created.After(after.Add(2*time.Second)) {
		t.Errorf("%s created = %v, want between %v and %v", op, got.Created, before, after)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func readAll(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return string(b)
}

func listKeys(t *testing.T, s blob.Store, prefix string) []string {
	t.Helper()
	var out []string
	for info, err := range s.List(t.Context(), prefix) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		out = append(out, info.Key)
	}
	return out
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
