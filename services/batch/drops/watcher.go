// Package drops turns JSONL files that people (or their jobs) write into
// a resource's drop location into batches of that resource, and writes
// back beside them what became of each: outbox/<name>.status.json (the
// batch object, kept current), then outbox/<name>.output.jsonl and
// outbox/<name>.errors.jsonl when the batch ends.
//
// A Watcher serves one geography: it polls the inbox/ of every resource
// homed there whose drops are enabled, in the geography's drop store (a
// Folder in the dev stack, a prefix of the geography's bucket in
// production), and materialises the geography's batches stream to follow
// the batches it made.
package drops

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
)

// The folders of a drop location.
const (
	inbox     = "inbox"
	outbox    = "outbox"
	processed = "processed"
)

// Files is what the watcher needs of the Files core (pkg/filestore's
// Store): storing a drop's input as a file of purpose batch (sealed, in
// the home geography's blob store) and reading a batch's output and
// error files.
type Files interface {
	// Create stores the content read from r as the file f (under f.ID
	// when set) and returns it as stored.
	Create(ctx context.Context, f events.FileObject, r io.Reader) (events.FileObject, error)
	// Open returns a reader of the bytes of f's content rng selects.
	Open(ctx context.Context, f events.FileObject, rng blob.Range) (io.ReadCloser, blob.Info, error)
	// Get returns the file id of res; filestore.ErrNotFound when it has
	// none.
	Get(ctx context.Context, res control.Resource, id string) (events.FileObject, error)
}

// Config configures a Watcher.
type Config struct {
	// Geo is the geography whose resources' drops the watcher serves.
	Geo string
	// Poll is how often inboxes are listed (TERROIR_BATCH_DROP_POLL,
	// default 1s).
	Poll time.Duration
	// Settle is how long a file's size and modification time must stay
	// unchanged before it is taken as complete
	// (TERROIR_BATCH_DROP_SETTLE, default 2s). A file renamed into the
	// inbox (or any file of a store whose objects appear whole, as S3's
	// do) is complete at once.
	Settle time.Duration
	// MaxBytes is the largest drop file accepted
	// (TERROIR_BATCH_DROP_MAX_BYTES, default 200 MiB, the Files API's
	// limit for batch input).
	MaxBytes int64
}

