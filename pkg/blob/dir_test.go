package blob_test

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/blob/blobtest"
)

func TestDirContract(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestDirKeysNestUnderKeys: the directory store keeps "a/b" and "a/b/c"
// apart (key segments are directories with a suffix), unlike some S3
// servers over a file system.
func TestDirKeysNestUnderKeys(t *testing.T) {
	t.Parallel()
	s, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	for _, k := range []string{"a/b", "a/b/c", "a/b.d", "a/b.blob"} {
		if _, err := s.Put(ctx, k, strings.NewReader(k), nil); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	for _, k := range []string{"a/b", "a/b/c", "a/b.d", "a/b.blob"} {
		rc, _, err := s.Get(ctx, k, blob.Range{})
		if err != nil {
			t.Fatalf("Get %s: %v", k, err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != k {
			t.Errorf("Get %s = %q", k, b)
		}
	}
	var got []string
	for info, err := range s.List(ctx, "a/") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
	}
	if want := []string{"a/b", "a/b.blob", "a/b.d", "a/b/c"}; !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
}
