// Package batches is the Batch API of the app surface (OpenAI's and
// Azure OpenAI's): thin, it validates a request, checks that the caller
// owns what it names, and publishes to the batch service, which does the
// work. A batch's metadata is a record of the compacted batches stream
// of the resource's home geography, which ingress writes once when the
// batch is created and the batch service afterwards; every ingress
// instance materialises the stream and answers retrieve and list from
// it. A resource sees only its own batches; another resource's batch IDs
// are 404 to it.
package batches

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// DefaultMaxEnqueuedTokens is the default enqueued-token limit of a
// resource: Azure's enterprise quota of Global Batch for gpt-4o.
const DefaultMaxEnqueuedTokens = 5_000_000_000

// Config is what the Batch API needs.
type Config struct {
	Bus *bus.Bus
	// Geos are the geographies served: a batches table is read for each.
	Geos []string
	// Files finds a batch's input file.
	Files *filestore.Store
	// MaxBody bounds a create request's body, in bytes.
	MaxBody int64
	// MaxEnqueuedTokens bounds the estimated input tokens of a
	// resource's unfinished batches; a create past it fails at once
	// (Azure's "fail fast").
	MaxEnqueuedTokens int64
	Log               *zap.Logger
	Now               func() time.Time
}

// Service serves the Batch API.
type Service struct {
	cfg    Config
	view   *view
	tables map[string]*bus.Table
	// creating serialises this instance's creates, so two of them cannot
	// both pass the enqueued-token limit with room for one. Instances do
	// not coordinate: the limit may be passed by what they create at the
	// same moment.
	creating sync.Mutex
}

