package batches

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// completionWindow is the only completion window there is.
const completionWindow = "24h"

// Bounds of metadata, as OpenAI's.
const (
	maxMetadataPairs = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
)

// Bounds of output_expires_after.seconds: OpenAI's and Azure's.
var (
	openAIExpiry = [2]int64{3600, 2592000}
	azureExpiry  = [2]int64{1209600, 2592000}
)

// created201 is the first api-version whose create answers 201 (the
// 2024-10-21 specification says 200).
const created201 = "2025-04-01"

// operations maps the endpoints a batch may call, OpenAI's and Azure's
// names, to their operation.
var operations = map[string]events.Operation{
	"/v1/chat/completions": events.OperationChatCompletions,
	"/v1/completions":      events.OperationCompletions,
	"/v1/embeddings":       events.OperationEmbeddings,
	"/chat/completions":    events.OperationChatCompletions,
	"/completions":         events.OperationCompletions,
	"/embeddings":          events.OperationEmbeddings,
}

// createRequest is the body of POST /batches.
type createRequest struct {
	InputFileID        string            `json:"input_file_id"`
	Endpoint           string            `json:"endpoint"`
	CompletionWindow   string            `json:"completion_window"`
	Metadata           map[string]string `json:"metadata"`
	OutputExpiresAfter *struct {
		Anchor  string `json:"anchor"`
		Seconds *int64 `json:"seconds"`
	} `json:"output_expires_after"`
}

// validate checks req and returns its operation and output expiry.
func (req *createRequest) validate(azure bool) (events.Operation, int64, error) {
	if req.InputFileID == "" {
		return "", 0, apierr.Invalid("input_file_id", "input_file_id is required: the ID of a file of purpose batch")
	}
	allowed := slices.Sorted(maps.Keys(operations))
	if req.Endpoint == "" {
		return "", 0, apierr.Invalid("endpoint", "endpoint is required: one of %s", strings.Join(allowed, ", "))
	}
	op, ok := operations[req.Endpoint]
	if !ok {
		return "", 0, apierr.Invalid("endpoint", "endpoint %q is not supported in a batch: use one of %s", quoted(req.Endpoint), strings.Join(allowed, ", "))
	}
	if req.CompletionWindow != completionWindow {
		return "", 0, apierr.Invalid("completion_window", "completion_window must be %s", completionWindow)
	}
	if len(req.Metadata) > maxMetadataPairs {
		return "", 0, apierr.Invalid("metadata", "metadata holds %d pairs; at most %d are allowed", len(req.Metadata), maxMetadataPairs)
	}
	for k, v := range req.Metadata {
		if utf8.RuneCountInString(k) > maxMetadataKey {
			return "", 0, apierr.Invalid("metadata", "a metadata key is longer than %d characters", maxMetadataKey)
		}
		if utf8.RuneCountInString(v) > maxMetadataValue {
			return "", 0, apierr.Invalid("metadata", "the metadata value of %q is longer than %d characters", quoted(k), maxMetadataValue)
		}
	}
	var expiry int64
	if e := req.OutputExpiresAfter; e != nil {
		if e.Anchor != "created_at" {
			return "", 0, apierr.Invalid("output_expires_after.anchor", "output_expires_after.anchor must be created_at")
		}
		bounds := openAIExpiry
		if azure {
			bounds = azureExpiry
		}
		if e.Seconds == nil || *e.Seconds < bounds[0] || *e.Seconds > bounds[1] {
			return "", 0, apierr.Invalid("output_expires_after.seconds", "output_expires_after.seconds must be a whole number of seconds from %d to %d",
				bounds[0], bounds[1])
		}
		expiry = *e.Seconds
	}
	return op, expiry, nil
}

