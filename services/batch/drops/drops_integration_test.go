package drops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/batch/drops"
)

// countingFiles is the real Files core, counting the files it creates.
type countingFiles struct {
	*filestore.Store
	creates atomic.Int32
}

func (f *countingFiles) Create(ctx context.Context, fo events.FileObject, r io.Reader) (events.FileObject, error) {
	f.creates.Add(1)
	return f.Store.Create(ctx, fo, r)
}

type rig struct {
	t       *testing.T
	bus     *bus.Bus
	state   *control.State
	dir     string // the drop folder
	blobDir string
	files   *countingFiles
	jobs    *recorder
	batches *recorder
}

// recorder materialises a stream's decoded records for the test to read.
type recorder struct {
	mu   sync.Mutex
	cmds []events.BatchCommand
	objs map[string]events.BatchObject
	n    int
}

func (r *recorder) apply(d *bus.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	switch d.Meta.Type.Name {
	case events.TypeBatchCommand.Name:
		var c events.BatchCommand
		if err := d.Decode(context.Background(), &c); err == nil {
			r.cmds = append(r.cmds, c)
		}
	case events.TypeBatchObject.Name:
		var b events.BatchObject
		if err := d.Decode(context.Background(), &b); err == nil {
			r.objs[b.ID] = b
		}
	}
}

func newRig(t *testing.T) *rig {
	t.Helper()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	root := t.TempDir()
	stores, err := blob.Open(blob.Config{Geos: map[string]blob.GeoConfig{"eu": {Backend: blob.BackendDir, Dir: filepath.Join(root, "blobs", "eu")}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stores.Close() })
	sealed, err := blob.NewSealed(stores, b.Keys())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := filestore.New(filestore.Config{Bus: b, Geos: []string{"eu"}, Blobs: sealed, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fs.Close)
	r := &rig{t: t, bus: b, state: control.NewState(zap.NewNop()), dir: filepath.Join(root, "drops"), blobDir: filepath.Join(root, "blobs"),
		files: &countingFiles{Store: fs},
		jobs:  &recorder{objs: map[string]events.BatchObject{}}, batches: &recorder{objs: map[string]events.BatchObject{}}}
	for stream, rec := range map[string]*recorder{bus.StreamBatchJobs: r.jobs, bus.StreamBatches: r.batches} {
		tbl, err := b.NewTable("eu", stream, rec.apply)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tbl.Close)
	}
	return r
}

func (r *rig) resource(name, geo string, d *control.BatchDrops, deployments ...string) {
	r.t.Helper()
	spec, _ := json.Marshal(control.Resource{Name: name, Location: geo, ContentLogging: true, BatchDrops: d})
	r.state.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: name, Actor: "test", At: time.Now(), Spec: spec})
	for _, dep := range deployments {
		spec, _ := json.Marshal(control.Deployment{Name: dep, Resource: name, Model: "terroir-ngram"})
		r.state.ApplyChange(events.ControlChange{Kind: events.ControlDeployment, ID: dep, Resource: name, Actor: "test", At: time.Now(), Spec: spec})
	}
}

