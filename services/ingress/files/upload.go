package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// multipartSlack is what a multipart body may carry besides the file's
// bytes (boundaries, part headers, the other fields) before a
// Content-Length over the limit is refused unread.
const multipartSlack = 64 << 10

// maxFieldBytes bounds a form field other than the file.
const maxFieldBytes = 1 << 10

// maxFilename bounds a filename, in bytes.
const maxFilename = 255

// Expiry bounds of expires_after[seconds]: OpenAI's and Azure's.
var (
	openAIExpiry = [2]int64{3600, 2592000}
	azureExpiry  = [2]int64{1209600, 2592000}
)

// DefaultBatchExpiry is how long an input file of purpose batch lives
// when its upload sets no expires_after, on the OpenAI paths (OpenAI's
// default; Azure keeps such files until deleted).
const DefaultBatchExpiry = 30 * 24 * time.Hour

var errTooLarge = errors.New("the file is larger than its limit")

// limitReader fails with errTooLarge once more than max bytes were read,
// and puts a read deadline before each read of the body.
type limitReader struct {
	r       io.Reader
	n, max  int64
	rc      *http.ResponseController
	timeout time.Duration
	err     error // the body's own failure, if reading it failed
}

func (l *limitReader) Read(p []byte) (int, error) {
	_ = l.rc.SetReadDeadline(time.Now().Add(l.timeout))
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, errTooLarge
	}
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

func (s *Service) limit(p events.FilePurpose) int64 {
	if p == events.FilePurposeBatch {
		return s.cfg.MaxBatchBytes
	}
	return s.cfg.MaxBytes
}

func tooLarge(limit int64) error {
	return &apierr.Error{Status: http.StatusRequestEntityTooLarge, Type: apierr.TypeInvalidRequest, Code: "file_too_large", Param: "file",
		Message: fmt.Sprintf("the file is larger than the limit of %d bytes for its purpose", limit)}
}

func parsePurpose(v string) (events.FilePurpose, error) {
	p := events.FilePurpose(v)
	if slices.Contains(events.UploadPurposes, p) {
		return p, nil
	}
	allowed := make([]string, len(events.UploadPurposes))
	for i, u := range events.UploadPurposes {
		allowed[i] = string(u)
	}
	if v == "" {
		return "", apierr.Invalid("purpose", "purpose is required: one of %s", strings.Join(allowed, ", "))
	}
	return "", apierr.Invalid("purpose", "purpose %q cannot be uploaded: use one of %s", v, strings.Join(allowed, ", "))
}

// readError maps a failure to read the body to the client's error.
func readError(err error) error {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return &apierr.Error{Status: http.StatusRequestTimeout, Type: apierr.TypeInvalidRequest, Code: "request_timeout", Param: "file",
			Message: "the upload stalled past the server's read timeout"}
	}
	return apierr.Invalid("file", "reading the multipart body failed: send multipart/form-data with the fields file and purpose")
}

