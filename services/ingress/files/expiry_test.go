package files

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
)

// TestExpiredFilesAreDeleted: once a file's expires_at has passed, the
// sweep deletes its content and its record; a file without expiry stays.
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
	s, err := New(Config{Bus: b, Geos: []string{"eu"}, Blobs: sealed, MaxBytes: 1 << 20, MaxBatchBytes: 1 << 20,
		ReadTimeout: time.Minute, Log: zaptest.NewLogger(t), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	res := control.Resource{Name: "acme", Location: "eu"}
	upload := func(fields ...string) string {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("file", "a.txt")
		_, _ = fw.Write([]byte("content"))
		for i := 0; i < len(fields); i += 2 {
			_ = mw.WriteField(fields[i], fields[i+1])
		}
		_ = mw.Close()
		r := httptest.NewRequest("POST", "/v1/files", &body)
		r.Header.Set("Content-Type", mw.FormDataContentType())
		w := httptest.NewRecorder()
		if err := s.upload(w, r, res, false); err != nil || w.Code != http.StatusOK {
			t.Fatalf("upload = %d %v %s", w.Code, err, w.Body)
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(w.Body.String(), `{"id":"`), `"`)
		return id
	}
	expiring := upload("purpose", "batch", "expires_after[anchor]", "created_at", "expires_after[seconds]", "3600")
	keep := upload("purpose", "batch")

	ctx := context.Background()
	s.sweep(ctx, now.Add(30*time.Minute))
	if _, err := sealed.Stat(ctx, "eu", "acme", blobKey(expiring)); err != nil {
		t.Fatalf("a file was deleted before it expired: %v", err)
	}
	s.sweep(ctx, now.Add(2*time.Hour))
	if _, err := sealed.Stat(ctx, "eu", "acme", blobKey(expiring)); err == nil {
		t.Error("the expired file's content is still stored")
	}
	if ids := s.view.ids("acme"); len(ids) != 1 || ids[0] != keep {
		t.Errorf("files after the sweep: %v, want only %s", ids, keep)
	}
	if _, err := sealed.Stat(ctx, "eu", "acme", blobKey(keep)); err != nil {
		t.Errorf("the file without expiry lost its content: %v", err)
	}
}
