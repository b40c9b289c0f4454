package batches

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/events/eventstest"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// The resources of the tests: acme and initech at home in eu, globex in
// us.
var resources = map[string]control.Resource{
	"acme":    {Name: "acme", Location: "eu"},
	"initech": {Name: "initech", Location: "eu"},
	"globex":  {Name: "globex", Location: "us"},
}

// harness is a batches service on a kfake bus, with the real Files API
// beside it, mounted under /v1, /openai (Azure's answers) and /openai/v1
// the way the api package mounts it; the caller's resource is named in
// the X-Resource header (authentication is the api package's).
type harness struct {
	t     *testing.T
	bus   *bus.Bus
	svc   *Service
	files *filestore.Store
	srv   http.Handler

	mu       sync.Mutex
	now      time.Time
	records  []delivered // of the batches streams
	commands []delivered // of the batch-jobs streams
}

type delivered struct {
	meta bus.Meta
	obj  events.BatchObject
	cmd  events.BatchCommand
}

func newHarness(t *testing.T, maxEnqueued int64) *harness {
	t.Helper()
	h := &harness{t: t, now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	h.bus = bustest.New(t).Bus(t, bustest.Options{})
	stores := map[string]blob.Store{}
	for _, g := range []string{"eu", "us"} {
		d, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		stores[g] = d
	}
	sealed, err := blob.NewSealed(blob.NewStores(stores), h.bus.Keys())
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	h.files, err = filestore.New(filestore.Config{Bus: h.bus, Geos: []string{"eu", "us"}, Blobs: sealed, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.files.Close)
	h.svc, err = New(Config{Bus: h.bus, Geos: []string{"eu", "us"}, Files: h.files, MaxBody: 1 << 16, MaxEnqueuedTokens: maxEnqueued,
		Log: log, Now: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.svc.Close)
	mux := http.NewServeMux()
	for route, fn := range h.svc.Endpoints() {
		method, path, _ := strings.Cut(route, " ")
		for root, azure := range map[string]bool{"/v1": false, "/openai": true, "/openai/v1": false, "/openai/deployments/{deployment}": true} {
			mux.HandleFunc(method+" "+root+path, func(w http.ResponseWriter, r *http.Request) {
				if err := fn(w, r, resources[r.Header.Get("X-Resource")], azure); err != nil {
					apierr.Write(w, err)
				}
			})
		}
	}
	h.srv = mux
	// What ingress writes, read back from the bus as another service
	// would, and checked against the events' schemas.
	_, objectSchema := eventstest.Load(t, events.TypeBatchObject)
	_, commandSchema := eventstest.Load(t, events.TypeBatchCommand)
	for _, g := range []string{"eu", "us"} {
		for _, stream := range []string{bus.StreamBatches, bus.StreamBatchJobs} {
			tbl, err := h.bus.NewTable(g, stream, func(d *bus.Delivery) {
				if d.Record.Value == nil {
					return
				}
				var got delivered
				got.meta = d.Meta
				payload, err := d.Payload(context.Background())
				if err != nil {
					t.Errorf("unreadable record on %s: %v", stream, err)
					return
				}
				sch, into := objectSchema, any(&got.obj)
				if stream == bus.StreamBatchJobs {
					sch, into = commandSchema, &got.cmd
				}
				if err := eventstest.Validate(sch, payload); err != nil {
					t.Errorf("a record on %s does not match its schema: %v", stream, err)
				}
				if err := json.Unmarshal(payload, into); err != nil {
					t.Errorf("undecodable record on %s: %v", stream, err)
					return
				}
				h.mu.Lock()
				defer h.mu.Unlock()
				if stream == bus.StreamBatches {
					h.records = append(h.records, got)
				} else {
					h.commands = append(h.commands, got)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(tbl.Close)
		}
	}
	return h
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) tick(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r reply) errField(f string) any {
	e, _ := r.body["error"].(map[string]any)
	return e[f]
}

func (h *harness) do(method, path, resource string, body any) reply {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	req.Header.Set("X-Resource", resource)
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, req)
	r := reply{status: w.Code, header: w.Header(), raw: w.Body.Bytes()}
	if err := json.Unmarshal(r.raw, &r.body); err != nil {
		h.t.Fatalf("%s %s = %d, not a JSON object: %s", method, path, r.status, r.raw)
	}
	return r
}

// putFile stores a file of resource of size bytes.
func (h *harness) putFile(resource string, purpose events.FilePurpose, size int64) string {
	h.t.Helper()
	res := resources[resource]
	f, err := h.files.Create(h.t.Context(), events.FileObject{Resource: res.Name, HomeGeo: res.Location, Purpose: purpose, Filename: "in.jsonl"},
		strings.NewReader(strings.Repeat("x", int(size))))
	if err != nil {
		h.t.Fatal(err)
	}
	return f.ID
}

// putBatch writes a batch record the way the batch service does.
func (h *harness) putBatch(obj events.BatchObject) {
	h.t.Helper()
	if err := h.bus.Publish(h.t.Context(), obj.HomeGeo, bus.StreamBatches, bus.Meta{Key: obj.Resource + "/" + obj.ID, RequestID: obj.ID,
		Resource: obj.Resource, HomeGeo: obj.HomeGeo}, obj); err != nil {
		h.t.Fatal(err)
	}
	if err := h.svc.sync(h.t.Context(), obj.HomeGeo); err != nil {
		h.t.Fatal(err)
	}
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) command(id string, action events.BatchAction) delivered {
	h.t.Helper()
	var got delivered
	eventually(h.t, "the "+string(action)+" command of "+id, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.commands {
			if c.cmd.BatchID == id && c.cmd.Action == action {
				got = c
				return true
			}
		}
		return false
	})
	return got
}

func (h *harness) record(id string) delivered {
	h.t.Helper()
	var got delivered
	eventually(h.t, "the record of "+id, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.records {
			if c.obj.ID == id {
				got = c
				return true
			}
		}
		return false
	})
	return got
}

func createBody(file, endpoint string) map[string]any {
	return map[string]any{"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"}
}

var batchID = regexp.MustCompile(`^batch_[0-9a-f]{32}$`)

// TestCreatePublishesRecordAndCommand: a created batch is a record of
// the home geography's batches stream (version 0, validating) and a
// create command on its batch-jobs stream, both keyed
// <resource>/<batch id>; the answer is the batch object, which retrieve
// returns at once.
func TestCreatePublishesRecordAndCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("globex", events.FilePurposeBatch, 4000)
	body := createBody(file, "/v1/chat/completions")
	body["metadata"] = map[string]string{"batch_description": "nightly eval"}
	r := h.do("POST", "/v1/batches", "globex", body)
	if r.status != http.StatusOK {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	id, _ := r.body["id"].(string)
	created := float64(h.clock().Unix())
	want := map[string]any{"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": nil, "input_file_id": file,
		"completion_window": "24h", "status": "validating", "output_file_id": nil, "error_file_id": nil, "created_at": created,
		"in_progress_at": nil, "expires_at": created + 86400, "finalizing_at": nil, "completed_at": nil, "failed_at": nil, "expired_at": nil,
		"cancelling_at": nil, "cancelled_at": nil, "request_counts": map[string]any{"total": 0.0, "completed": 0.0, "failed": 0.0},
		"metadata": map[string]any{"batch_description": "nightly eval"}}
	if !batchID.MatchString(id) || fmt.Sprint(r.body) != fmt.Sprint(want) {
		t.Fatalf("created batch =\n%v\nwant\n%v", r.body, want)
	}

	rec := h.record(id)
	o := rec.obj
	if rec.meta.Key != "globex/"+id || rec.meta.RequestID != id || rec.meta.Resource != "globex" || rec.meta.HomeGeo != "us" ||
		o.Resource != "globex" || o.HomeGeo != "us" || o.Version != 0 || o.Status != events.BatchValidating || o.Operation != events.OperationChatCompletions ||
		o.APIFlavor != events.APIFlavorOpenAI || o.Source != events.BatchSourceAPI || o.EnqueuedTokens != 1000 || o.InputFileID != file ||
		!o.ExpiresAt.Equal(o.CreatedAt.Add(24*time.Hour)) || o.Metadata["batch_description"] != "nightly eval" {
		t.Errorf("record on the batches stream: %+v %+v", rec.meta, o)
	}
	cmd := h.command(id, events.BatchActionCreate)
	if cmd.meta.Key != "globex/"+id || cmd.meta.RequestID != id || cmd.meta.Resource != "globex" || cmd.meta.HomeGeo != "us" ||
		cmd.cmd.Resource != "globex" || cmd.cmd.HomeGeo != "us" || cmd.cmd.Batch == nil || cmd.cmd.Batch.ID != id || cmd.cmd.Batch.Status != events.BatchValidating {
		t.Errorf("create command on batch-jobs: %+v %+v", cmd.meta, cmd.cmd)
	}
	if got := h.do("GET", "/v1/batches/"+id, "globex", nil); got.status != http.StatusOK || got.body["status"] != "validating" || got.body["id"] != id {
		t.Errorf("retrieve = %d %s", got.status, got.raw)
	}

	// Azure's dated paths: Azure's endpoint names, APIFlavor azure, 201
	// from 2025-04-01-preview on.
	for _, c := range []struct {
		path, endpoint string
		status         int
		op             events.Operation
		flavor         events.APIFlavor
	}{
		{"/openai/batches?api-version=2024-10-21", "/chat/completions", http.StatusOK, events.OperationChatCompletions, events.APIFlavorAzure},
		{"/openai/batches?api-version=2025-04-01-preview", "/embeddings", http.StatusCreated, events.OperationEmbeddings, events.APIFlavorAzure},
		{"/openai/deployments/gb/batches?api-version=2025-04-01-preview", "/completions", http.StatusCreated, events.OperationCompletions, events.APIFlavorAzure},
		{"/openai/v1/batches", "/v1/completions", http.StatusOK, events.OperationCompletions, events.APIFlavorOpenAI},
	} {
		r := h.do("POST", c.path, "globex", createBody(file, c.endpoint))
		if r.status != c.status || r.body["endpoint"] != c.endpoint || r.body["metadata"] != nil {
			t.Errorf("%s = %d %s, want %d", c.path, r.status, r.raw, c.status)
			continue
		}
		if o := h.record(r.body["id"].(string)).obj; o.Operation != c.op || o.APIFlavor != c.flavor || o.Endpoint != c.endpoint {
			t.Errorf("%s: record %+v", c.path, o)
		}
	}
}

func TestCreateRefusesBadInputNamingTheParam(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	tuning := h.putFile("acme", events.FilePurposeFineTune, 100)
	with := func(k string, v any) map[string]any {
		b := createBody(file, "/v1/chat/completions")
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	many := map[string]string{}
	for i := range 17 {
		many[fmt.Sprint("k", i)] = "v"
	}
	cases := []struct {
		name, path string
		body       any
		status     int
		param      string
	}{
		{"missing input_file_id", "/v1/batches", with("input_file_id", nil), 400, "input_file_id"},
		{"missing endpoint", "/v1/batches", with("endpoint", nil), 400, "endpoint"},
		{"unsupported endpoint", "/v1/batches", with("endpoint", "/v1/moderations"), 400, "endpoint"},
		{"missing completion_window", "/v1/batches", with("completion_window", nil), 400, "completion_window"},
		{"other completion_window", "/v1/batches", with("completion_window", "48h"), 400, "completion_window"},
		{"17 metadata pairs", "/v1/batches", with("metadata", many), 400, "metadata"},
		{"long metadata key", "/v1/batches", with("metadata", map[string]string{strings.Repeat("k", 65): "v"}), 400, "metadata"},
		{"long metadata value", "/v1/batches", with("metadata", map[string]string{"k": strings.Repeat("é", 513)}), 400, "metadata"},
		{"metadata not strings", "/v1/batches", with("metadata", map[string]any{"k": 1}), 400, "metadata"},
		{"expiry anchor", "/v1/batches", with("output_expires_after", map[string]any{"anchor": "updated_at", "seconds": 3600}), 400, "output_expires_after.anchor"},
		{"expiry too short", "/v1/batches", with("output_expires_after", map[string]any{"anchor": "created_at", "seconds": 60}), 400, "output_expires_after.seconds"},
		{"expiry too long", "/openai/v1/batches", with("output_expires_after", map[string]any{"anchor": "created_at", "seconds": 2592001}), 400, "output_expires_after.seconds"},
		{"azure expiry too short", "/openai/batches?api-version=2024-10-21", with("output_expires_after", map[string]any{"anchor": "created_at", "seconds": 3600}), 400, "output_expires_after.seconds"},
		{"expiry without seconds", "/v1/batches", with("output_expires_after", map[string]any{"anchor": "created_at"}), 400, "output_expires_after.seconds"},
		{"unknown field", "/v1/batches", with("priority", "high"), 400, "priority"},
		{"not JSON", "/v1/batches", "{", 400, "body"},
		{"file of another purpose", "/v1/batches", with("input_file_id", tuning), 400, "input_file_id"},
		{"unknown file", "/v1/batches", with("input_file_id", "file-00000000000000000000000000000000"), 404, "input_file_id"},
	}
	for _, c := range cases {
		r := h.do("POST", c.path, "acme", c.body)
		if r.status != c.status || r.errField("param") != c.param || r.errField("message") == "" {
			t.Errorf("%s: %d %s, want %d naming %s", c.name, r.status, r.raw, c.status, c.param)
		}
	}
	h.mu.Lock()
	published := len(h.records) + len(h.commands)
	h.mu.Unlock()
	if published != 0 {
		t.Errorf("refused creates published %d records and commands", published)
	}
	ok := h.do("POST", "/openai/batches?api-version=2024-10-21", "acme",
		with("output_expires_after", map[string]any{"anchor": "created_at", "seconds": 1209600}))
	if ok.status != http.StatusOK {
		t.Fatalf("a valid Azure create = %d %s", ok.status, ok.raw)
	}
	if o := h.record(ok.body["id"].(string)).obj; o.OutputExpiresAfter != 1209600 {
		t.Errorf("output_expires_after in the record = %d", o.OutputExpiresAfter)
	}
}

// TestBatchesStayWithTheirResource: another resource's key gets the
// same 404 for every batch ID of a resource as for an ID nobody has,
// lists none of them, cannot cancel them and cannot create a batch from
// the resource's file.
func TestBatchesStayWithTheirResource(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	id := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")).body["id"].(string)
	const nobody = "batch_00000000000000000000000000000000"
	for _, who := range []string{"initech", "globex"} {
		for _, c := range []struct{ method, path string }{{"GET", "/v1/batches/"}, {"POST", "/v1/batches/"}, {"GET", "/openai/batches/"}} {
			path := c.path + "%s"
			if c.method == "POST" {
				path += "/cancel"
			}
			theirs := h.do(c.method, fmt.Sprintf(path, id), who, nil)
			none := h.do(c.method, fmt.Sprintf(path, nobody), who, nil)
			if theirs.status != http.StatusNotFound || none.status != http.StatusNotFound || theirs.errField("code") != none.errField("code") ||
				theirs.errField("type") != none.errField("type") {
				t.Errorf("%s %s as %s = %d %s; an unknown ID = %d %s", c.method, c.path, who, theirs.status, theirs.raw, none.status, none.raw)
			}
		}
		if r := h.do("GET", "/v1/batches", who, nil); r.status != http.StatusOK || strings.Contains(string(r.raw), id) {
			t.Errorf("%s lists %d %s", who, r.status, r.raw)
		}
		const noFile = "file-00000000000000000000000000000000"
		r := h.do("POST", "/v1/batches", who, createBody(file, "/v1/chat/completions"))
		unknown := h.do("POST", "/v1/batches", who, createBody(noFile, "/v1/chat/completions"))
		if r.status != http.StatusNotFound || string(r.raw) != strings.ReplaceAll(string(unknown.raw), noFile, file) {
			t.Errorf("%s creating from acme's file = %d %s; from no file = %s", who, r.status, r.raw, unknown.raw)
		}
	}
	if r := h.do("GET", "/v1/batches", "acme", nil); !strings.Contains(string(r.raw), id) {
		t.Errorf("acme lists %s", r.raw)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.commands) != 1 {
		t.Errorf("%d commands on the bus, want acme's create only", len(h.commands))
	}
}

func TestListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	var ids []string
	for range 5 {
		ids = append(ids, h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")).body["id"].(string))
		h.tick(time.Second)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		q := "/v1/batches?limit=2"
		if after != "" {
			q += "&after=" + after
		}
		r := h.do("GET", q, "acme", nil)
		data, _ := r.body["data"].([]any)
		if r.status != http.StatusOK || r.body["object"] != "list" || len(data) == 0 || len(data) > 2 {
			t.Fatalf("page %s = %d %s", q, r.status, r.raw)
		}
		for _, d := range data {
			got = append(got, d.(map[string]any)["id"].(string))
		}
		if r.body["first_id"] != data[0].(map[string]any)["id"] || r.body["last_id"] != data[len(data)-1].(map[string]any)["id"] {
			t.Errorf("first_id/last_id of %s", r.raw)
		}
		if r.body["has_more"] != true {
			break
		}
		after = r.body["last_id"].(string)
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{ids[4], ids[3], ids[2], ids[1], ids[0]}) {
		t.Errorf("pages = %v, created %v", got, ids)
	}
	if r := h.do("GET", "/v1/batches", "acme", nil); len(r.body["data"].([]any)) != 5 || r.body["has_more"] != false {
		t.Errorf("default list = %s", r.raw)
	}
	if r := h.do("GET", "/v1/batches", "initech", nil); r.status != http.StatusOK || len(r.body["data"].([]any)) != 0 ||
		r.body["first_id"] != nil || r.body["last_id"] != nil || r.body["has_more"] != false {
		t.Errorf("empty list = %s", r.raw)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "after=batch_00000000000000000000000000000000"} {
		param, _, _ := strings.Cut(q, "=")
		if r := h.do("GET", "/v1/batches?"+q, "acme", nil); r.status != http.StatusBadRequest || r.errField("param") != param {
			t.Errorf("list ?%s = %d %s", q, r.status, r.raw)
		}
	}
}

// TestViewKeepsTheNewestVersion: records of the batch service with
// higher versions replace ingress's, whatever order they arrive in, and
// a tombstone removes the batch.
func TestViewKeepsTheNewestVersion(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	id := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")).body["id"].(string)
	o := h.record(id).obj
	done := o
	done.Version, done.Status, done.OutputFileID, done.Deployment = 3, events.BatchCompleted, "file-0123456789abcdef0123456789abcdef", "gb"
	done.RequestCounts = events.BatchCounts{Total: 2, Completed: 2}
	done.Usage = &events.BatchUsage{InputTokens: 10, OutputTokens: 5, TotalTokens: 15}
	at := h.clock().Add(time.Minute)
	done.InProgressAt, done.FinalizingAt, done.CompletedAt = &at, &at, &at
	running := o
	running.Version, running.Status, running.InProgressAt = 1, events.BatchInProgress, &at
	h.putBatch(done)
	h.putBatch(running)
	r := h.do("GET", "/v1/batches/"+id, "acme", nil)
	if r.body["status"] != "completed" || r.body["output_file_id"] != "file-0123456789abcdef0123456789abcdef" || r.body["completed_at"] != float64(at.Unix()) ||
		r.body["model"] != "gb" || r.body["usage"] == nil || r.body["request_counts"].(map[string]any)["completed"] != 2.0 {
		t.Errorf("after versions 3 then 1: %s", r.raw)
	}
	if u := r.body["usage"].(map[string]any); u["total_tokens"] != 15.0 || u["input_tokens_details"] == nil || u["output_tokens_details"] == nil {
		t.Errorf("usage = %v", u)
	}
	// Azure's dated paths have no model field.
	if r := h.do("GET", "/openai/batches/"+id+"?api-version=2024-10-21", "acme", nil); r.body["status"] != "completed" || r.body["model"] != nil {
		t.Errorf("azure retrieve = %s", r.raw)
	}
	failed := o
	failed.ID = "batch_0123456789abcdef0123456789abcdef"
	failed.Version, failed.Status, failed.FailedAt = 1, events.BatchFailed, &at
	failed.Errors = []events.BatchError{{Code: "invalid_json_line", Message: "line 2 is not JSON", Line: 2}, {Code: "empty_batch", Message: "no lines"}}
	h.putBatch(failed)
	r = h.do("GET", "/v1/batches/"+failed.ID, "acme", nil)
	want := `{"data":[{"code":"invalid_json_line","line":2,"message":"line 2 is not JSON","param":null},{"code":"empty_batch","line":null,"message":"no lines","param":null}],"object":"list"}`
	if got, _ := json.Marshal(r.body["errors"]); string(got) != want {
		t.Errorf("errors = %s, want %s", got, want)
	}
	if err := h.bus.Tombstone(t.Context(), "eu", bus.StreamBatches, "acme/"+id); err != nil {
		t.Fatal(err)
	}
	// The view applies the tombstone as it reads the stream.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := h.do("GET", "/v1/batches/"+id, "acme", nil)
		if r.status == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a tombstone = %d %s", r.status, r.raw)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	id := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")).body["id"].(string)
	h.tick(time.Minute)
	r := h.do("POST", "/openai/batches/"+id+"/cancel?api-version=2024-10-21", "acme", nil)
	if r.status != http.StatusOK || r.body["status"] != "cancelling" || r.body["cancelling_at"] != float64(h.clock().Unix()) || r.body["id"] != id {
		t.Fatalf("cancel = %d %s", r.status, r.raw)
	}
	if c := h.command(id, events.BatchActionCancel); c.meta.Key != "acme/"+id || c.meta.Resource != "acme" || c.meta.HomeGeo != "eu" ||
		c.cmd.Resource != "acme" || c.cmd.Batch != nil || !c.cmd.At.Equal(h.clock()) {
		t.Errorf("cancel command = %+v %+v", c.meta, c.cmd)
	}
	for i, st := range []events.BatchStatus{events.BatchCompleted, events.BatchFailed, events.BatchExpired, events.BatchCancelled} {
		o := h.record(id).obj
		o.ID = fmt.Sprintf("batch_%032x", i+1)
		o.Version, o.Status = 2, st
		h.putBatch(o)
		r := h.do("POST", "/v1/batches/"+o.ID+"/cancel", "acme", nil)
		if r.status != http.StatusBadRequest || !strings.Contains(r.errField("message").(string), string(st)) {
			t.Errorf("cancel of a %s batch = %d %s", st, r.status, r.raw)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.commands {
		if c.cmd.Action == events.BatchActionCancel {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d cancel commands, want 1", n)
	}
}

// TestEnqueuedTokenLimit: a create whose estimate (input bytes / 4) and
// the enqueued tokens of the resource's unfinished batches pass the limit
// fails fast; finished batches count no more; Azure's list tells both
// numbers.
func TestEnqueuedTokenLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 100)
	file := h.putFile("acme", events.FilePurposeBatch, 200) // 50 tokens
	first := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions"))
	if first.status != http.StatusOK {
		t.Fatalf("first = %d %s", first.status, first.raw)
	}
	if r := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")); r.status != http.StatusOK {
		t.Fatalf("second, at the limit = %d %s", r.status, r.raw)
	}
	r := h.do("POST", "/openai/batches?api-version=2024-10-21", "acme", createBody(file, "/chat/completions"))
	if r.status != http.StatusBadRequest || r.errField("code") != "token_limit_exceeded" || r.errField("type") != "invalid_request_error" ||
		r.errField("param") != nil || !strings.Contains(r.errField("message").(string), "enqueued token limit") {
		t.Fatalf("third, over the limit = %d %s", r.status, r.raw)
	}
	// another resource has a limit of its own
	other := h.putFile("initech", events.FilePurposeBatch, 400)
	if r := h.do("POST", "/v1/batches", "initech", createBody(other, "/v1/chat/completions")); r.status != http.StatusOK {
		t.Fatalf("another resource = %d %s", r.status, r.raw)
	}
	l := h.do("GET", "/openai/batches?api-version=2024-10-21", "acme", nil)
	if l.header.Get("deployment-enqueued-tokens") != "100" || l.header.Get("deployment-maximum-enqueued-tokens") != "100" {
		t.Errorf("azure list headers = %v", l.header)
	}
	if l := h.do("GET", "/v1/batches", "acme", nil); l.header.Get("deployment-enqueued-tokens") != "" {
		t.Errorf("the OpenAI list has Azure's headers: %v", l.header)
	}
	o := h.record(first.body["id"].(string)).obj
	o.Version, o.Status = 4, events.BatchCompleted
	h.putBatch(o)
	if r := h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions")); r.status != http.StatusOK {
		t.Fatalf("after a batch finished = %d %s", r.status, r.raw)
	}
}

// TestDeleteResourceDeletesItsBatches: the records of a deleted
// resource's batches are tombstoned; another resource's stay.
func TestDeleteResourceDeletesItsBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1<<40)
	file := h.putFile("acme", events.FilePurposeBatch, 100)
	other := h.putFile("initech", events.FilePurposeBatch, 100)
	for range 3 {
		h.do("POST", "/v1/batches", "acme", createBody(file, "/v1/chat/completions"))
	}
	keep := h.do("POST", "/v1/batches", "initech", createBody(other, "/v1/chat/completions")).body["id"].(string)
	if err := h.svc.DeleteResource(t.Context(), resources["acme"]); err != nil {
		t.Fatal(err)
	}
	if r := h.do("GET", "/v1/batches", "acme", nil); len(r.body["data"].([]any)) != 0 {
		t.Errorf("acme lists %s after its deletion", r.raw)
	}
	if r := h.do("GET", "/v1/batches/"+keep, "initech", nil); r.status != http.StatusOK {
		t.Errorf("initech lost its batch: %d", r.status)
	}
	// a fresh view (another instance) reads the stream as it is now
	s2, err := New(Config{Bus: h.bus, Geos: []string{"eu"}, Files: h.files, MaxBody: 1 << 16, MaxEnqueuedTokens: 1, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.sync(t.Context(), "eu"); err != nil {
		t.Fatal(err)
	}
	if got := s2.view.list("acme"); len(got) != 0 {
		t.Errorf("another instance sees %d batches of the deleted resource", len(got))
	}
}
