// Package filestore is the Files API's storage, shared by every service
// that reads or writes customer files (ingress's Files API, the batch
// service's input and output files): content sealed per file
// (blob.Sealed: a key of its own, wrapped by the resource's data key) in
// the blob store of the resource's home geography under
// "files/<file id>", and metadata as file.object.v1 records of that
// geography's compacted files stream, keyed "<resource>/<file id>",
// materialised in memory by every Store. A resource reaches only its own
// files: every lookup is by resource and ID. Deleting a file removes its
// content and wrapped key, then writes a tombstone; expired files are
// not found from the moment they expire and are deleted by Run.
package filestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// ErrNotFound means the resource has no such file (or it expired), or its
// content is gone.
var ErrNotFound = errors.New("no such file")

// Config is what a Store needs.
type Config struct {
	Bus *bus.Bus
	// Geos are the geographies served: a files table is read for each,
	// and only files homed in one of them can be reached.
	Geos []string
	// Blobs holds the content, sealed per file.
	Blobs *blob.Sealed
	Log   *zap.Logger
	// Now is the clock of expiry; default time.Now.
	Now func() time.Time
}

// Store reads and writes the files of every resource homed in the
// geographies it serves. It is safe for concurrent use.
type Store struct {
	cfg    Config
	view   *view
	tables map[string]*bus.Table
	// stores are the blob stores Open opened, closed with the Store.
	stores blob.Stores
}

// New starts reading the files streams of cfg.Geos; Close stops it.
func New(cfg Config) (*Store, error) {
	if cfg.Bus == nil || cfg.Blobs == nil || len(cfg.Geos) == 0 || cfg.Log == nil {
		return nil, errors.New("filestore: bus, geographies, blob store and logger are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Log = cfg.Log.Named("files")
	s := &Store{cfg: cfg, view: newView(cfg.Log), tables: map[string]*bus.Table{}}
	for _, g := range cfg.Geos {
		t, err := cfg.Bus.NewTable(g, bus.StreamFiles, s.view.apply)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.tables[g] = t
	}
	return s, nil
}

// Close stops reading the files streams. It is idempotent.
func (s *Store) Close() {
	for _, t := range s.tables {
		t.Close()
	}
	_ = s.stores.Close() // the zero Stores (New's) closes nothing
}

// Open opens the blob stores of every geography blobs configures, seals
// their content under b's data keys and returns the Store over them, as
// a service's main wires it; Close closes the stores too.
func Open(blobs blob.Config, b *bus.Bus, geos []string, log *zap.Logger) (*Store, error) {
	stores, err := blob.Open(blobs)
	if err != nil {
		return nil, err
	}
	sealed, err := blob.NewSealed(stores, b.Keys())
	if err == nil {
		var s *Store
		if s, err = New(Config{Bus: b, Geos: geos, Blobs: sealed, Log: log}); err == nil {
			s.stores = stores
			return s, nil
		}
	}
	_ = stores.Close()
	return nil, err
}

// NewID returns a new file ID: "file-" and 32 hex digits.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "file-" + hex.EncodeToString(b)
}

// BlobKey is where a file's content lives under its resource in the
// sealed blob store.
func BlobKey(id string) string { return "files/" + id }

func (s *Store) sync(ctx context.Context, geo string) error {
	t, ok := s.tables[geo]
	if !ok {
		return fmt.Errorf("files: geography %q is not served here", geo)
	}
	return t.Sync(ctx)
}

// Get returns file id of res, unless it expired, after catching up with
// the files stream of res's home geography: a file another instance just
// wrote is found, and one it just deleted is not. No such file is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, res control.Resource, id string) (events.FileObject, error) {
	if err := s.sync(ctx, res.Location); err != nil {
		return events.FileObject{}, err
	}
	if f, ok := s.view.get(res.Name, id, s.cfg.Now()); ok {
		return f, nil
	}
	return events.FileObject{}, ErrNotFound
}

// List returns the live files of res with purpose (any when empty),
// oldest first (ties by ID), after catching up with the files stream of
// res's home geography.
func (s *Store) List(ctx context.Context, res control.Resource, purpose events.FilePurpose) ([]events.FileObject, error) {
	if err := s.sync(ctx, res.Location); err != nil {
		return nil, err
	}
	return s.view.list(res.Name, purpose, s.cfg.Now()), nil
}

// Open reads the bytes rng selects (the zero Range: all) of f's content,
// decrypted; Info.Size is the whole content's size. Content that is gone
// is ErrNotFound; content of a resource whose key was shredded is
// blob.ErrShredded.
func (s *Store) Open(ctx context.Context, f events.FileObject, rng blob.Range) (io.ReadCloser, blob.Info, error) {
	body, info, err := s.cfg.Blobs.Get(ctx, f.HomeGeo, f.Resource, BlobKey(f.ID), rng)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return nil, info, ErrNotFound
	case err != nil:
		return nil, info, fmt.Errorf("reading file %s: %w", f.ID, err)
	}
	return body, info, nil
}

