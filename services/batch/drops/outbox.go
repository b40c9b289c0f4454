package drops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
)

// Outbox file names of a drop named name.
func statusKey(loc, name string) string { return loc + outbox + "/" + name + ".status.json" }
func outputKey(loc, name string) string { return loc + outbox + "/" + name + ".output.jsonl" }
func errorsKey(loc, name string) string { return loc + outbox + "/" + name + ".errors.jsonl" }

// syncOutboxes brings the outbox files of every drop batch that changed
// up to date: the status file always, and when the batch has ended, its
// output and error files first, so a status file that says the batch
// ended is never beside a missing output.
func (w *Watcher) syncOutboxes(ctx context.Context) {
	served := w.resources()
	for _, b := range w.view.takeDirty() {
		r, ok := served[b.Resource]
		if !ok || b.Source != events.BatchSourceDrop || b.DropName == "" || !w.view.latestDrop(b) {
			continue
		}
		if err := w.writeOutbox(ctx, r, b); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.deps.Log.Error("writing a drop's outbox", zap.String("resource", b.Resource), zap.String("batch_id", b.ID), zap.Error(err))
			w.view.markDirty(b) // again at the next poll
		}
	}
}

func (w *Watcher) writeOutbox(ctx context.Context, r control.Resource, b events.BatchObject) error {
	loc := r.Drops().Location
	status, err := json.MarshalIndent(openai.NewBatch(b, false), "", "  ")
	if err != nil {
		return err
	}
	status = append(status, '\n')
	key := statusKey(loc, b.DropName)
	if w.written[key] == string(status) || w.sameAsStored(ctx, key, status) {
		w.written[key] = string(status)
		return nil
	}
	if b.Status.Terminal() {
		for _, f := range []struct{ id, key string }{{b.OutputFileID, outputKey(loc, b.DropName)}, {b.ErrorFileID, errorsKey(loc, b.DropName)}} {
			if f.id == "" {
				continue
			}
			if err := w.copyFile(ctx, r, f.id, f.key); err != nil {
				return err
			}
		}
	}
	if _, err := w.deps.Store.Put(ctx, key, bytes.NewReader(status), nil); err != nil {
		return fmt.Errorf("writing the status file: %w", err)
	}
	w.written[key] = string(status)
	return nil
}

// sameAsStored reports whether the store holds exactly want at key, so
// a restarted watcher does not write every status file again.
func (w *Watcher) sameAsStored(ctx context.Context, key string, want []byte) bool {
	rc, info, err := w.deps.Store.Get(ctx, key, blob.Range{})
	if err != nil {
		return false
	}
	defer rc.Close()
	if info.Size != int64(len(want)) {
		return false
	}
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(want))+1))
	return err == nil && bytes.Equal(got, want)
}

// copyFile writes the content of the file id of r to key.
func (w *Watcher) copyFile(ctx context.Context, r control.Resource, id, key string) error {
	f, err := w.deps.Files.Get(ctx, r, id)
	if err != nil {
		return fmt.Errorf("looking for file %s of the batch: %w", id, err)
	}
	rc, _, err := w.deps.Files.Open(ctx, f, blob.Range{})
	if err != nil {
		return fmt.Errorf("reading file %s: %w", id, err)
	}
	defer rc.Close()
	if _, err := w.deps.Store.Put(ctx, key, rc, nil); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// refuse writes the status file of a drop file that cannot become a
// batch at all (too large to store): a failed batch, without an ID,
// naming why. The file stays in the inbox for its owner to remove.
func (w *Watcher) refuse(ctx context.Context, loc string, info blob.Info, name, code, message string) error {
	at := info.Created.Unix()
	st := openai.Batch{Object: "batch", Endpoint: "", CompletionWindow: "24h", Status: events.BatchFailed,
		CreatedAt: at, FailedAt: &at,
		Errors: &openai.BatchErrors{Object: "list", Data: []openai.BatchError{{Code: code, Message: message}}}}
	status, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	status = append(status, '\n')
	key := statusKey(loc, name)
	if w.written[key] == string(status) {
		return nil
	}
	if _, err := w.deps.Store.Put(ctx, key, bytes.NewReader(status), nil); err != nil {
		return fmt.Errorf("writing the status file: %w", err)
	}
	w.written[key] = string(status)
	w.deps.Log.Warn("drop file refused", zap.String("code", code), zap.Int64("bytes", info.Size))
	return nil
}