// Deps are what a Watcher works with.
type Deps struct {
	Bus     *bus.Bus
	Control *control.State
	// Store is the geography's drop store.
	Store blob.Store
	// Whole, when set, says whether an object of Store is complete
	// without waiting for it to settle. Folder.Whole is the dev stack's;
	// nil means every object is whole (S3: an object appears only once
	// its upload completed).
	Whole func(ctx context.Context, key string) bool
	Files Files
	Log   *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Watcher watches the drop locations of one geography's resources.
type Watcher struct {
	cfg  Config
	deps Deps
	view *View

	seen    map[string]sighting // inbox key → how it looked
	folders map[string]string   // resource → location whose folders were made
	written map[string]string   // outbox status key → the bytes written last
}

// sighting is how a file in an inbox looked when first seen this way.
type sighting struct {
	size  int64
	mtime time.Time
	since time.Time
}

// New returns a Watcher.
func New(cfg Config, deps Deps) (*Watcher, error) {
	switch {
	case cfg.Geo == "":
		return nil, errors.New("drops: no geography")
	case deps.Bus == nil || deps.Control == nil || deps.Store == nil || deps.Files == nil:
		return nil, errors.New("drops: bus, control view, store and files are required")
	case cfg.Poll <= 0 || cfg.Settle < 0 || cfg.MaxBytes <= 0:
		return nil, fmt.Errorf("drops: poll %s, settle %s and max bytes %d must be positive", cfg.Poll, cfg.Settle, cfg.MaxBytes)
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	deps.Log = deps.Log.Named("drops").With(zap.String("geo", cfg.Geo))
	return &Watcher{cfg: cfg, deps: deps, view: NewView(deps.Log),
		seen: map[string]sighting{}, folders: map[string]string{}, written: map[string]string{}}, nil
}

// View is the watcher's view of the batches stream.
func (w *Watcher) View() *View { return w.view }

// Run watches until ctx ends. A failure of one file or one resource is
// logged and tried again at the next poll; it never stops the watcher.
func (w *Watcher) Run(ctx context.Context) error {
	tbl, err := w.deps.Bus.NewTable(w.cfg.Geo, bus.StreamBatches, w.view.Apply)
	if err != nil {
		return err
	}
	defer tbl.Close()
	// Catch up before the first poll: a drop accepted before a restart
	// must be found, not made a second time.
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tbl.Sync(sctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.deps.Log.Warn("catching up with the batches stream", zap.Error(err))
	}
	tick := time.NewTicker(w.cfg.Poll)
	defer tick.Stop()
	for {
		w.scan(ctx, tbl)
		w.syncOutboxes(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-w.view.Changed():
		}
	}
}

// resources returns the resources homed here with drops enabled, and
// their locations. A location that overlaps another resource's (the
// management API refuses that; two racing writes could still make it)
// is served for neither, so no resource reaches another's files.
func (w *Watcher) resources() map[string]control.Resource {
	all := w.deps.Control.Resources()
	out := map[string]control.Resource{}
	for _, r := range all {
		d := r.Drops()
		if r.Location != w.cfg.Geo || !d.Enabled {
			continue
		}
		if _, err := control.CleanDropLocation(d.Location); err != nil {
			continue
		}
		clash := false
		for _, o := range all {
			if o.Name != r.Name && control.DropLocationsOverlap(d.Location, o.Drops().Location) {
				clash = true
				w.deps.Log.Error("drop location overlaps another resource's: not served", zap.String("resource", r.Name))
				break
			}
		}
		if !clash {
			out[r.Name] = r
		}
	}
	return out
}

func (w *Watcher) scan(ctx context.Context, tbl *bus.Table) {
	live := map[string]bool{}
	for name, r := range w.resources() {
		loc := r.Drops().Location
		if w.folders[name] != loc {
			if mk, ok := w.deps.Store.(interface {
				MakeFolders(context.Context, string) error
			}); ok {
				if err := mk.MakeFolders(ctx, loc); err != nil {
					w.deps.Log.Error("making drop folders", zap.String("resource", name), zap.Error(err))
					continue
				}
			}
			w.folders[name] = loc
		}
		prefix := loc + inbox + "/"
		for info, err := range w.deps.Store.List(ctx, prefix) {
			if err != nil {
				w.deps.Log.Error("listing an inbox", zap.String("resource", name), zap.Error(err))
				break
			}
			file := strings.TrimPrefix(info.Key, prefix)
			// Files in sub-folders, hidden files (a writer's file before
			// it renames it in) and files other than .jsonl are left
			// alone.
			if strings.Contains(file, "/") || strings.HasPrefix(file, ".") || !strings.HasSuffix(file, ".jsonl") || file == ".jsonl" {
				continue
			}
			live[info.Key] = true
			if !w.complete(ctx, info) {
				continue
			}
			if err := w.accept(ctx, tbl, r, info); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.deps.Log.Error("accepting a drop file", zap.String("resource", name), zap.Int64("bytes", info.Size), zap.Error(err))
				continue
			}
			delete(w.seen, info.Key)
		}
	}
	for k := range w.seen {
		if !live[k] {
			delete(w.seen, k)
		}
	}
}

// complete reports whether the file is whole: renamed in (or in a store
// whose objects appear whole), or unchanged for Settle.
func (w *Watcher) complete(ctx context.Context, info blob.Info) bool {
	now := w.deps.Now()
	s, ok := w.seen[info.Key]
	if !ok || s.size != info.Size || !s.mtime.Equal(info.Created) {
		s = sighting{size: info.Size, mtime: info.Created, since: now}
		w.seen[info.Key] = s
	}
	if w.deps.Whole == nil || w.deps.Whole(ctx, info.Key) {
		return true
	}
	return now.Sub(s.since) >= w.cfg.Settle
}

// DropIDs returns the batch and file IDs of a drop file: derived from the
// resource, the file's name, size and modification time, so a watcher
// that restarts between storing the file, writing the batch and moving
// the input makes the same batch again, not a second one.
func DropIDs(resource, file string, size int64, mtime time.Time) (batchID, fileID string) {
	sum := func(kind string) string {
		h := sha256.New()
		for _, s := range []string{kind, resource, file, strconv.FormatInt(size, 10), strconv.FormatInt(mtime.UnixNano(), 10)} {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	return "batch_" + sum("batch"), "file-" + sum("file")
}

// accept makes a batch of a complete drop file and moves it out of the
// inbox. Every step can be repeated after a crash.
func (w *Watcher) accept(ctx context.Context, tbl *bus.Table, r control.Resource, info blob.Info) error {
	loc := r.Drops().Location
	file := path.Base(info.Key)
	name := strings.TrimSuffix(file, ".jsonl")
	if info.Size > w.cfg.MaxBytes {
		return w.refuse(ctx, loc, info, name, "file_too_large",
			fmt.Sprintf("The drop file is %d bytes; the most a batch input may have is %d bytes.", info.Size, w.cfg.MaxBytes))
	}
	batchID, fileID := DropIDs(r.Name, file, info.Size, info.Created)
	b, exists := w.view.Get(r.Name, batchID)
	if !exists {
		endpoint, op := w.endpoint(ctx, info.Key)
		in, err := w.deps.Files.Get(ctx, r, fileID)
		if err != nil && !errors.Is(err, filestore.ErrNotFound) {
			return fmt.Errorf("looking for the drop's file: %w", err)
		}
		if err != nil {
			rc, _, err := w.deps.Store.Get(ctx, info.Key, blob.Range{})
			if err != nil {
				return fmt.Errorf("reading the drop file: %w", err)
			}
			in, err = w.deps.Files.Create(ctx, events.FileObject{ID: fileID, Resource: r.Name, HomeGeo: r.Location,
				Purpose: events.FilePurposeBatch, Filename: file, Bytes: info.Size, Status: events.FileStatusProcessed,
				CreatedAt: w.deps.Now().UTC()}, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("storing the drop file: %w", err)
			}
		}
		now := w.deps.Now().UTC()
		b = events.BatchObject{ID: batchID, Resource: r.Name, HomeGeo: r.Location, Endpoint: endpoint, Operation: op,
			APIFlavor: events.APIFlavorOpenAI, Source: events.BatchSourceDrop, DropName: name, InputFileID: in.ID,
			CompletionWindow: "24h", Status: events.BatchValidating, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
		// <deployment>.<name>.jsonl names the deployment; otherwise the
		// lines' body.model does, which validation reads.
		if dep, _, ok := strings.Cut(name, "."); ok {
			if _, known := w.deps.Control.Deployment(r.Name, dep); known {
				b.Deployment = dep
			}
		}
		meta := bus.Meta{Key: BatchKey(r.Name, batchID), RequestID: batchID, Resource: r.Name, HomeGeo: r.Location}
		s := w.deps.Bus.PublishAsync(ctx, w.cfg.Geo, bus.StreamBatches, meta, b)
		if err := s.Wait(); err != nil {
			return fmt.Errorf("writing batch %s: %w", batchID, err)
		}
		part, off := s.Written()
		if err := tbl.WaitFor(ctx, part, off); err != nil {
			return err
		}
		w.deps.Log.Info("drop accepted", zap.String("resource", r.Name), zap.String("batch_id", batchID),
			zap.String("file_id", in.ID), zap.Int64("bytes", info.Size))
	}
	// The command goes out until the input leaves the inbox: after a
	// crash in between it is sent again, and the batch service takes a
	// command for a batch it runs already as done.
	if b.Version == 0 && b.Status == events.BatchValidating {
		cmd := events.BatchCommand{Action: events.BatchActionCreate, Resource: r.Name, HomeGeo: r.Location, BatchID: batchID, Batch: &b, At: w.deps.Now().UTC()}
		meta := bus.Meta{Key: BatchKey(r.Name, batchID), RequestID: batchID, Resource: r.Name, HomeGeo: r.Location}
		if err := w.deps.Bus.Publish(ctx, w.cfg.Geo, bus.StreamBatchJobs, meta, cmd); err != nil {
			return fmt.Errorf("starting batch %s: %w", batchID, err)
		}
	}
	return w.move(ctx, info.Key, loc+processed+"/"+file)
}

// move moves a drop file out of the inbox: a rename where the store can
// (a Folder), else a copy and a delete.
func (w *Watcher) move(ctx context.Context, from, to string) error {
	if rn, ok := w.deps.Store.(interface {
		Rename(context.Context, string, string) error
	}); ok {
		return rn.Rename(ctx, from, to)
	}
	rc, _, err := w.deps.Store.Get(ctx, from, blob.Range{})
	if err != nil {
		return fmt.Errorf("moving the drop file: %w", err)
	}
	_, err = w.deps.Store.Put(ctx, to, rc, nil)
	rc.Close()
	if err != nil {
		return fmt.Errorf("moving the drop file: %w", err)
	}
	return w.deps.Store.Delete(ctx, from)
}

// maxFirstLine bounds how much of a drop file is read for its endpoint.
const maxFirstLine = 1 << 20

// endpoint reads the url of the file's first line, the endpoint of the
// batch. A first line that names no supported endpoint leaves the
// default, /v1/chat/completions: validation then names every bad line.
func (w *Watcher) endpoint(ctx context.Context, key string) (string, events.Operation) {
	const def = "/v1/chat/completions"
	rc, _, err := w.deps.Store.Get(ctx, key, blob.Range{})
	if err != nil {
		return def, events.OperationChatCompletions
	}
	defer rc.Close()
	line, _ := bufio.NewReaderSize(io.LimitReader(rc, maxFirstLine), maxFirstLine).ReadSlice('\n')
	var first struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(line, &first) != nil {
		return def, events.OperationChatCompletions
	}
	if op, ok := OperationOf(first.URL); ok {
		return first.URL, op
	}
	return def, events.OperationChatCompletions
}

// OperationOf returns the operation of an endpoint a batch may call, in
// its OpenAI or Azure form.
func OperationOf(endpoint string) (events.Operation, bool) {
	switch endpoint {
	case "/v1/chat/completions", "/chat/completions":
		return events.OperationChatCompletions, true
	case "/v1/completions", "/completions":
		return events.OperationCompletions, true
	case "/v1/embeddings", "/embeddings":
		return events.OperationEmbeddings, true
	}
	return "", false
}