// PutContent streams content, sealed, to where f (its ID, Resource and
// HomeGeo) keeps it, without a record: the first half of Create, for a
// writer that learns the rest of the record after the content (an
// upload whose purpose follows its file). Whatever fails, nothing is
// left stored. Commit makes the content a file; DeleteContent discards
// it.
func (s *Store) PutContent(ctx context.Context, f events.FileObject, content io.Reader) (blob.Info, error) {
	info, err := s.cfg.Blobs.Put(ctx, f.HomeGeo, f.Resource, BlobKey(f.ID), content)
	if err != nil {
		// A failed put stores nothing, but a store may have kept a part:
		// delete it whatever happened.
		if derr := s.DeleteContent(context.WithoutCancel(ctx), f); derr != nil {
			s.cfg.Log.Error("deleting the content of a failed write", zap.String("resource", f.Resource), zap.String("file", f.ID), zap.Error(derr))
		}
		return info, fmt.Errorf("storing file %s: %w", f.ID, err)
	}
	return info, nil
}

// DeleteContent deletes f's content and its wrapped key, leaving any
// record.
func (s *Store) DeleteContent(ctx context.Context, f events.FileObject) error {
	if err := s.cfg.Blobs.Delete(ctx, f.HomeGeo, f.Resource, BlobKey(f.ID)); err != nil {
		return fmt.Errorf("deleting the content of file %s: %w", f.ID, err)
	}
	return nil
}

// Commit writes f's record on the files stream of f.HomeGeo, making the
// content PutContent stored a file, and returns once this Store's view
// has applied it, so the writer's next Get finds it. The record is sealed
// under the resource's data key (the filename is the customer's text).
// If the record cannot be written, the content is deleted; once it is
// written it leads to the content, and a failure to wait for the view
// leaves both.
func (s *Store) Commit(ctx context.Context, f events.FileObject) error {
	t, ok := s.tables[f.HomeGeo]
	var sent *bus.Sending
	err := fmt.Errorf("files: geography %q is not served here", f.HomeGeo)
	if ok {
		sent = s.cfg.Bus.PublishAsync(ctx, f.HomeGeo, bus.StreamFiles,
			bus.Meta{Key: RecordKey(f.Resource, f.ID), RequestID: f.ID, Resource: f.Resource, HomeGeo: f.HomeGeo}, f)
		if err = sent.Wait(); err != nil {
			err = fmt.Errorf("publishing file %s: %w", f.ID, err)
		}
	}
	if err != nil {
		if derr := s.DeleteContent(context.WithoutCancel(ctx), f); derr != nil {
			s.cfg.Log.Error("deleting the content of an unrecorded file", zap.String("resource", f.Resource), zap.String("file", f.ID), zap.Error(derr))
		}
		return err
	}
	part, off := sent.Written()
	return t.WaitFor(ctx, part, off)
}

// Create stores a file a service writes (a batch's output and error
// files, say): it streams content, sealed, into the blob store of
// f.HomeGeo, then commits f's record with Bytes set to the content's
// size, and returns the record once this Store's view has applied it.
// f needs Resource, HomeGeo and Purpose; an empty ID gets NewID(), a zero
// CreatedAt the time the content was stored, an empty Status processed.
// Content streams through (it is never held whole); if it or the record
// cannot be written, nothing is left stored.
func (s *Store) Create(ctx context.Context, f events.FileObject, content io.Reader) (events.FileObject, error) {
	if f.Resource == "" || f.HomeGeo == "" || f.Purpose == "" {
		return f, errors.New("filestore: a file needs a resource, a home geography and a purpose")
	}
	if _, ok := s.tables[f.HomeGeo]; !ok {
		return f, fmt.Errorf("files: geography %q is not served here", f.HomeGeo)
	}
	if f.ID == "" {
		f.ID = NewID()
	}
	info, err := s.PutContent(ctx, f, content)
	if err != nil {
		return f, err
	}
	f.Bytes = info.Size
	if f.CreatedAt.IsZero() {
		f.CreatedAt = info.Created.UTC()
	}
	if f.Status == "" {
		f.Status = events.FileStatusProcessed
	}
	return f, s.Commit(ctx, f)
}

// Delete deletes f: its content and wrapped key first, so a failure after
// it leaves a record a retried delete removes, never content without a
// record that leads to it; then its record (a tombstone), and returns
// once this Store's view has caught up.
func (s *Store) Delete(ctx context.Context, f events.FileObject) error {
	if err := s.DeleteContent(ctx, f); err != nil {
		return err
	}
	if err := s.cfg.Bus.Tombstone(ctx, f.HomeGeo, bus.StreamFiles, RecordKey(f.Resource, f.ID)); err != nil {
		return fmt.Errorf("deleting file %s: %w", f.ID, err)
	}
	return s.sync(ctx, f.HomeGeo)
}

// DeleteResource deletes every file of res: the records (tombstones) and
// the content, whose object keys are shredded with the resource's data
// key of its home geography. The management API calls it before it
// deletes the resource, so a resource created anew under the name starts
// with no files.
func (s *Store) DeleteResource(ctx context.Context, res control.Resource) error {
	for _, id := range s.view.ids(res.Name) {
		if err := s.cfg.Bus.Tombstone(ctx, res.Location, bus.StreamFiles, RecordKey(res.Name, id)); err != nil {
			return fmt.Errorf("deleting the files of %s: %w", res.Name, err)
		}
	}
	if err := s.cfg.Blobs.DeleteResource(ctx, res.Location, res.Name); err != nil {
		return err
	}
	return s.sync(ctx, res.Location)
}
