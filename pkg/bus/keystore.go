package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// KeyStore is a keys.Store on the compacted topic terroir.<geo>.keys of
// each geography: the wrapped data keys of a geography's resources stay in
// that geography. Every instance materialises the topics, which have one
// partition, so every instance applies the same records in the same
// order: the key of a resource written last is its current version, and a
// resource's shredding (a record keyed "<geo>/<resource>", which
// compaction keeps) outranks every key of it written before or after.
// Deleting a key writes a tombstone, and compaction removes the wrapped
// key from the log, after which nothing sealed under it can be opened
// anywhere.
type KeyStore struct {
	b      *Bus
	tables map[string]*Table

	mu       sync.RWMutex
	byID     map[string]keys.WrappedKey
	byRes    map[string]map[string]keys.WrappedKey // "<geo>/<resource>" → ID → key
	shredded map[string]bool                       // "<geo>/<resource>"
	// orphans are keys of shredded resources whose wrapped value is still
	// in the log: written before the shredding was seen, or after it by
	// an instance that had not seen it. Their tombstones are owed.
	orphans map[string]map[string]bool // "<geo>/<resource>" → IDs
}

// errKeysUnavailable marks a lookup that could not be answered now (the
// key table could not catch up with its topic): unlike a missing key, it
// is worth retrying.
var errKeysUnavailable = errors.New("data keys unavailable")

// syncTimeout bounds how long a lookup waits for a key created by another
// instance to arrive.
const syncTimeout = 5 * time.Second

func newKeyStore(b *Bus) (*KeyStore, error) {
	s := &KeyStore{b: b, tables: map[string]*Table{}, byID: map[string]keys.WrappedKey{},
		byRes: map[string]map[string]keys.WrappedKey{}, shredded: map[string]bool{}, orphans: map[string]map[string]bool{}}
	for _, g := range b.Geos() {
		t, err := b.NewTable(g, StreamKeys, s.apply)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.tables[g] = t
	}
	return s, nil
}

// shredKey is the record key of a resource's shredding; key IDs have
// three parts ("<geo>/<resource>/<hex>"), it has two.
func shredKey(geo, resource string) string { return geo + "/" + resource }

func isShredKey(key string) bool { return strings.Count(key, "/") == 1 }

