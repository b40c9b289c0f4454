// Package files is the Files API of the app surface, the HTTP half over
// pkg/filestore: multipart uploads streamed, sealed, into the blob store
// of the resource's home geography, size limits, the wire shapes of
// OpenAI and Azure, and the handlers. File metadata is kept by filestore
// as records of that geography's compacted files stream, which every
// ingress instance materialises. A resource sees only its own files;
// another resource's file IDs are 404 to it.
package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// Default size limits of an uploaded file, as OpenAI's: 200 MB for a
// batch input, 512 MB for any other.
const (
	DefaultMaxBatchBytes = 200 << 20
	DefaultMaxBytes      = 512 << 20
)

// Config is what the Files API needs.
type Config struct {
	// Store keeps the files: content and records.
	Store *filestore.Store
	// MaxBatchBytes bounds a file of purpose batch, MaxBytes any other.
	MaxBatchBytes, MaxBytes int64
	// ReadTimeout bounds each read of an upload's body (a whole upload
	// may take longer than the server's read timeout, a stalled one not).
	ReadTimeout time.Duration
	Log         *zap.Logger
}

// Service serves the Files API.
type Service struct {
	cfg   Config
	store *filestore.Store
}

// New returns the Files API over cfg.Store.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Log == nil || cfg.MaxBytes <= 0 || cfg.MaxBatchBytes <= 0 || cfg.ReadTimeout <= 0 {
		return nil, errors.New("files: store, logger, size limits and read timeout are required")
	}
	cfg.Log = cfg.Log.Named("files")
	return &Service{cfg: cfg, store: cfg.Store}, nil
}

// Handler is an endpoint of the Files API, called once its caller was
// authenticated; azure is set on the /openai/ paths with an api-version
// (Azure's answers: 201 and Location for an upload, Azure's expiry
// bounds), not on /v1 and /openai/v1 (OpenAI's).
type Handler func(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error

// Endpoints maps "METHOD path" under the paths' root (such as
// "POST /files") to its handler. s may be nil to list them.
func (s *Service) Endpoints() map[string]Handler {
	return map[string]Handler{
		"POST /files":                  s.upload,
		"GET /files":                   s.list,
		"GET /files/{file_id}":         s.retrieve,
		"DELETE /files/{file_id}":      s.delete,
		"GET /files/{file_id}/content": s.content,
	}
}

// fileJSON is a file object on the wire: OpenAI's, with Azure's status.
type fileJSON struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details,omitempty"`
	ExpiresAt     *int64  `json:"expires_at,omitempty"`
}

func wire(f events.FileObject) fileJSON {
	out := fileJSON{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(), Filename: f.Filename,
		Purpose: string(f.Purpose), Status: string(f.Status)}
	if f.StatusDetails != "" {
		out.StatusDetails = &f.StatusDetails
	}
	if f.ExpiresAt != nil {
		e := f.ExpiresAt.Unix()
		out.ExpiresAt = &e
	}
	return out
}

func notFound(id string) error {
	return apierr.NotFound("not_found", "No such File object: %s", id)
}

// lookup finds the caller's file named in the path. A miss first catches
// up with the stream, so a file another instance just wrote is found.
func (s *Service) lookup(ctx context.Context, r *http.Request, res control.Resource) (events.FileObject, error) {
	id := r.PathValue("file_id")
	f, err := s.store.Get(ctx, res, id)
	if errors.Is(err, filestore.ErrNotFound) {
		return f, notFound(id)
	}
	return f, err
}

func (s *Service) retrieve(w http.ResponseWriter, r *http.Request, res control.Resource, _ bool) error {
	f, err := s.lookup(r.Context(), r, res)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, wire(f))
}

func (s *Service) content(w http.ResponseWriter, r *http.Request, res control.Resource, _ bool) error {
	f, err := s.lookup(r.Context(), r, res)
	if err != nil {
		return err
	}
	body, info, err := s.store.Open(r.Context(), f, blob.Range{})
	switch {
	case errors.Is(err, filestore.ErrNotFound):
		return notFound(f.ID)
	case errors.Is(err, blob.ErrShredded):
		return apierr.Gone("ResourceDeleted", "resource %q was deleted", res.Name)
	case err != nil:
		return err
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", fmt.Sprint(info.Size))
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, body); err != nil {
		// The status is sent: a failure now can only cut the body short.
		s.cfg.Log.Warn("file download cut short", zap.String("request_id", r.Header.Get("x-request-id")), zap.String("resource", res.Name),
			zap.String("file", f.ID), zap.Int64("bytes", n), zap.Error(err))
	}
	return nil
}

func (s *Service) delete(w http.ResponseWriter, r *http.Request, res control.Resource, _ bool) error {
	ctx := r.Context()
	f, err := s.lookup(ctx, r, res)
	if err != nil {
		return err
	}
	// The content (and its object key) goes first, then the record.
	if err := s.store.Delete(ctx, f); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": f.ID, "object": "file", "deleted": true})
}
