package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
)

// instance is one service's Store over a shared broker namespace and blob
// directory, as two instances of a service (or ingress and batch) run.
type instance struct {
	store *filestore.Store
	blobs *blob.Sealed
}

func newInstance(t *testing.T, c *bustest.Cluster, namespace, dir string) instance {
	t.Helper()
	b := c.Bus(t, bustest.Options{Namespace: namespace})
	d, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := blob.NewSealed(blob.NewStores(map[string]blob.Store{"eu": d, "us": d}), b.Keys())
	if err != nil {
		t.Fatal(err)
	}
	s, err := filestore.New(filestore.Config{Bus: b, Geos: []string{"eu", "us"}, Blobs: sealed, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return instance{store: s, blobs: sealed}
}

func read(t *testing.T, s *filestore.Store, f events.FileObject, rng blob.Range) string {
	t.Helper()
	body, _, err := s.Open(t.Context(), f, rng)
	if err != nil {
		t.Fatalf("Open(%s) = %v", f.ID, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServiceWrittenFileRoundTrip: a file a service creates (a batch
// output) is stored sealed, has its size and a record, is found at once
// by its writer and by another instance, reads back whole and in ranges,
// is found by its resource only, and once deleted is gone: record and
// content.
func TestServiceWrittenFileRoundTrip(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	ns, dir := bustest.Namespace(), t.TempDir()
	writer, reader := newInstance(t, c, ns, dir), newInstance(t, c, ns, dir)
	ctx := t.Context()
	acme := control.Resource{Name: "acme", Location: "eu"}
	const content = "{\"id\":\"batch_req_1\",\"custom_id\":\"canary-output-7f3a\"}\n"

	f, err := writer.store.Create(ctx, events.FileObject{Resource: acme.Name, HomeGeo: acme.Location, Purpose: events.FilePurposeBatchOutput,
		Filename: "batch_output.jsonl"}, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.ID, "file-") || f.Bytes != int64(len(content)) || f.CreatedAt.IsZero() || f.Status != events.FileStatusProcessed {
		t.Fatalf("Create = %+v", f)
	}
	// Another instance finds a file the moment its writer has it: a miss
	// catches up with the stream. Several files, each looked up at once,
	// so a lookup that did not catch up would miss one.
	for i := range 5 {
		g, err := writer.store.Create(ctx, events.FileObject{Resource: acme.Name, HomeGeo: acme.Location, Purpose: events.FilePurposeBatchOutput,
			Filename: "part.jsonl"}, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := reader.store.Get(ctx, acme, g.ID); err != nil || got.ID != g.ID {
			t.Fatalf("file %d: another instance's Get = %+v, %v", i, got, err)
		}
		if err := writer.store.Delete(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*filestore.Store{writer.store, reader.store} { // both caught up with the deletes
		if _, err := s.Get(ctx, acme, "file-none"); !errors.Is(err, filestore.ErrNotFound) {
			t.Fatal(err)
		}
	}
	for name, s := range map[string]*filestore.Store{"writer": writer.store, "another instance": reader.store} {
		got, err := s.Get(ctx, acme, f.ID)
		if err != nil || got.ID != f.ID || got.Bytes != f.Bytes || got.Purpose != events.FilePurposeBatchOutput || got.Filename != f.Filename {
			t.Fatalf("%s: Get = %+v, %v", name, got, err)
		}
		if got := read(t, s, got, blob.Range{}); got != content {
			t.Fatalf("%s: content = %q", name, got)
		}
		if got := read(t, s, got, blob.Range{Offset: 7, Length: 11}); got != content[7:18] {
			t.Fatalf("%s: bytes 7 to 17 = %q", name, got)
		}
	}
	if list, err := reader.store.List(ctx, acme, events.FilePurposeBatchOutput); err != nil || len(list) != 1 || list[0].ID != f.ID {
		t.Fatalf("List = %v, %v", list, err)
	}
	if list, err := reader.store.List(ctx, acme, events.FilePurposeBatch); err != nil || len(list) != 0 {
		t.Fatalf("List(batch) = %v, %v", list, err)
	}

	// Sealed: no stored byte is the content.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte("canary-output-7f3a")) {
			t.Errorf("%s holds the content in the clear", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Another resource, even of the same geography, finds nothing.
	for _, other := range []control.Resource{{Name: "other", Location: "eu"}, {Name: "other", Location: "us"}} {
		if _, err := reader.store.Get(ctx, other, f.ID); !errors.Is(err, filestore.ErrNotFound) {
			t.Errorf("%s/%s: Get = %v, want ErrNotFound", other.Location, other.Name, err)
		}
		if list, err := reader.store.List(ctx, other, ""); err != nil || len(list) != 0 {
			t.Errorf("%s/%s: List = %v, %v", other.Location, other.Name, list, err)
		}
	}

	if err := reader.store.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*filestore.Store{"deleter": reader.store, "the other instance": writer.store} {
		// Get and List catch up first, so the other instance, which still
		// had the file in its view, does not return it
		if _, err := s.Get(ctx, acme, f.ID); !errors.Is(err, filestore.ErrNotFound) {
			t.Errorf("%s: Get after Delete = %v, want ErrNotFound", name, err)
		}
		if list, err := s.List(ctx, acme, ""); err != nil || slices.ContainsFunc(list, func(o events.FileObject) bool { return o.ID == f.ID }) {
			t.Errorf("%s: List after Delete = %v, %v", name, list, err)
		}
		if _, _, err := s.Open(ctx, f, blob.Range{}); !errors.Is(err, filestore.ErrNotFound) {
			t.Errorf("%s: Open after Delete = %v, want ErrNotFound", name, err)
		}
	}
}

// TestCreateRefusesAnIncompleteRecord: a file without a resource, home
// geography or purpose, or homed where the store does not serve, is
// refused and stores nothing.
func TestCreateRefusesAnIncompleteRecord(t *testing.T) {
	t.Parallel()
	in := newInstance(t, bustest.New(t), bustest.Namespace(), t.TempDir())
	for _, f := range []events.FileObject{
		{HomeGeo: "eu", Purpose: events.FilePurposeBatchOutput},
		{Resource: "acme", Purpose: events.FilePurposeBatchOutput},
		{Resource: "acme", HomeGeo: "eu"},
		{Resource: "acme", HomeGeo: "jp", Purpose: events.FilePurposeBatchOutput},
	} {
		if got, err := in.store.Create(context.Background(), f, strings.NewReader("x")); err == nil {
			t.Errorf("Create(%+v) = %+v, want an error", f, got)
		}
	}
	for info, err := range in.blobs.List(t.Context(), "eu", "acme", "") {
		t.Errorf("stored %v %v", info, err)
	}
}
