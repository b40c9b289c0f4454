package filestore

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// sweepEvery is how often expired files are deleted. An expired file is
// not found from the moment it expires; the sweep removes its content
// and record at most this much later.
const sweepEvery = time.Minute

// Run deletes expired files until ctx ends, sweeping every minute. Every instance sweeps; the
// deletions are idempotent, so instances that race do no harm.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.sweep(ctx, s.cfg.Now())
		}
	}
}

// sweep deletes every file that expired by now: its content (and object
// key) first, then its record.
func (s *Store) sweep(ctx context.Context, now time.Time) {
	var due []events.FileObject
	s.view.mu.RLock()
	for _, files := range s.view.byResource {
		for _, f := range files {
			if expired(f, now) {
				due = append(due, f)
			}
		}
	}
	s.view.mu.RUnlock()
	for _, f := range due {
		if _, ok := s.tables[f.HomeGeo]; !ok {
			continue
		}
		err := s.cfg.Blobs.Delete(ctx, f.HomeGeo, f.Resource, BlobKey(f.ID))
		if err == nil {
			err = s.cfg.Bus.Tombstone(ctx, f.HomeGeo, bus.StreamFiles, RecordKey(f.Resource, f.ID))
		}
		if err != nil {
			s.cfg.Log.Warn("deleting an expired file failed; retried on the next sweep", zap.String("resource", f.Resource),
				zap.String("file", f.ID), zap.Error(err))
			continue
		}
		s.view.remove(f.Resource, f.ID) // the tombstone does the same when it is read
	}
}
