package keys

import (
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// AbuseResource is the pseudo-resource under which a geography's
// abuse-monitoring data key is stored. Resource names cannot start with
// '@', so no customer can own (or delete) it.
const AbuseResource = "@abuse"

// ErrKeyNotFound is returned when a data key does not exist, including
// after it was shredded.
var ErrKeyNotFound = errors.New("data key not found")

// WrappedKey is a data key as it is stored: wrapped under a KEK, never in
// the clear.
type WrappedKey struct {
	ID        string    // "<geo>/<resource>/<16 hex>"
	Geo       string    // home geography of the resource
	Resource  string    // owning resource, or AbuseResource
	KEKID     string    // versioned KEK that wraps it, e.g. "eu/kek/v1"
	Wrapped   []byte    // AES-256-GCM ciphertext of the 32-byte key
	CreatedAt time.Time // newest key of a resource is its current key
}

// Store persists wrapped data keys, keyed by resource and home geography.
// Implementations: MemoryStore, and the compacted-topic store of pkg/bus.
type Store interface {
	// Put stores k durably before it returns.
	Put(ctx context.Context, k WrappedKey) error
	// Get returns the key with the given ID, or ErrKeyNotFound.
	Get(ctx context.Context, id string) (WrappedKey, error)
	// Current returns the newest key of geo/resource, or ErrKeyNotFound.
	Current(ctx context.Context, geo, resource string) (WrappedKey, error)
	// Delete removes every key of geo/resource.
	Delete(ctx context.Context, geo, resource string) error
}

// DataKey is an unwrapped data key, ready to seal and open payloads.
type DataKey struct {
	ID       string
	Geo      string
	Resource string
	aead     cipher.AEAD
	hashKey  []byte // derived from the key, never the key itself
	macKey   []byte // likewise, and apart from hashKey
}

// MAC returns a message authentication code of data (HMAC-SHA256 under a
// subkey derived from the data key, distinct from Hash's, so a content
// hash can never serve as a MAC).
func (k *DataKey) MAC(data []byte) []byte {
	m := hmac.New(sha256.New, k.macKey)
	m.Write(data)
	return m.Sum(nil)
}

// VerifyMAC reports whether mac is MAC(data), in constant time.
func (k *DataKey) VerifyMAC(data, mac []byte) bool { return hmac.Equal(k.MAC(data), mac) }

// Hash returns a keyed hash of data (HMAC-SHA256 under a subkey derived
// from the data key) as 64 lowercase hex characters: equal texts give
// equal hashes under one key, and nobody without the key can test a
// guess against it.
func (k *DataKey) Hash(data []byte) string {
	m := hmac.New(sha256.New, k.hashKey)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// Overhead is the number of bytes Seal adds to a plaintext.
func (k *DataKey) Overhead() int { return k.aead.NonceSize() + k.aead.Overhead() }

// Seal encrypts plaintext with AES-256-GCM under a fresh random nonce,
// binding aad, and returns nonce||ciphertext||tag.
func (k *DataKey) Seal(plaintext, aad []byte) []byte {
	return k.aead.Seal(nil, nil, plaintext, aad)
}

// Open reverses Seal; it fails if the ciphertext or aad was altered.
func (k *DataKey) Open(ciphertext, aad []byte) ([]byte, error) {
	pt, err := k.aead.Open(nil, nil, ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("opening payload under data key %s: %w", k.ID, err)
	}
	return pt, nil
}

// AAD builds the associated data that binds a sealed payload to its
// request ID, resource and event type, so a ciphertext cannot be replayed
// under another request, tenant or type. Fields are length-prefixed.
func AAD(requestID, resource, eventType string) []byte {
	b := make([]byte, 0, 12+len(requestID)+len(resource)+len(eventType))
	for _, s := range [...]string{requestID, resource, eventType} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func wrapAAD(id, geo, resource string) []byte { return AAD(id, resource, geo) }

// Manager hands out data keys: it creates a resource's key on first use,
// unwraps keys named by ID, and shreds them. Unwrapped keys are cached by
// ID; every lookup still consults the store, so a key deleted there is
// refused at once.
type Manager struct {
	wrapper KeyWrapper
	store   Store
	now     func() time.Time

	mu     sync.Mutex // serialises creation per Manager
	cacheM sync.RWMutex
	cache  map[string]*DataKey
}

// NewManager returns a Manager over the given wrapper and store.
func NewManager(w KeyWrapper, s Store) (*Manager, error) {
	if w == nil || s == nil {
		return nil, errors.New("keys.NewManager: wrapper and store are required")
	}
	return &Manager{wrapper: w, store: s, now: time.Now, cache: map[string]*DataKey{}}, nil
}

// ForResource returns the current data key of resource in its home
// geography, creating and storing one if it has none.
func (m *Manager) ForResource(ctx context.Context, geo, resource string) (*DataKey, error) {
	purpose := PurposeData
	if resource == AbuseResource {
		purpose = PurposeAbuse
	}
	wk, err := m.store.Current(ctx, geo, resource)
	if errors.Is(err, ErrKeyNotFound) {
		wk, err = m.create(ctx, geo, resource, purpose)
	}
	if err != nil {
		return nil, fmt.Errorf("data key of %s/%s: %w", geo, resource, err)
	}
	return m.unwrap(ctx, wk)
}

// AbuseKey returns the abuse-monitoring data key of geo.
func (m *Manager) AbuseKey(ctx context.Context, geo string) (*DataKey, error) {
	return m.ForResource(ctx, geo, AbuseResource)
}

// ByID returns the data key with the given ID, or ErrKeyNotFound if it
// never existed or was shredded.
func (m *Manager) ByID(ctx context.Context, id string) (*DataKey, error) {
	wk, err := m.store.Get(ctx, id)
	if err != nil {
		m.forget(id)
		return nil, fmt.Errorf("data key %s: %w", id, err)
	}
	return m.unwrap(ctx, wk)
}

// Shred deletes every data key of resource in geo: everything sealed under
// them, wherever it is stored, becomes unreadable.
func (m *Manager) Shred(ctx context.Context, geo, resource string) error {
	if resource == AbuseResource {
		return errors.New("the abuse-monitoring key cannot be shredded by a resource")
	}
	if err := m.store.Delete(ctx, geo, resource); err != nil {
		return fmt.Errorf("shredding data keys of %s/%s: %w", geo, resource, err)
	}
	m.cacheM.Lock()
	for id, k := range m.cache {
		if k.Geo == geo && k.Resource == resource {
			delete(m.cache, id)
		}
	}
	m.cacheM.Unlock()
	return nil
}

// Rewrap re-wraps the current key of geo/resource under the primary KEK
// version (after a rotation) without changing the data key itself.
func (m *Manager) Rewrap(ctx context.Context, geo, resource string) error {
	wk, err := m.store.Current(ctx, geo, resource)
	if err != nil {
		return fmt.Errorf("rewrapping %s/%s: %w", geo, resource, err)
	}
	raw, err := m.wrapper.Unwrap(ctx, wk.KEKID, wk.Wrapped, wrapAAD(wk.ID, wk.Geo, wk.Resource))
	if err != nil {
		return err
	}
	purpose := PurposeData
	if resource == AbuseResource {
		purpose = PurposeAbuse
	}
	wrapped, kekID, err := m.wrapper.Wrap(ctx, KEKRef{Geo: geo, Purpose: purpose}, raw, wrapAAD(wk.ID, wk.Geo, wk.Resource))
	clear(raw)
	if err != nil {
		return err
	}
	wk.Wrapped, wk.KEKID = wrapped, kekID
	return m.store.Put(ctx, wk)
}

func (m *Manager) create(ctx context.Context, geo, resource string, purpose Purpose) (WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Another caller of this Manager may have created it meanwhile.
	if wk, err := m.store.Current(ctx, geo, resource); err == nil {
		return wk, nil
	}
	raw := make([]byte, 32)
	idb := make([]byte, 8)
	_, _ = rand.Read(raw)
	_, _ = rand.Read(idb)
	defer clear(raw)
	id := geo + "/" + resource + "/" + hex.EncodeToString(idb)
	wrapped, kekID, err := m.wrapper.Wrap(ctx, KEKRef{Geo: geo, Purpose: purpose}, raw, wrapAAD(id, geo, resource))
	if err != nil {
		return WrappedKey{}, err
	}
	wk := WrappedKey{ID: id, Geo: geo, Resource: resource, KEKID: kekID, Wrapped: wrapped, CreatedAt: m.now().UTC()}
	if err := m.store.Put(ctx, wk); err != nil {
		return WrappedKey{}, fmt.Errorf("storing new data key: %w", err)
	}
	return wk, nil
}

func (m *Manager) unwrap(ctx context.Context, wk WrappedKey) (*DataKey, error) {
	m.cacheM.RLock()
	k, ok := m.cache[wk.ID]
	m.cacheM.RUnlock()
	if ok {
		return k, nil
	}
	raw, err := m.wrapper.Unwrap(ctx, wk.KEKID, wk.Wrapped, wrapAAD(wk.ID, wk.Geo, wk.Resource))
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	a, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte("terroir content hash v1"))
	signing := hmac.New(sha256.New, raw)
	signing.Write([]byte("terroir record signature v1"))
	k = &DataKey{ID: wk.ID, Geo: wk.Geo, Resource: wk.Resource, aead: a, hashKey: mac.Sum(nil), macKey: signing.Sum(nil)}
	m.cacheM.Lock()
	m.cache[wk.ID] = k
	m.cacheM.Unlock()
	return k, nil
}

func (m *Manager) forget(id string) {
	m.cacheM.Lock()
	delete(m.cache, id)
	m.cacheM.Unlock()
}

// MemoryStore is a Store held in memory, for tests and single-process tools.
type MemoryStore struct {
	mu   sync.RWMutex
	keys map[string]WrappedKey
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{keys: map[string]WrappedKey{}} }

// Put implements Store.
func (s *MemoryStore) Put(_ context.Context, k WrappedKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k.ID] = k
	return nil
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, id string) (WrappedKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[id]
	if !ok {
		return WrappedKey{}, ErrKeyNotFound
	}
	return k, nil
}

// Current implements Store.
func (s *MemoryStore) Current(_ context.Context, geo, resource string) (WrappedKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Newest(s.keys, geo, resource)
}

// Delete implements Store.
func (s *MemoryStore) Delete(_ context.Context, geo, resource string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, k := range s.keys {
		if k.Geo == geo && k.Resource == resource {
			delete(s.keys, id)
		}
	}
	return nil
}

// Newest returns the most recently created key of geo/resource in keys, or
// ErrKeyNotFound. Ties are broken by ID so every store picks the same key.
func Newest(keys map[string]WrappedKey, geo, resource string) (WrappedKey, error) {
	var c []WrappedKey
	for _, k := range keys {
		if k.Geo == geo && k.Resource == resource {
			c = append(c, k)
		}
	}
	if len(c) == 0 {
		return WrappedKey{}, ErrKeyNotFound
	}
	sort.Slice(c, func(i, j int) bool {
		if !c[i].CreatedAt.Equal(c[j].CreatedAt) {
			return c[i].CreatedAt.After(c[j].CreatedAt)
		}
		return c[i].ID > c[j].ID
	})
	return c[0], nil
}