// watch runs a watcher until the returned stop is called (or the test
// ends).
func (r *rig) watch() (stop func()) {
	r.t.Helper()
	folder, err := drops.NewFolder(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	w, err := drops.New(drops.Config{Geo: "eu", Poll: 20 * time.Millisecond, Settle: 300 * time.Millisecond, MaxBytes: 1 << 20},
		drops.Deps{Bus: r.bus, Control: r.state, Store: folder, Whole: folder.Whole, Files: r.files, Log: zaptest.NewLogger(r.t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("watcher: %v", err)
			}
			folder.Close()
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// drop writes content into the inbox the careful way: a hidden file
// renamed in.
func (r *rig) drop(loc, name, content string) string {
	r.t.Helper()
	in := filepath.Join(r.dir, loc, "inbox")
	if err := os.MkdirAll(in, 0o700); err != nil {
		r.t.Fatal(err)
	}
	tmp := filepath.Join(in, "."+name)
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	time.Sleep(25 * time.Millisecond) // the rename's change time must fall in a later tick of the file system clock than the write
	if err := os.Rename(tmp, filepath.Join(in, name)); err != nil {
		r.t.Fatal(err)
	}
	return filepath.Join(in, name)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func readStatus(t *testing.T, p string) (openai.Batch, bool) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return openai.Batch{}, false
	}
	var b openai.Batch
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("status file %s: %v: %s", p, err, raw)
	}
	return b, true
}

// batchOf returns the one batch the drops of resource made.
func (r *rig) batchesOf(resource string) []events.BatchObject {
	r.batches.mu.Lock()
	defer r.batches.mu.Unlock()
	var out []events.BatchObject
	for _, b := range r.batches.objs {
		if b.Resource == resource {
			out = append(out, b)
		}
	}
	return out
}

func (r *rig) commandsFor(id string) int {
	r.jobs.mu.Lock()
	defer r.jobs.mu.Unlock()
	n := 0
	for _, c := range r.jobs.cmds {
		if c.BatchID == id && c.Action == events.BatchActionCreate && c.Batch != nil && c.Batch.ID == id {
			n++
		}
	}
	return n
}

// advance writes the batch's next record as the batch service would.
func (r *rig) advance(b events.BatchObject) {
	r.t.Helper()
	meta := bus.Meta{Key: drops.BatchKey(b.Resource, b.ID), RequestID: b.ID, Resource: b.Resource, HomeGeo: b.HomeGeo}
	if err := r.bus.Publish(r.t.Context(), "eu", bus.StreamBatches, meta, b); err != nil {
		r.t.Fatal(err)
	}
}

const canary = "CANARY-lighthouse-7731"

func chatLine(id string) string {
	return `{"custom_id":"` + id + `","method":"POST","url":"/v1/chat/completions","body":{"model":"chat","messages":[{"role":"user","content":"` + canary + `"}]}}` + "\n"
}

func TestADropBecomesABatchAndItsOutboxFollowsIt(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil)
	r.watch()
	eventually(t, "the drop folders", func() bool {
		return exists(filepath.Join(r.dir, "acme", "inbox")) && exists(filepath.Join(r.dir, "acme", "outbox")) && exists(filepath.Join(r.dir, "acme", "processed"))
	})
	content := chatLine("a") + chatLine("b")
	inboxFile := r.drop("acme", "q1.jsonl", content)
	eventually(t, "the input to move to processed/", func() bool {
		return !exists(inboxFile) && exists(filepath.Join(r.dir, "acme", "processed", "q1.jsonl"))
	})
	bs := r.batchesOf("acme")
	if len(bs) != 1 {
		t.Fatalf("batches = %+v", bs)
	}
	b := bs[0]
	if b.Source != events.BatchSourceDrop || b.DropName != "q1" || b.APIFlavor != events.APIFlavorOpenAI || b.Endpoint != "/v1/chat/completions" ||
		b.Operation != events.OperationChatCompletions || b.Status != events.BatchValidating || b.Version != 0 || b.HomeGeo != "eu" || b.CompletionWindow != "24h" {
		t.Fatalf("batch record = %+v", b)
	}
	// the rig reads commands and records with separate readers, so the
	// command may arrive after the record
	eventually(t, "the create command", func() bool { return r.commandsFor(b.ID) > 0 })
	if n := r.commandsFor(b.ID); n != 1 {
		t.Fatalf("%d create commands for %s", n, b.ID)
	}
	// The input is a file of purpose batch, sealed in the blob store.
	acme, _ := r.state.Resource("acme")
	in, err := r.files.Get(t.Context(), acme, b.InputFileID)
	if err != nil || in.Purpose != events.FilePurposeBatch || in.Bytes != int64(len(content)) || in.Filename != "q1.jsonl" {
		t.Fatalf("input file %+v %v", in, err)
	}
	rc, _, _ := r.files.Open(t.Context(), in, blob.Range{})
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != content {
		t.Fatal("the stored input differs from the drop file")
	}
	_ = filepath.WalkDir(r.blobDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if raw, _ := os.ReadFile(p); bytes.Contains(raw, []byte(canary)) {
				t.Errorf("plaintext in the blob store: %s", p)
			}
		}
		return nil
	})

	status := filepath.Join(r.dir, "acme", "outbox", "q1.status.json")
	eventually(t, "the status file", func() bool { s, ok := readStatus(t, status); return ok && s.ID == b.ID && s.Status == "validating" })

	// The status file follows the record as the batch service moves it.
	now := time.Now().UTC()
	b.Version, b.Status, b.InProgressAt, b.RequestCounts = 1, events.BatchInProgress, &now, events.BatchCounts{Total: 2, Completed: 1}
	r.advance(b)
	eventually(t, "the status file to show progress", func() bool {
		s, ok := readStatus(t, status)
		return ok && s.Status == "in_progress" && s.RequestCounts == events.BatchCounts{Total: 2, Completed: 1} && s.InProgressAt != nil
	})
	out, err := r.files.Create(t.Context(), events.FileObject{ID: "file-0123456789abcdef0123456789abcdef", Resource: "acme", HomeGeo: "eu", Purpose: events.FilePurposeBatchOutput}, strings.NewReader("{\"custom_id\":\"a\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	errf, _ := r.files.Create(t.Context(), events.FileObject{ID: "file-fedcba9876543210fedcba9876543210", Resource: "acme", HomeGeo: "eu", Purpose: events.FilePurposeBatchOutput}, strings.NewReader("{\"custom_id\":\"b\"}\n"))
	b.Version, b.Status, b.CompletedAt, b.RequestCounts = 2, events.BatchCompleted, &now, events.BatchCounts{Total: 2, Completed: 1, Failed: 1}
	b.OutputFileID, b.ErrorFileID = out.ID, errf.ID
	r.advance(b)
	eventually(t, "the status file to say completed", func() bool { s, ok := readStatus(t, status); return ok && s.Status == "completed" })
	for name, want := range map[string]string{"q1.output.jsonl": "{\"custom_id\":\"a\"}\n", "q1.errors.jsonl": "{\"custom_id\":\"b\"}\n"} {
		if raw, err := os.ReadFile(filepath.Join(r.dir, "acme", "outbox", name)); err != nil || string(raw) != want {
			t.Errorf("%s = %q, %v", name, raw, err)
		}
	}
	s, _ := readStatus(t, status)
	if s.OutputFileID == nil || *s.OutputFileID != out.ID || s.Object != "batch" || s.RequestCounts.Done() != 2 {
		t.Fatalf("final status = %+v", s)
	}
}