// quoted cuts a value the caller sent to a length fit for a message.
func quoted(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// tokenLimitExceeded is Azure's "fail fast" refusal of a batch whose
// input would pass the enqueued-token limit.
func tokenLimitExceeded(estimate, enqueued, limit int64) error {
	return &apierr.Error{Status: http.StatusBadRequest, Type: apierr.TypeInvalidRequest, Code: "token_limit_exceeded",
		Message: fmt.Sprintf("This batch's input (about %d tokens) and the %d tokens enqueued by this resource's unfinished batches exceed the enqueued token limit of %d tokens. Retry once a batch has finished.",
			estimate, enqueued, limit)}
}

// create validates a batch, checks its input file and the enqueued-token
// limit, writes the batch's first record (and answers once this
// instance's view has it), then asks the batch service to run it.
func (s *Service) create(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error {
	ctx := r.Context()
	raw, err := apierr.ReadBody(w, r, s.cfg.MaxBody)
	if err != nil {
		return err
	}
	var req createRequest
	if err := apierr.DecodeBytes(raw, &req); err != nil {
		return err
	}
	op, expiry, err := req.validate(azure)
	if err != nil {
		return err
	}
	f, err := s.cfg.Files.Get(ctx, res, req.InputFileID)
	if errors.Is(err, filestore.ErrNotFound) {
		// The same answer for another resource's file as for none.
		return &apierr.Error{Status: http.StatusNotFound, Type: apierr.TypeNotFound, Code: "not_found", Param: "input_file_id",
			Message: fmt.Sprintf("No such File object: %s", quoted(req.InputFileID))}
	}
	if err != nil {
		return err
	}
	if f.Purpose != events.FilePurposeBatch {
		return apierr.Invalid("input_file_id", "file %s has purpose %s; a batch reads a file of purpose batch", f.ID, f.Purpose)
	}
	flavor := events.APIFlavorOpenAI
	if azure {
		flavor = events.APIFlavorAzure
	}
	// The input's size bounds its tokens: about four bytes each.
	estimate := f.Bytes / 4

	s.creating.Lock()
	defer s.creating.Unlock()
	if err := s.sync(ctx, res.Location); err != nil {
		return err
	}
	if enqueued := s.view.enqueued(res.Name); estimate+enqueued > s.cfg.MaxEnqueuedTokens {
		return tokenLimitExceeded(estimate, enqueued, s.cfg.MaxEnqueuedTokens)
	}
	now := s.cfg.Now().UTC()
	b := events.BatchObject{ID: newID(), Resource: res.Name, HomeGeo: res.Location, Endpoint: req.Endpoint, Operation: op, APIFlavor: flavor,
		Source: events.BatchSourceAPI, InputFileID: f.ID, CompletionWindow: completionWindow, Status: events.BatchValidating,
		Metadata: req.Metadata, OutputExpiresAfter: expiry, EnqueuedTokens: estimate, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	if len(b.Metadata) == 0 {
		b.Metadata = nil
	}
	meta := bus.Meta{Key: recordKey(res.Name, b.ID), RequestID: b.ID, Resource: res.Name, HomeGeo: res.Location}
	sent := s.cfg.Bus.PublishAsync(ctx, res.Location, bus.StreamBatches, meta, b)
	if err := sent.Wait(); err != nil {
		return publishError(res, "batch "+b.ID, err)
	}
	part, off := sent.Written()
	if err := s.tables[res.Location].WaitFor(ctx, part, off); err != nil {
		return err
	}
	cmd := events.BatchCommand{Action: events.BatchActionCreate, Resource: res.Name, HomeGeo: res.Location, BatchID: b.ID, Batch: &b, At: now}
	if err := s.cfg.Bus.Publish(ctx, res.Location, bus.StreamBatchJobs, meta, cmd); err != nil {
		// Without its command nobody would ever run the batch: take the
		// record back, so the app's retry is the only batch.
		if terr := s.cfg.Bus.Tombstone(context.WithoutCancel(ctx), res.Location, bus.StreamBatches, meta.Key); terr != nil {
			s.cfg.Log.Error("taking back the record of a batch whose command failed", zap.String("resource", res.Name),
				zap.String("batch", b.ID), zap.Error(terr))
		}
		return publishError(res, "the create command of batch "+b.ID, err)
	}
	s.cfg.Log.Info("batch created", zap.String("request_id", r.Header.Get("x-request-id")), zap.String("resource", res.Name),
		zap.String("batch", b.ID), zap.String("file", f.ID), zap.String("operation", string(op)), zap.Int64("enqueued_tokens", estimate))
	status := http.StatusOK
	if azure && apiVersionDate(r) >= created201 {
		status = http.StatusCreated
	}
	return writeJSON(w, status, openai.NewBatch(b, azure))
}

// apiVersionDate is the date part of the request's api-version
// ("2025-04-01" of "2025-04-01-preview").
func apiVersionDate(r *http.Request) string {
	v := r.URL.Query().Get("api-version")
	if len(v) > len("2006-01-02") {
		v = v[:len("2006-01-02")]
	}
	return v
}
