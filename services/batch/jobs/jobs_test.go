package jobs_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/redistest"
	"github.com/terroir-ai/terroir/pkg/route"
	"github.com/terroir-ai/terroir/services/batch/jobs"
)

// env is a batch service's world: a broker, Redis, a blob directory, the
// control plane with resource acme (eu) and its deployment chat, and a
// peer that answers the requests topic as content safety and a model
// worker together would: a line whose prompt holds BLOCKME is refused by
// the filter, any other is answered.
type env struct {
	t       *testing.T
	c       *bustest.Cluster
	ns      string
	bus     *bus.Bus
	rdb     *redis.Client
	redisAt string
	dir     string
	files   *filestore.Store
	state   *control.State
	cat     *catalog.Catalog
	acme    control.Resource
	// capacity is what inference workers reported, as every runner sees it.
	capacity *route.Capacity

	mu      sync.Mutex
	batches map[string]events.BatchObject
	sends   map[string]int // request ID → times received
	geos    map[string]int // geography → requests received there
	delay   time.Duration
	// busy and maxBusy count the requests being answered at once
	busy, maxBusy int
	twice         bool // answer every request twice
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, c: bustest.New(t), ns: bustest.Namespace(), dir: t.TempDir(), batches: map[string]events.BatchObject{}, sends: map[string]int{}, geos: map[string]int{}}
	e.redisAt = redistest.Start(t)
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redisAt})
	t.Cleanup(func() { e.rdb.Close() })
	e.bus = e.c.Bus(t, bustest.Options{Namespace: e.ns, Geos: []string{"eu", "us"}})
	e.files = e.newFiles()
	_, file, _, _ := runtime.Caller(0)
	cat, err := catalog.Load(filepath.Join(filepath.Dir(file), "..", "..", "..", "deployments", "catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	e.cat = cat
	e.capacity = route.NewCapacity(nil)
	e.state = control.NewState(zaptest.NewLogger(t))
	e.acme = control.Resource{Name: "acme", Location: "eu", ContentLogging: true}
	e.put(events.ControlResource, "", "acme", e.acme)
	e.put(events.ControlDeployment, "acme", "chat", control.Deployment{Name: "chat", Model: "terroir-ngram", SKU: events.SKUStandard, Capacity: 100})
	tbl, err := e.bus.NewTable("eu", bus.StreamBatches, func(d *bus.Delivery) {
		var b events.BatchObject
		if d.Record.Value == nil || d.Decode(context.Background(), &b) != nil {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if old, ok := e.batches[b.ID]; !ok || b.Version >= old.Version {
			e.batches[b.ID] = b
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	e.respond()
	return e
}

func (e *env) newFiles() *filestore.Store {
	stores := map[string]blob.Store{}
	for _, g := range []string{"eu", "us"} {
		d, err := blob.NewDir(filepath.Join(e.dir, g))
		if err != nil {
			e.t.Fatal(err)
		}
		stores[g] = d
	}
	sealed, err := blob.NewSealed(blob.NewStores(stores), e.bus.Keys())
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := filestore.New(filestore.Config{Bus: e.bus, Geos: []string{"eu", "us"}, Blobs: sealed, Log: zaptest.NewLogger(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Close)
	return s
}

func (e *env) put(kind events.ControlKind, resource, id string, v any) {
	spec, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	e.state.ApplyChange(events.ControlChange{Kind: kind, Resource: resource, ID: id, Actor: "test", At: time.Now(), Spec: spec})
}

// respond answers the batch lane's requests stream.
func (e *env) respond() {
	c, err := e.bus.NewConsumer(bus.ConsumerConfig{Group: "path", Streams: []string{bus.LaneBatch.Stream(bus.StreamRequests)}, Geos: []string{"eu", "us"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var req events.InferenceRequest
			if err := d.Decode(ctx, &req); err != nil {
				return err
			}
			e.mu.Lock()
			e.sends[req.RequestID]++
			e.geos[d.Geo]++
			delay, twice := e.delay, e.twice
			e.busy++
			e.maxBusy = max(e.maxBusy, e.busy)
			e.mu.Unlock()
			defer func() { e.mu.Lock(); e.busy--; e.mu.Unlock() }()
			time.Sleep(delay)
			res := events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Operation: req.Operation, CreatedAt: time.Now(),
				Usage: &events.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}}
			if bytes.Contains(req.Body, []byte("BLOCKME")) {
				res.Status, res.Usage = events.StatusFiltered, nil
				res.Body = json.RawMessage(`{"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter","status":400}}`)
			} else {
				res.Body = json.RawMessage(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"answer"},"finish_reason":"stop"}]}`)
			}
			n := 1
			if twice {
				n = 2
			}
			for range n {
				if err := e.bus.Reply(ctx, d, 0, true, res); err != nil {
					return err
				}
			}
			return nil
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

// runner starts a batch service instance; stop ends it gracefully.
func (e *env) runner(instance string, tune func(*jobs.Config)) (stop func()) {
	e.t.Helper()
	cfg := jobs.Config{Bus: e.c.Bus(e.t, bustest.Options{Namespace: e.ns, Geos: []string{"eu", "us"}, InstanceID: instance}),
		Redis: map[string]*redis.Client{"eu": e.rdb}, State: e.state, Instance: instance, Log: zaptest.NewLogger(e.t),
		Admit:    &admit.Admitter{State: e.state, Catalog: e.cat, Capacity: e.capacity, Geos: []string{"eu", "us"}},
		LeaseTTL: time.Second, ProgressEvery: 100 * time.Millisecond, CancelGrace: 2 * time.Second}
	cfg.Files = e.files
	if tune != nil {
		tune(&cfg)
	}
	r, err := jobs.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("runner %s: %v", instance, err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func newBatchID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "batch_" + hex.EncodeToString(b)
}

// chatLines are n lines for deployment chat; the prompts of the lines in
// blocked hold BLOCKME.
func chatLines(n int, blocked ...int) []byte {
	var b bytes.Buffer
	for i := range n {
		prompt := fmt.Sprintf("question %d", i)
		for _, k := range blocked {
			if k == i {
				prompt = "BLOCKME " + prompt
			}
		}
		fmt.Fprintf(&b, `{"custom_id":"id-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","max_tokens":8,"messages":[{"role":"user","content":%q}]}}`+"\n", i, prompt)
	}
	return b.Bytes()
}

// create uploads content and gives the create command, as ingress does.
func (e *env) create(content []byte, tune func(*events.BatchObject)) string {
	e.t.Helper()
	ctx := e.t.Context()
	f, err := e.files.Create(ctx, events.FileObject{Resource: "acme", HomeGeo: "eu", Purpose: events.FilePurposeBatch, Filename: "in.jsonl"}, bytes.NewReader(content))
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now().UTC()
	b := events.BatchObject{ID: newBatchID(), Resource: "acme", HomeGeo: "eu", Endpoint: "/v1/chat/completions", Operation: events.OperationChatCompletions,
		APIFlavor: events.APIFlavorOpenAI, Source: events.BatchSourceAPI, InputFileID: f.ID, CompletionWindow: "24h",
		Status: events.BatchValidating, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	if tune != nil {
		tune(&b)
	}
	e.command(events.BatchCommand{Action: events.BatchActionCreate, Resource: "acme", HomeGeo: "eu", BatchID: b.ID, Batch: &b, At: now})
	return b.ID
}

func (e *env) command(c events.BatchCommand) {
	e.t.Helper()
	if err := e.bus.Publish(e.t.Context(), "eu", bus.StreamBatchJobs, bus.Meta{RequestID: c.BatchID, Resource: c.Resource, HomeGeo: c.HomeGeo, Key: c.Resource + "/" + c.BatchID}, c); err != nil {
		e.t.Fatal(err)
	}
}

// wait returns the batch once cond holds for its latest record.
func (e *env) wait(id string, timeout time.Duration, cond func(events.BatchObject) bool) events.BatchObject {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		e.mu.Lock()
		b, ok := e.batches[id]
		e.mu.Unlock()
		if ok && cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("batch %s: condition not met within %s; latest %+v", id, timeout, b)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func ended(b events.BatchObject) bool { return b.Status.Terminal() }

type outLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code string `json:"code"`
	} `json:"error"`
}

// lines reads an output or error file.
func (e *env) lines(id string) []outLine {
	e.t.Helper()
	if id == "" {
		e.t.Fatal("no file")
	}
	f, err := e.files.Get(e.t.Context(), e.acme, id)
	if err != nil {
		e.t.Fatalf("file %s: %v", id, err)
	}
	if f.Purpose != events.FilePurposeBatchOutput || f.ExpiresAt == nil {
		e.t.Errorf("file %s: purpose %s, expires %v", id, f.Purpose, f.ExpiresAt)
	}
	rc, _, err := e.files.Open(e.t.Context(), f, blob.Range{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	var out []outLine
	sc := bufio.NewScanner(rc)
	for sc.Scan() {
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			e.t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// exactlyOnce checks that ids 0..n-1 each appear once across the files.
func exactlyOnce(t *testing.T, n int, files ...[]outLine) {
	t.Helper()
	seen := map[string]int{}
	for _, f := range files {
		for _, l := range f {
			seen[l.CustomID]++
		}
	}
	for i := range n {
		if c := seen[fmt.Sprintf("id-%d", i)]; c != 1 {
			t.Errorf("id-%d is written %d times", i, c)
		}
	}
	if len(seen) != n {
		t.Errorf("%d custom_ids written, want %d", len(seen), n)
	}
}

func TestBatchAnswersEveryLineOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.twice = true // a redelivered answer must not count twice
	e.runner("batch-a", nil)
	const n = 300
	id := e.create(chatLines(n, 7, 123), func(b *events.BatchObject) { b.OutputExpiresAfter = 7200 })
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCompleted {
		t.Fatalf("status %s: %+v", b.Status, b)
	}
	if b.RequestCounts != (events.BatchCounts{Total: n, Completed: n - 2, Failed: 2}) {
		t.Errorf("counts %+v", b.RequestCounts)
	}
	if b.InProgressAt == nil || b.FinalizingAt == nil || b.CompletedAt == nil || b.Deployment != "chat" {
		t.Errorf("timestamps or deployment missing: %+v", b)
	}
	if b.Usage == nil || b.Usage.InputTokens != 3*(n-2) || b.Usage.OutputTokens != 2*(n-2) {
		t.Errorf("usage %+v", b.Usage)
	}
	out, errs := e.lines(b.OutputFileID), e.lines(b.ErrorFileID)
	exactlyOnce(t, n, out, errs)
	for _, l := range out {
		if l.Response == nil || l.Response.StatusCode != 200 || l.Error != nil || !strings.HasPrefix(l.ID, "batch_req_") || l.Response.RequestID == "" {
			t.Errorf("output line %+v", l)
		}
	}
	if len(errs) != 2 {
		t.Fatalf("%d error lines, want the 2 blocked", len(errs))
	}
	for _, l := range errs {
		if l.Response == nil || l.Response.StatusCode != 400 || !bytes.Contains(l.Response.Body, []byte(`"content_filter"`)) {
			t.Errorf("error line %+v", l)
		}
	}
	f, _ := e.files.Get(t.Context(), e.acme, b.OutputFileID)
	if got := f.ExpiresAt.Sub(f.CreatedAt); got != 2*time.Hour {
		t.Errorf("output expires %s after creation, want output_expires_after", got)
	}
	// Progress is cleaned from Redis once the batch ended.
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, _ := e.rdb.Keys(t.Context(), "terroir:eu:batch:*"+id+"*").Result()
		if len(keys) == 1 && keys[0] == "terroir:eu:batch:ended:"+id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis keeps %v after the batch ended, want only its end marker", keys)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	// Its create command read again (a consumer died before committing)
	// does not run it a second time.
	total := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		n := 0
		for _, c := range e.sends {
			n += c
		}
		return n
	}
	sends := total()
	e.command(events.BatchCommand{Action: events.BatchActionCreate, Resource: "acme", HomeGeo: "eu", BatchID: id, At: time.Now(),
		Batch: &events.BatchObject{ID: id, Resource: "acme", HomeGeo: "eu", Endpoint: "/v1/chat/completions", Operation: events.OperationChatCompletions,
			APIFlavor: events.APIFlavorOpenAI, Source: events.BatchSourceAPI, InputFileID: b.InputFileID, CompletionWindow: "24h",
			Status: events.BatchValidating, CreatedAt: b.CreatedAt, ExpiresAt: b.ExpiresAt}})
	time.Sleep(1500 * time.Millisecond)
	if n := total(); n != sends {
		t.Errorf("a create read again ran the ended batch again: %d lines sent (were %d)", n, sends)
	}
	if n, _ := e.rdb.Exists(t.Context(), "terroir:eu:batch:job:"+id).Result(); n != 0 {
		t.Error("a create read again made the ended batch a job again")
	}
}

func TestBatchRefusedLinesAreErrorLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.runner("batch-a", nil)
	content := append(chatLines(3), []byte(`{"custom_id":"id-3","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","max_tokens":999999999,"messages":[{"role":"user","content":"hi"}]}}`+"\n")...)
	id := e.create(content, nil)
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCompleted || b.RequestCounts.Failed != 1 {
		t.Fatalf("%s %+v", b.Status, b.RequestCounts)
	}
	errs := e.lines(b.ErrorFileID)
	if len(errs) != 1 || errs[0].CustomID != "id-3" || errs[0].Response.StatusCode != 400 || !bytes.Contains(errs[0].Response.Body, []byte("max_tokens")) {
		t.Errorf("error lines %+v", errs)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sends[id+"-3"] != 0 {
		t.Error("a refused line was sent")
	}
}

func TestBatchWithBadLinesFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.runner("batch-a", nil)
	content := append(chatLines(2), []byte("{not json\n")...)
	id := e.create(content, nil)
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchFailed || b.FailedAt == nil || len(b.Errors) == 0 || b.Errors[0].Line != 3 {
		t.Fatalf("%s %+v", b.Status, b.Errors)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sends) != 0 {
		t.Errorf("%d lines of a failed batch were sent", len(e.sends))
	}
}

func TestBatchCancelKeepsWhatFinished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.delay = 5 * time.Millisecond
	e.runner("batch-a", func(c *jobs.Config) { c.MaxInFlight = 4 })
	const n = 400
	id := e.create(chatLines(n), nil)
	e.wait(id, time.Minute, func(b events.BatchObject) bool { return b.RequestCounts.Completed >= 20 })
	e.command(events.BatchCommand{Action: events.BatchActionCancel, Resource: "acme", HomeGeo: "eu", BatchID: id, At: time.Now()})
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCancelled || b.CancellingAt == nil || b.CancelledAt == nil {
		t.Fatalf("%s %+v", b.Status, b)
	}
	out, errs := e.lines(b.OutputFileID), e.lines(b.ErrorFileID)
	exactlyOnce(t, n, out, errs)
	if len(out) == 0 || len(out) == n {
		t.Errorf("%d of %d lines answered: want a part", len(out), n)
	}
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_cancelled" {
			t.Errorf("error line %+v", l)
		}
	}
	if b.RequestCounts.Completed != len(out) || b.RequestCounts.Failed != len(errs) {
		t.Errorf("counts %+v for %d answered and %d not run", b.RequestCounts, len(out), len(errs))
	}
}

func TestBatchExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.delay = 20 * time.Millisecond
	e.runner("batch-a", func(c *jobs.Config) { c.MaxInFlight = 2 })
	const n = 200
	id := e.create(chatLines(n), func(b *events.BatchObject) { b.ExpiresAt = time.Now().Add(1500 * time.Millisecond) })
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchExpired || b.ExpiredAt == nil {
		t.Fatalf("%s %+v", b.Status, b)
	}
	out, errs := e.lines(b.OutputFileID), e.lines(b.ErrorFileID)
	exactlyOnce(t, n, out, errs)
	if len(out) == 0 || len(errs) == 0 || errs[0].Error == nil || errs[0].Error.Code != "batch_expired" {
		t.Errorf("%d answered, %d expired (first %+v)", len(out), len(errs), errs)
	}
}

// TestBatchResumesOnAnotherInstance stops the instance driving a batch
// in the middle; another takes the job over and it completes with every
// line once.
func TestBatchResumesOnAnotherInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.delay = 2 * time.Millisecond
	stopA := e.runner("batch-a", func(c *jobs.Config) { c.MaxInFlight = 8 })
	const n = 600
	id := e.create(chatLines(n), nil)
	e.wait(id, time.Minute, func(b events.BatchObject) bool { return b.RequestCounts.Completed >= n/4 })
	stopA()
	e.runner("batch-b", nil)
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCompleted {
		t.Fatalf("%s %+v", b.Status, b)
	}
	exactlyOnce(t, n, e.lines(b.OutputFileID), e.lines(b.ErrorFileID))
	_ = io.EOF
}

// TestGlobalBatchLinesGoWhereThereIsCapacity runs a batch of a GlobalBatch
// deployment of an eu resource while only us workers report spare
// capacity: its lines are processed in us, and its input, output and
// error files are stored in eu only.
func TestGlobalBatchLinesGoWhereThereIsCapacity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.put(events.ControlDeployment, "acme", "global", control.Deployment{Name: "global", Model: "terroir-ngram", SKU: events.SKUGlobalBatch, Capacity: 100})
	now := time.Now()
	e.capacity.Add(events.CapacityReport{Geo: "eu", Instance: "w-eu", Model: "terroir-ngram", TokensPerMinuteCapacity: 1000, TokensPerMinuteInUse: 1000, At: now.Add(time.Minute)})
	e.capacity.Add(events.CapacityReport{Geo: "us", Instance: "w-us", Model: "terroir-ngram", TokensPerMinuteCapacity: 1_000_000, At: now.Add(time.Minute)})
	e.runner("batch-a", nil)
	var in bytes.Buffer
	for i := range 30 {
		fmt.Fprintf(&in, `{"custom_id":"id-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"global","max_tokens":8,"messages":[{"role":"user","content":"q %d"}]}}`+"\n", i, i)
	}
	id := e.create(in.Bytes(), nil)
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCompleted {
		t.Fatalf("%s %+v", b.Status, b)
	}
	exactlyOnce(t, 30, e.lines(b.OutputFileID), e.lines(b.ErrorFileID))
	e.mu.Lock()
	if e.geos["us"] != 30 || e.geos["eu"] != 0 {
		t.Errorf("lines processed per geography: %v, want all 30 in us", e.geos)
	}
	e.mu.Unlock()
	for _, f := range []string{b.InputFileID, b.OutputFileID, b.ErrorFileID} {
		if _, err := os.Stat(filepath.Join(e.dir, "eu")); err != nil {
			t.Fatal(err)
		}
		matches, _ := filepath.Glob(filepath.Join(e.dir, "us", "*", "*"+f+"*"))
		if len(matches) != 0 {
			t.Errorf("file %s stored in us: %v", f, matches)
		}
	}
	var euBlobs, usBlobs int
	for g, n := range map[string]*int{"eu": &euBlobs, "us": &usBlobs} {
		_ = filepath.Walk(filepath.Join(e.dir, g), func(_ string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				*n++
			}
			return nil
		})
	}
	if euBlobs < 3 || usBlobs != 0 {
		t.Errorf("blobs: %d in eu, %d in us; want the three files in eu only", euBlobs, usBlobs)
	}
}

// TestBatchWhoseInputIsDeletedFails deletes the input file while the
// batch runs: the batch fails naming why instead of retrying for ever.
func TestBatchWhoseInputIsDeletedFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.delay = 5 * time.Millisecond
	e.runner("batch-a", func(c *jobs.Config) { c.MaxInFlight = 2 })
	const n = 400
	id := e.create(chatLines(n), nil)
	running := e.wait(id, time.Minute, func(b events.BatchObject) bool { return b.RequestCounts.Completed >= 10 })
	f, err := e.files.Get(t.Context(), e.acme, running.InputFileID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.files.Delete(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchFailed || len(b.Errors) != 1 || b.Errors[0].Code != "input_modified" {
		t.Fatalf("%s %+v", b.Status, b.Errors)
	}
}

// TestBatchWaitsForItsResourceInTheControlView runs a batch on an
// instance whose view of the control plane does not have the resource
// yet (a view still catching up after a restart): the job waits for it
// instead of being dropped as a deleted resource's.
func TestBatchWaitsForItsResourceInTheControlView(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	view := control.NewState(zaptest.NewLogger(t))
	e.runner("batch-a", func(c *jobs.Config) { c.State, c.Admit.State = view, view })
	id := e.create(chatLines(5), nil)
	time.Sleep(1500 * time.Millisecond)
	for _, ch := range []struct {
		kind     events.ControlKind
		resource string
		id       string
		v        any
	}{
		{events.ControlResource, "", "acme", e.acme},
		{events.ControlDeployment, "acme", "chat", control.Deployment{Name: "chat", Model: "terroir-ngram", SKU: events.SKUStandard, Capacity: 100}},
	} {
		spec, _ := json.Marshal(ch.v)
		view.ApplyChange(events.ControlChange{Kind: ch.kind, Resource: ch.resource, ID: ch.id, Actor: "test", At: time.Now(), Spec: spec})
	}
	b := e.wait(id, time.Minute, ended)
	if b.Status != events.BatchCompleted || b.RequestCounts.Completed != 5 {
		t.Fatalf("%s %+v", b.Status, b.RequestCounts)
	}
}

// TestBatchBoundsTheBytesInFlight: a job keeps the bodies of the lines it
// has sent until they are answered, so large lines are sent fewer at a
// time: with 400 KB lines and a 1 MiB bound, at most two are in flight.
func TestBatchBoundsTheBytesInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.delay = 30 * time.Millisecond
	e.runner("batch-a", func(c *jobs.Config) { c.MaxInFlightBytes = 1 << 20 })
	big := strings.Repeat("tide ", 80_000)
	var in bytes.Buffer
	const n = 24
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"id-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","max_tokens":8,"messages":[{"role":"user","content":%q}]}}`+"\n", i, big)
	}
	id := e.create(in.Bytes(), nil)
	if b := e.wait(id, time.Minute, ended); b.Status != events.BatchCompleted || b.RequestCounts.Completed != n {
		t.Fatalf("status %s: %+v", b.Status, b.RequestCounts)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.maxBusy > 2 {
		t.Fatalf("%d lines of 400 KB were in flight at once under a 1 MiB bound", e.maxBusy)
	}
}