// upload streams the multipart field file into the blob store of the
// caller's home geography as it arrives (never buffered whole), then
// publishes the file's record and answers once this instance has applied
// it.
func (s *Service) upload(w http.ResponseWriter, r *http.Request, res control.Resource, azure bool) error {
	ctx := r.Context()
	reqID := r.Header.Get("x-request-id")
	maxAny := max(s.cfg.MaxBytes, s.cfg.MaxBatchBytes)
	if r.ContentLength > maxAny+multipartSlack {
		return tooLarge(maxAny)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		return apierr.Invalid("file", "send the file as multipart/form-data with the fields file and purpose")
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return apierr.Invalid("file", "send the file as multipart/form-data with the fields file and purpose")
	}
	var (
		purpose            events.FilePurpose
		purposeSet, stored bool
		anchor, seconds    string
		filename           string
		size               int64
		created            time.Time
		f                  = events.FileObject{ID: filestore.NewID(), Resource: res.Name, HomeGeo: res.Location}
		rc                 = http.NewResponseController(w)
		discard            = func() {}
	)
	// Whatever fails after the content was stored deletes it again.
	defer func() { discard() }()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return readError(err)
		}
		name := part.FormName()
		if name == "file" {
			if stored {
				return apierr.Invalid("file", "send one file per upload")
			}
			filename = part.FileName()
			if filename == "" {
				return apierr.Invalid("file", "the file field must be a file part with a filename")
			}
			if len(filename) > maxFilename {
				return apierr.Invalid("file", "the filename is longer than %d bytes", maxFilename)
			}
			limit := maxAny
			if purposeSet {
				limit = s.limit(purpose)
				if r.ContentLength > limit+multipartSlack {
					return tooLarge(limit)
				}
			}
			lr := &limitReader{r: part, max: limit, rc: rc, timeout: s.cfg.ReadTimeout}
			// Streamed as it arrives; a failed put leaves nothing stored.
			info, err := s.store.PutContent(ctx, f, lr)
			if err != nil {
				switch {
				case lr.n > lr.max:
					return tooLarge(limit)
				case lr.err != nil:
					return readError(lr.err)
				}
				return err
			}
			stored, size, created = true, info.Size, info.Created
			discard = func() {
				if err := s.store.DeleteContent(context.WithoutCancel(ctx), f); err != nil {
					s.cfg.Log.Error("deleting the content of a refused upload", zap.String("request_id", reqID), zap.String("file", f.ID), zap.Error(err))
				}
			}
			continue
		}
		raw, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
		if err != nil {
			return readError(err)
		}
		if len(raw) > maxFieldBytes {
			return apierr.Invalid(name, "the field %s is longer than %d bytes", name, maxFieldBytes)
		}
		v := string(raw)
		switch name {
		case "purpose":
			if purpose, err = parsePurpose(v); err != nil {
				return err
			}
			purposeSet = true
		case "expires_after[anchor]", "expires_after.anchor":
			anchor = v
		case "expires_after[seconds]", "expires_after.seconds":
			seconds = v
		default:
			return apierr.Invalid(name, "unknown field %q: an upload has the fields file, purpose and expires_after", name)
		}
	}
	if !purposeSet {
		_, err := parsePurpose("")
		return err
	}
	if !stored {
		return apierr.Invalid("file", "file is required: the file's content as a multipart file part")
	}
	if limit := s.limit(purpose); size > limit {
		return tooLarge(limit)
	}
	var expires *time.Time
	if anchor != "" || seconds != "" {
		if anchor != "created_at" {
			return apierr.Invalid("expires_after.anchor", "expires_after.anchor must be created_at")
		}
		bounds := openAIExpiry
		if azure {
			bounds = azureExpiry
		}
		n, err := strconv.ParseInt(seconds, 10, 64)
		if err != nil || n < bounds[0] || n > bounds[1] {
			return apierr.Invalid("expires_after.seconds", "expires_after.seconds must be a whole number of seconds from %d to %d", bounds[0], bounds[1])
		}
		e := created.Add(time.Duration(n) * time.Second).UTC()
		expires = &e
	}
	if expires == nil && purpose == events.FilePurposeBatch && !azure {
		// OpenAI's default: a batch input expires after 30 days.
		e := created.Add(DefaultBatchExpiry).UTC()
		expires = &e
	}
	f.Purpose, f.Filename, f.Bytes, f.Status, f.CreatedAt, f.ExpiresAt = purpose, filename, size, events.FileStatusProcessed, created.UTC(), expires
	discard = func() {} // Commit deletes the content if it cannot write the record
	if err := s.store.Commit(ctx, f); err != nil {
		return err
	}
	s.cfg.Log.Info("file stored", zap.String("request_id", reqID), zap.String("resource", res.Name), zap.String("file", f.ID),
		zap.String("purpose", string(purpose)), zap.Int64("bytes", size))
	status := http.StatusOK
	if azure {
		w.Header().Set("Location", "/openai/files/"+f.ID)
		status = http.StatusCreated
	}
	return writeJSON(w, status, wire(f))
}

// list answers GET /files: the caller's files, newest first unless order
// is asc, after the cursor file, at most limit (1 to 10000, default
// 10000).
func (s *Service) list(w http.ResponseWriter, r *http.Request, res control.Resource, _ bool) error {
	q := r.URL.Query()
	var purpose events.FilePurpose
	if v := q.Get("purpose"); v != "" {
		purpose = events.FilePurpose(v)
		if !slices.Contains(allPurposes, purpose) {
			return apierr.Invalid("purpose", "purpose %q is not a file purpose", v)
		}
	}
	limit := 10000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return apierr.Invalid("limit", "limit must be a whole number from 1 to 10000")
		}
		limit = n
	}
	order := q.Get("order")
	switch order {
	case "":
		order = "desc"
	case "asc", "desc":
	default:
		return apierr.Invalid("order", "order must be asc or desc")
	}
	all, err := s.store.List(r.Context(), res, purpose)
	if err != nil {
		return err
	}
	if order == "desc" {
		slices.Reverse(all)
	}
	if after := q.Get("after"); after != "" {
		i := slices.IndexFunc(all, func(f events.FileObject) bool { return f.ID == after })
		if i < 0 {
			return apierr.Invalid("after", "after names no file of this list: %s", after)
		}
		all = all[i+1:]
	}
	more := len(all) > limit
	if more {
		all = all[:limit]
	}
	data := make([]fileJSON, len(all))
	for i, f := range all {
		data[i] = wire(f)
	}
	out := map[string]any{"object": "list", "data": data, "has_more": more, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	return writeJSON(w, http.StatusOK, out)
}

var allPurposes = []events.FilePurpose{events.FilePurposeBatch, events.FilePurposeFineTune, events.FilePurposeAssistants, events.FilePurposeUserData,
	events.FilePurposeBatchOutput, events.FilePurposeFineTuneResults, events.FilePurposeAssistantsOutput}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}