func TestDeploymentFromTheFileName(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil, "chat")
	r.watch()
	r.drop("acme", "chat.q2.jsonl", chatLine("a"))
	r.drop("acme", "other.q3.jsonl", chatLine("a"))
	eventually(t, "two batches", func() bool { return len(r.batchesOf("acme")) == 2 })
	for _, b := range r.batchesOf("acme") {
		want := map[string]string{"chat.q2": "chat", "other.q3": ""}[b.DropName]
		if b.Deployment != want {
			t.Errorf("drop %s: deployment %q, want %q", b.DropName, b.Deployment, want)
		}
	}
}

func TestAMalformedDropGetsAStatusFileNamingTheLines(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil)
	r.watch()
	inbox := filepath.Join(r.dir, "acme", "inbox")
	r.drop("acme", "bad.jsonl", "this is not json\n"+chatLine("a")+"{\"custom_id\":\n")
	// Not JSONL at all, and a file that is not .jsonl: neither stops the watcher.
	r.drop("acme", "binary.jsonl", "\x00\x01\x02")
	r.drop("acme", "notes.txt", "left alone")
	eventually(t, "two batches", func() bool { return len(r.batchesOf("acme")) == 2 })
	var bad events.BatchObject
	for _, b := range r.batchesOf("acme") {
		if b.DropName == "bad" {
			bad = b
		}
		if b.Endpoint != "/v1/chat/completions" {
			t.Errorf("drop %s: endpoint %q", b.DropName, b.Endpoint)
		}
	}
	// Validation (the batch service) fails it, naming every bad line.
	now := time.Now().UTC()
	bad.Version, bad.Status, bad.FailedAt = 1, events.BatchFailed, &now
	bad.Errors = []events.BatchError{{Code: "invalid_json_line", Message: "line 1 is not JSON", Line: 1}, {Code: "invalid_json_line", Message: "line 3 is not JSON", Line: 3}}
	r.advance(bad)
	eventually(t, "a failed status naming lines 1 and 3", func() bool {
		s, ok := readStatus(t, filepath.Join(r.dir, "acme", "outbox", "bad.status.json"))
		return ok && s.Status == "failed" && s.Errors != nil && len(s.Errors.Data) == 2 && *s.Errors.Data[0].Line == 1 && *s.Errors.Data[1].Line == 3
	})
	if !exists(filepath.Join(inbox, "notes.txt")) {
		t.Error("a file other than .jsonl was moved")
	}
	// The watcher goes on: another drop is accepted.
	r.drop("acme", "good.jsonl", chatLine("a"))
	eventually(t, "a third batch", func() bool { return len(r.batchesOf("acme")) == 3 })
}

func TestATooLargeDropIsRefusedWithAStatusFile(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil)
	r.watch()
	r.drop("acme", "big.jsonl", strings.Repeat(chatLine("a"), (1<<20)/len(chatLine("a"))+1))
	eventually(t, "the refusal", func() bool {
		s, ok := readStatus(t, filepath.Join(r.dir, "acme", "outbox", "big.status.json"))
		return ok && s.Status == "failed" && s.Errors != nil && s.Errors.Data[0].Code == "file_too_large"
	})
	if len(r.batchesOf("acme")) != 0 {
		t.Fatal("a too-large drop became a batch")
	}
}