func (s *KeyStore) apply(d *Delivery) {
	id := string(d.Record.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.Record.Value == nil {
		if isShredKey(id) {
			delete(s.shredded, id)
			return
		}
		s.remove(id)
		return
	}
	var dk events.DataKey
	if err := d.Decode(context.Background(), &dk); err != nil {
		s.b.log.Error("unreadable data-key record", zap.String("topic", d.Record.Topic), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	rk := shredKey(dk.Geo, dk.Resource)
	switch {
	case dk.ResourceShredded && id == rk:
		s.shredded[rk] = true
		for kid := range s.byRes[rk] {
			s.orphan(rk, kid)
		}
		delete(s.byRes, rk)
	case dk.Deleted || dk.KeyID != id:
		s.remove(id)
	case s.shredded[rk]:
		s.orphan(rk, id)
	default:
		k := keys.WrappedKey{ID: dk.KeyID, Geo: dk.Geo, Resource: dk.Resource, KEKID: dk.KEKID, Wrapped: dk.Wrapped,
			CreatedAt: dk.CreatedAt, Seq: d.Record.Offset}
		if old, ok := s.byID[k.ID]; ok {
			k.Seq = old.Seq // rewrapping keeps a key's place
		}
		s.add(k)
	}
}

func (s *KeyStore) orphan(rk, id string) {
	delete(s.byID, id)
	if s.orphans[rk] == nil {
		s.orphans[rk] = map[string]bool{}
	}
	s.orphans[rk][id] = true
}

func (s *KeyStore) add(k keys.WrappedKey) {
	s.byID[k.ID] = k
	rk := shredKey(k.Geo, k.Resource)
	if s.byRes[rk] == nil {
		s.byRes[rk] = map[string]keys.WrappedKey{}
	}
	s.byRes[rk][k.ID] = k
}

func (s *KeyStore) remove(id string) {
	geo, rest, _ := strings.Cut(id, "/")
	res, _, _ := strings.Cut(rest, "/")
	rk := shredKey(geo, res)
	if o := s.orphans[rk]; o[id] {
		delete(o, id)
		if len(o) == 0 {
			delete(s.orphans, rk)
		}
	}
	k, ok := s.byID[id]
	if !ok {
		return
	}
	delete(s.byID, id)
	rk = shredKey(k.Geo, k.Resource)
	delete(s.byRes[rk], id)
	if len(s.byRes[rk]) == 0 {
		delete(s.byRes, rk)
	}
}

func (s *KeyStore) table(geo string) (*Table, error) {
	t, ok := s.tables[geo]
	if !ok {
		return nil, fmt.Errorf("data keys of geography %q are not held here", geo)
	}
	return t, nil
}

func (s *KeyStore) isShredded(geo, resource string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.shredded[shredKey(geo, resource)]
}

// publish writes a record of the keys topic of geo and waits until this
// instance's table has applied it.
func (s *KeyStore) publish(ctx context.Context, geo string, rec func() *Sending) error {
	t, err := s.table(geo)
	if err != nil {
		return err
	}
	sent := rec()
	if err := sent.Wait(); err != nil {
		return err
	}
	part, off := sent.Written()
	return t.WaitFor(ctx, part, off)
}

// Put implements keys.Store: it returns once the key is durably written
// and applied here. A key of a resource whose shredding precedes it on
// the topic is refused with keys.ErrShredded and its record tombstoned.
func (s *KeyStore) Put(ctx context.Context, k keys.WrappedKey) error {
	t, err := s.table(k.Geo)
	if err != nil {
		return err
	}
	if s.isShredded(k.Geo, k.Resource) {
		// Perhaps reopened elsewhere: ask the topic before refusing.
		sctx, cancel := context.WithTimeout(ctx, syncTimeout)
		err := t.Sync(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("storing data key %s: %w", k.ID, err)
		}
		if s.isShredded(k.Geo, k.Resource) {
			return fmt.Errorf("storing data key %s: %w", k.ID, keys.ErrShredded)
		}
	}
	ev := events.DataKey{Geo: k.Geo, Resource: k.Resource, KeyID: k.ID, Wrapped: k.Wrapped, KEKID: k.KEKID,
		Algorithm: events.DataKeyAlgorithm, CreatedAt: k.CreatedAt}
	meta := Meta{Key: k.ID, Resource: k.Resource, HomeGeo: k.Geo}
	if err := s.publish(ctx, k.Geo, func() *Sending { return s.b.PublishAsync(ctx, k.Geo, StreamKeys, meta, ev) }); err != nil {
		return fmt.Errorf("storing data key %s: %w", k.ID, err)
	}
	s.mu.RLock()
	_, kept := s.byID[k.ID]
	s.mu.RUnlock()
	if kept {
		return nil
	}
	// The resource was shredded while the key was on its way.
	if err := s.tombstone(ctx, k.Geo, k.ID); err != nil {
		return fmt.Errorf("withdrawing data key %s of a shredded resource: %w", k.ID, err)
	}
	return fmt.Errorf("storing data key %s: %w", k.ID, keys.ErrShredded)
}

func (s *KeyStore) tombstone(ctx context.Context, geo, key string) error {
	return s.publish(ctx, geo, func() *Sending {
		return s.b.produceAsync(ctx, geo, StreamKeys, &kgo.Record{Topic: s.b.Topic(geo, StreamKeys), Key: []byte(key)})
	})
}

// Get implements keys.Store. A key this instance has not seen yet is
// looked for again after catching up with the topic.
func (s *KeyStore) Get(ctx context.Context, id string) (keys.WrappedKey, error) {
	geo, _, _ := strings.Cut(id, "/")
	return s.lookup(ctx, geo, func() (keys.WrappedKey, error) {
		if k, ok := s.byID[id]; ok {
			return k, nil
		}
		return keys.WrappedKey{}, keys.ErrKeyNotFound
	})
}

// Current implements keys.Store.
func (s *KeyStore) Current(ctx context.Context, geo, resource string) (keys.WrappedKey, error) {
	return s.lookup(ctx, geo, func() (keys.WrappedKey, error) {
		if s.shredded[shredKey(geo, resource)] {
			return keys.WrappedKey{}, keys.ErrShredded
		}
		return keys.Newest(s.byRes[shredKey(geo, resource)], geo, resource)
	})
}

// lookup runs find on the view; when it finds nothing, it catches up with
// the topic and runs it again.
func (s *KeyStore) lookup(ctx context.Context, geo string, find func() (keys.WrappedKey, error)) (keys.WrappedKey, error) {
	s.mu.RLock()
	k, err := find()
	s.mu.RUnlock()
	if !errors.Is(err, keys.ErrKeyNotFound) {
		return k, err
	}
	t, err := s.table(geo)
	if err != nil {
		return keys.WrappedKey{}, fmt.Errorf("%w: %w", keys.ErrKeyNotFound, err)
	}
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := t.Sync(sctx); err != nil {
		return keys.WrappedKey{}, fmt.Errorf("looking up data key: %w: %w", errKeysUnavailable, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return find()
}

// Delete implements keys.Store: it records the resource's shredding in
// geo, then writes a tombstone for every key of it the topic holds.
func (s *KeyStore) Delete(ctx context.Context, geo, resource string) error {
	rk := shredKey(geo, resource)
	ev := events.DataKey{Geo: geo, Resource: resource, KeyID: rk, Algorithm: events.DataKeyAlgorithm,
		CreatedAt: time.Now().UTC(), Deleted: true, ResourceShredded: true}
	meta := Meta{Key: rk, Resource: resource, HomeGeo: geo}
	if err := s.publish(ctx, geo, func() *Sending { return s.b.PublishAsync(ctx, geo, StreamKeys, meta, ev) }); err != nil {
		return fmt.Errorf("shredding data keys of %s/%s: %w", geo, resource, err)
	}
	// Every key written before the shredding is now an orphan here.
	s.mu.RLock()
	var ids []string
	for id := range s.orphans[rk] {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	var errs []error
	for _, id := range ids {
		if err := s.tombstone(ctx, geo, id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting data keys of %s/%s: %w", geo, resource, err)
	}
	return nil
}

// Reopen implements keys.Store: a tombstone lifts the shredding record.
func (s *KeyStore) Reopen(ctx context.Context, geo, resource string) error {
	if err := s.tombstone(ctx, geo, shredKey(geo, resource)); err != nil {
		return fmt.Errorf("reopening %s/%s: %w", geo, resource, err)
	}
	return nil
}

// Sync waits until every geography's key table has caught up.
func (s *KeyStore) Sync(ctx context.Context) error {
	for _, t := range s.tables {
		if err := t.Sync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the tables.
func (s *KeyStore) Close() {
	for _, t := range s.tables {
		t.Close()
	}
}
