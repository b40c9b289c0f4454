package filestore

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestExpiredFilesAreDeleted: a file is not found from the moment its
// expires_at passes, and the sweep then deletes its content and its
// record; a file without expiry stays.
func TestExpiredFilesAreDeleted(t *testing.T) {
	t.Parallel()
	b := bustest.New(t).Bus(t, bustest.Options{})
	dir, err := blob.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := blob.NewSealed(blob.NewStores(map[string]blob.Store{"eu": dir}), b.Keys())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	s, err := New(Config{Bus: b, Geos: []string{"eu"}, Blobs: sealed, Log: zaptest.NewLogger(t), Now: func() time.Time { return clock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	res := control.Resource{Name: "acme", Location: "eu"}
	create := func(expires *time.Time) string {
		f, err := s.Create(ctx, events.FileObject{Resource: res.Name, HomeGeo: res.Location, Purpose: events.FilePurposeBatch, Filename: "a.txt",
			ExpiresAt: expires}, strings.NewReader("content"))
		if err != nil {
			t.Fatal(err)
		}
		return f.ID
	}
	in := now.Add(time.Hour)
	expiring := create(&in)
	keep := create(nil)

	s.sweep(ctx, now.Add(30*time.Minute))
	if _, err := sealed.Stat(ctx, "eu", "acme", BlobKey(expiring)); err != nil {
		t.Fatalf("a file was deleted before it expired: %v", err)
	}
	if _, err := s.Get(ctx, res, expiring); err != nil {
		t.Fatalf("a file is not found before it expired: %v", err)
	}
	later := now.Add(time.Hour)
	clock = func() time.Time { return later }
	if _, err := s.Get(ctx, res, expiring); err != ErrNotFound {
		t.Fatalf("Get of an expired file before the sweep = %v, want ErrNotFound", err)
	}
	if list, err := s.List(ctx, res, ""); err != nil || len(list) != 1 || list[0].ID != keep {
		t.Fatalf("List before the sweep = %v, %v", list, err)
	}
	s.sweep(ctx, now.Add(2*time.Hour))
	if _, err := sealed.Stat(ctx, "eu", "acme", BlobKey(expiring)); err == nil {
		t.Error("the expired file's content is still stored")
	}
	if ids := s.view.ids("acme"); len(ids) != 1 || ids[0] != keep {
		t.Errorf("files after the sweep: %v, want only %s", ids, keep)
	}
	if _, err := sealed.Stat(ctx, "eu", "acme", BlobKey(keep)); err != nil {
		t.Errorf("the file without expiry lost its content: %v", err)
	}
}