// New starts reading the batches streams of cfg.Geos.
func New(cfg Config) (*Service, error) {
	if cfg.Bus == nil || len(cfg.Geos) == 0 || cfg.Files == nil || cfg.Log == nil || cfg.MaxBody <= 0 || cfg.MaxEnqueuedTokens <= 0 {
		return nil, errors.New("batches: bus, geographies, files, logger, body limit and enqueued-token limit are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Log = cfg.Log.Named("batches")
	s := &Service{cfg: cfg, view: newView(cfg.Log), tables: map[string]*bus.Table{}}
	for _, g := range cfg.Geos {
		t, err := cfg.Bus.NewTable(g, bus.StreamBatches, s.view.apply)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.tables[g] = t
	}
	return s, nil
}

// Close stops reading the batches streams. It is idempotent.
func (s *Service) Close() {
	for _, t := range s.tables {
		t.Close()
	}
}

// Handler is an endpoint of the Batch API, called once its caller was
// authenticated; azure is set on the /openai/ paths with an api-version
// (Azure's answers: 201 for a create from api-version
// 2025-04-01-preview, the enqueued-token headers on a list, no model),
// not on /v1 and /openai/v1 (OpenAI's).
type Handler func(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error

// Endpoints maps "METHOD path" under the paths' root (such as
// "POST /batches") to its handler. s may be nil to list them.
func (s *Service) Endpoints() map[string]Handler {
	return map[string]Handler{
		"POST /batches":                   s.create,
		"GET /batches":                    s.list,
		"GET /batches/{batch_id}":         s.retrieve,
		"POST /batches/{batch_id}/cancel": s.cancel,
	}
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "batch_" + hex.EncodeToString(b)
}

func (s *Service) sync(ctx context.Context, geo string) error {
	t, ok := s.tables[geo]
	if !ok {
		return fmt.Errorf("batches: geography %q is not served here", geo)
	}
	return t.Sync(ctx)
}

func notFound(id string) error {
	return apierr.NotFound("batch_not_found", "No batch found with id %s.", id)
}

// lookup finds the caller's batch named in the path. A miss first
// catches up with the stream, so a batch another instance just created
// is found.
func (s *Service) lookup(ctx context.Context, r *http.Request, res control.Resource) (events.BatchObject, error) {
	id := r.PathValue("batch_id")
	if b, ok := s.view.get(res.Name, id); ok {
		return b, nil
	}
	if err := s.sync(ctx, res.Location); err != nil {
		return events.BatchObject{}, err
	}
	if b, ok := s.view.get(res.Name, id); ok {
		return b, nil
	}
	return events.BatchObject{}, notFound(id)
}

// publishError maps a failure to publish for res to the client's error.
func publishError(res control.Resource, what string, err error) error {
	switch {
	case errors.Is(err, keys.ErrShredded):
		// Deleted while this request was on its way: nothing was sealed.
		return apierr.Gone("ResourceDeleted", "resource %q was deleted", res.Name)
	case errors.Is(err, keys.ErrResourceGone):
		return apierr.NotFound("ResourceNotFound", "resource %q not found", res.Name)
	}
	return fmt.Errorf("publishing %s: %w", what, err)
}

func (s *Service) retrieve(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error {
	b, err := s.lookup(r.Context(), r, res)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, openai.NewBatch(b, azure))
}

// list answers GET /batches: the caller's batches, newest first, after
// the cursor batch, at most limit (1 to 100, default 20).
func (s *Service) list(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return apierr.Invalid("limit", "limit must be a whole number from 1 to 100")
		}
		limit = n
	}
	if err := s.sync(r.Context(), res.Location); err != nil {
		return err
	}
	all := s.view.list(res.Name)
	if after := q.Get("after"); after != "" {
		i := -1
		for j, b := range all {
			if b.ID == after {
				i = j
				break
			}
		}
		if i < 0 {
			return apierr.Invalid("after", "after names no batch of this list: %s", after)
		}
		all = all[i+1:]
	}
	more := len(all) > limit
	if more {
		all = all[:limit]
	}
	data := make([]openai.Batch, len(all))
	for i, b := range all {
		data[i] = openai.NewBatch(b, azure)
	}
	out := map[string]any{"object": "list", "data": data, "has_more": more, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	if azure {
		w.Header().Set("deployment-enqueued-tokens", strconv.FormatInt(s.view.enqueued(res.Name), 10))
		w.Header().Set("deployment-maximum-enqueued-tokens", strconv.FormatInt(s.cfg.MaxEnqueuedTokens, 10))
	}
	return writeJSON(w, http.StatusOK, out)
}

// cancel asks the batch service to stop a batch that has not ended, and
// answers the batch as cancelling; the batch service writes that record
// (and, once the lines in flight are done, the cancelled one) itself.
func (s *Service) cancel(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error {
	ctx := r.Context()
	b, err := s.lookup(ctx, r, res)
	if err != nil {
		return err
	}
	if b.Status.Terminal() {
		return &apierr.Error{Status: http.StatusBadRequest, Type: apierr.TypeInvalidRequest, Code: "batch_not_cancellable",
			Message: fmt.Sprintf("Cannot cancel a batch with status %s.", b.Status)}
	}
	if b.Status != events.BatchCancelling {
		now := s.cfg.Now().UTC()
		cmd := events.BatchCommand{Action: events.BatchActionCancel, Resource: res.Name, HomeGeo: res.Location, BatchID: b.ID, At: now}
		meta := bus.Meta{Key: recordKey(res.Name, b.ID), RequestID: b.ID, Resource: res.Name, HomeGeo: res.Location}
		if err := s.cfg.Bus.Publish(ctx, res.Location, bus.StreamBatchJobs, meta, cmd); err != nil {
			return publishError(res, "the cancel of batch "+b.ID, err)
		}
		b.Status, b.CancellingAt = events.BatchCancelling, &now
		s.cfg.Log.Info("batch cancel requested", zap.String("request_id", r.Header.Get("x-request-id")), zap.String("resource", res.Name),
			zap.String("batch", b.ID))
	}
	return writeJSON(w, http.StatusOK, openai.NewBatch(b, azure))
}

// DeleteResource deletes every batch record of res (tombstones). The
// management API calls it before it deletes the resource, so a resource
// created anew under the name starts with no batches; a record the batch
// service writes for one of them afterwards is sealed under the
// resource's shredded key, and every view drops it as unreadable.
func (s *Service) DeleteResource(ctx context.Context, res control.Resource) error {
	if err := s.sync(ctx, res.Location); err != nil {
		return err
	}
	for _, id := range s.view.ids(res.Name) {
		if err := s.cfg.Bus.Tombstone(ctx, res.Location, bus.StreamBatches, recordKey(res.Name, id)); err != nil {
			return fmt.Errorf("deleting the batches of %s: %w", res.Name, err)
		}
	}
	return s.sync(ctx, res.Location)
}