func TestAResourceNeverReachesAnothersLocation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil)
	r.resource("globex", "eu", &control.BatchDrops{Enabled: true, Location: "teams/globex/"})
	r.resource("us-corp", "us", nil) // homed elsewhere: another geography's watcher serves it
	r.resource("off", "eu", &control.BatchDrops{Enabled: false, Location: "off/"})
	r.watch()
	r.drop("acme", "a.jsonl", chatLine("a"))
	r.drop("teams/globex", "g.jsonl", chatLine("g"))
	r.drop("us-corp", "u.jsonl", chatLine("u"))
	r.drop("off", "o.jsonl", chatLine("o"))
	eventually(t, "acme's and globex's batches", func() bool { return len(r.batchesOf("acme")) == 1 && len(r.batchesOf("globex")) == 1 })
	if g := r.batchesOf("globex")[0]; g.DropName != "g" {
		t.Fatalf("globex's batch came from %q", g.DropName)
	}
	if r.batchesOf("acme")[0].DropName != "a" {
		t.Fatal("acme's batch came from another drop")
	}
	// A record that makes one resource's location overlap another's
	// (the management API refuses it; a race could still write it) stops
	// both from being served rather than letting either reach the other.
	r.resource("intruder", "eu", &control.BatchDrops{Enabled: true, Location: "acme/"})
	time.Sleep(100 * time.Millisecond) // a few polls
	p := r.drop("acme", "b.jsonl", chatLine("b"))
	time.Sleep(300 * time.Millisecond)
	if !exists(p) || len(r.batchesOf("intruder")) != 0 || len(r.batchesOf("acme")) != 1 {
		t.Fatalf("an overlapping location was served: intruder %d, acme %d", len(r.batchesOf("intruder")), len(r.batchesOf("acme")))
	}
	if exists(filepath.Join(r.dir, "us-corp", "processed", "u.jsonl")) || exists(filepath.Join(r.dir, "off", "processed", "o.jsonl")) {
		t.Fatal("a drop of a resource not served here was taken")
	}
}

func TestARestartMakesNoSecondBatch(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.resource("acme", "eu", nil)
	content := chatLine("a")
	p := r.drop("acme", "q.jsonl", content)
	fi, _ := os.Stat(p)
	batchID, fileID := drops.DropIDs("acme", "q.jsonl", fi.Size(), fi.ModTime())
	// A watcher stored the file and wrote the batch, then died before
	// sending the command and moving the input.
	if _, err := r.files.Create(t.Context(), events.FileObject{ID: fileID, Resource: "acme", HomeGeo: "eu", Purpose: events.FilePurposeBatch}, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	r.advance(events.BatchObject{ID: batchID, Resource: "acme", HomeGeo: "eu", Endpoint: "/v1/chat/completions", Operation: events.OperationChatCompletions,
		APIFlavor: events.APIFlavorOpenAI, Source: events.BatchSourceDrop, DropName: "q", InputFileID: fileID, CompletionWindow: "24h",
		Status: events.BatchValidating, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)})
	// (this test's reader of the batches stream sees the record first)
	eventually(t, "the batch record", func() bool { return len(r.batchesOf("acme")) == 1 })
	creates := r.files.creates.Load()
	stop := r.watch()
	eventually(t, "the input to move", func() bool { return !exists(p) })
	if n := len(r.batchesOf("acme")); n != 1 {
		t.Fatalf("%d batches after the restart", n)
	}
	if r.files.creates.Load() != creates {
		t.Fatal("the input was stored a second time")
	}
	eventually(t, "the create command", func() bool { return r.commandsFor(batchID) == 1 })

	// The batch service starts it.
	b := r.batchesOf("acme")[0]
	b.Version, b.Status = 1, events.BatchInProgress
	r.advance(b)
	eventually(t, "the batch to run", func() bool { return r.batchesOf("acme")[0].Version == 1 })

	// The same file (same name, size and time) back in the inbox after
	// another restart is the same drop: the running batch is neither
	// written again nor started twice.
	stop()
	raw, _ := os.ReadFile(filepath.Join(r.dir, "acme", "processed", "q.jsonl"))
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	r.watch()
	eventually(t, "the input to move again", func() bool { return !exists(p) })
	if bs := r.batchesOf("acme"); len(bs) != 1 || bs[0].Version != 1 || bs[0].Status != events.BatchInProgress {
		t.Fatalf("batches after the second restart: %+v", bs)
	}
	if n := r.commandsFor(batchID); n != 1 {
		t.Fatalf("%d create commands", n)
	}
	if r.files.creates.Load() != creates {
		t.Fatal("the input was stored a second time")
	}
}
