package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
	"go.uber.org/zap"
)

// KeyStore is a keys.Store on the compacted topic terroir.<geo>.keys of
// each geography: the wrapped data keys of a geography's resources stay in
// that geography. Every instance materialises the topics; deleting a key
// writes a tombstone, and compaction removes the wrapped key from the log,
// after which nothing sealed under it can be opened anywhere.
type KeyStore struct {
	b      *Bus
	tables map[string]*Table

	mu    sync.RWMutex
	byID  map[string]keys.WrappedKey
	byRes map[string]map[string]keys.WrappedKey // "<geo>/<resource>" → ID → key
}

// errKeysUnavailable marks a lookup that could not be answered now (the
// key table could not catch up with its topic): unlike a missing key, it
// is worth retrying.
var errKeysUnavailable = errors.New("data keys unavailable")

// syncTimeout bounds how long a lookup waits for a key created by another
// instance to arrive.
const syncTimeout = 5 * time.Second

func newKeyStore(b *Bus) (*KeyStore, error) {
	s := &KeyStore{b: b, tables: map[string]*Table{}, byID: map[string]keys.WrappedKey{}, byRes: map[string]map[string]keys.WrappedKey{}}
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

func (s *KeyStore) apply(d *Delivery) {
	id := string(d.Record.Key)
	if d.Record.Value == nil {
		s.mu.Lock()
		s.remove(id)
		s.mu.Unlock()
		return
	}
	var dk events.DataKey
	if err := d.Decode(context.Background(), &dk); err != nil {
		s.b.log.Error("unreadable data-key record", zap.String("topic", d.Record.Topic), zap.Int64("offset", d.Record.Offset), zap.Error(err))
		return
	}
	if dk.Deleted || dk.KeyID != id {
		s.mu.Lock()
		s.remove(id)
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.add(keys.WrappedKey{ID: dk.KeyID, Geo: dk.Geo, Resource: dk.Resource, KEKID: dk.KEKID, Wrapped: dk.Wrapped, CreatedAt: dk.CreatedAt})
	s.mu.Unlock()
}

func (s *KeyStore) add(k keys.WrappedKey) {
	s.byID[k.ID] = k
	rk := k.Geo + "/" + k.Resource
	if s.byRes[rk] == nil {
		s.byRes[rk] = map[string]keys.WrappedKey{}
	}
	s.byRes[rk][k.ID] = k
}

func (s *KeyStore) remove(id string) {
	k, ok := s.byID[id]
	if !ok {
		return
	}
	delete(s.byID, id)
	rk := k.Geo + "/" + k.Resource
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

// Put implements keys.Store: it returns once the key is durably written.
func (s *KeyStore) Put(ctx context.Context, k keys.WrappedKey) error {
	if _, err := s.table(k.Geo); err != nil {
		return err
	}
	ev := events.DataKey{Geo: k.Geo, Resource: k.Resource, KeyID: k.ID, Wrapped: k.Wrapped, KEKID: k.KEKID,
		Algorithm: events.DataKeyAlgorithm, CreatedAt: k.CreatedAt}
	if err := s.b.Publish(ctx, k.Geo, StreamKeys, Meta{Key: k.ID, Resource: k.Resource, HomeGeo: k.Geo}, ev); err != nil {
		return fmt.Errorf("storing data key %s: %w", k.ID, err)
	}
	s.mu.Lock()
	s.add(k)
	s.mu.Unlock()
	return nil
}

// Get implements keys.Store. A key this instance has not seen yet is
// looked for again after catching up with the topic.
func (s *KeyStore) Get(ctx context.Context, id string) (keys.WrappedKey, error) {
	geo, _, _ := strings.Cut(id, "/")
	return s.lookup(ctx, geo, func() (keys.WrappedKey, bool) {
		k, ok := s.byID[id]
		return k, ok
	})
}

// Current implements keys.Store.
func (s *KeyStore) Current(ctx context.Context, geo, resource string) (keys.WrappedKey, error) {
	return s.lookup(ctx, geo, func() (keys.WrappedKey, bool) {
		k, err := keys.Newest(s.byRes[geo+"/"+resource], geo, resource)
		return k, err == nil
	})
}

func (s *KeyStore) lookup(ctx context.Context, geo string, find func() (keys.WrappedKey, bool)) (keys.WrappedKey, error) {
	s.mu.RLock()
	k, ok := find()
	s.mu.RUnlock()
	if ok {
		return k, nil
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
	k, ok = find()
	s.mu.RUnlock()
	if !ok {
		return keys.WrappedKey{}, keys.ErrKeyNotFound
	}
	return k, nil
}

// Delete implements keys.Store: it writes a tombstone for every key of the
// resource in geo.
func (s *KeyStore) Delete(ctx context.Context, geo, resource string) error {
	t, err := s.table(geo)
	if err != nil {
		return err
	}
	if err := t.Sync(ctx); err != nil {
		return fmt.Errorf("deleting data keys of %s/%s: %w", geo, resource, err)
	}
	s.mu.RLock()
	var ids []string
	for id := range s.byRes[geo+"/"+resource] {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	var errs []error
	for _, id := range ids {
		if err := s.b.Tombstone(ctx, geo, StreamKeys, id); err != nil {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		s.remove(id)
		s.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting data keys of %s/%s: %w", geo, resource, err)
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
