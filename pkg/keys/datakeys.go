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
	"sync/atomic"
	"time"
)

// AbuseResource is the pseudo-resource under which a geography's
// abuse-monitoring data key is stored. Resource names cannot start with
// '@', so no customer can own (or delete) it.
const AbuseResource = "@abuse"

// ErrKeyNotFound is returned when a data key does not exist, including
// after it was shredded.
var ErrKeyNotFound = errors.New("data key not found")

// ErrResourceGone is why no key can be had for a resource: it does not
// exist, or it was deleted and its keys shredded. Nothing may be sealed
// for it; a request for it fails closed. ErrShredded and ErrNoResource
// wrap it.
var ErrResourceGone = errors.New("the resource does not exist or was deleted")

var (
	// ErrShredded is returned for a resource whose data keys were
	// shredded: none is handed out or created again.
	ErrShredded = fmt.Errorf("its data keys were shredded: %w", ErrResourceGone)
	// ErrNoResource is returned by an admission check (WithAdmission) for
	// a resource the control plane does not know.
	ErrNoResource = fmt.Errorf("no such resource: %w", ErrResourceGone)
)

// Rotation defaults: a data key is replaced after this many seals by one
// process, or once it is this old. AES-GCM with random 96-bit nonces is
// safe for about 2^32 messages per key; 2^24 per process leaves room for
// hundreds of instances and restarts within the age limit.
const (
	DefaultRotateSeals uint64 = 1 << 24
	DefaultRotateAge          = 7 * 24 * time.Hour
)

// WrappedKey is a data key as it is stored: wrapped under a KEK, never in
// the clear.
type WrappedKey struct {
	ID        string    // "<geo>/<resource>/<16 hex>"
	Geo       string    // home geography of the resource
	Resource  string    // owning resource, or AbuseResource
	KEKID     string    // versioned KEK that wraps it, e.g. "eu/kek/v1"
	Wrapped   []byte    // AES-256-GCM ciphertext of the 32-byte key
	CreatedAt time.Time // when it was made, by its maker's clock; it ages from then
	// Seq is the key's place in the store's order of writes (the offset
	// of its first record on a keys topic), set by the store: the key
	// written last is a resource's current key, whatever the clocks of
	// the instances that made them said.
	Seq int64
}

// Store persists wrapped data keys, keyed by resource and home geography,
// and which resources were shredded. Implementations: MemoryStore, and
// the compacted-topic store of pkg/bus.
type Store interface {
	// Put stores k durably before it returns. A key of a shredded
	// resource is refused with ErrShredded and not kept.
	Put(ctx context.Context, k WrappedKey) error
	// Get returns the key with the given ID, or ErrKeyNotFound.
	Get(ctx context.Context, id string) (WrappedKey, error)
	// Current returns the key of geo/resource written last; ErrShredded
	// when the resource was shredded, ErrKeyNotFound when it has none.
	Current(ctx context.Context, geo, resource string) (WrappedKey, error)
	// Delete removes every key of geo/resource and durably records the
	// resource as shredded, so no instance, now or after a restart,
	// stores a key of it again.
	Delete(ctx context.Context, geo, resource string) error
	// Reopen lifts the shredding of geo/resource, for a resource created
	// anew under the same name; the shredded keys stay gone.
	Reopen(ctx context.Context, geo, resource string) error
}

// DataKey is an unwrapped data key, ready to seal and open payloads.
type DataKey struct {
	ID       string
	Geo      string
	Resource string
	aead     cipher.AEAD
	hashKey  []byte        // derived from the key, never the key itself
	macKey   []byte        // likewise, and apart from hashKey
	seals    atomic.Uint64 // seals by this process, for rotation
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
	k.seals.Add(1)
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

// Manager hands out data keys: it creates a resource's key on first use
// (only for a resource that exists and was not shredded), replaces it by a
// new version after a bounded number of seals or age, unwraps keys named
// by ID, and shreds them. Unwrapped keys are cached by ID; every lookup
// still consults the store, so a key deleted there is refused at once.
type Manager struct {
	wrapper     KeyWrapper
	store       Store
	now         func() time.Time
	admit       func(ctx context.Context, resource string) error
	rotateSeals uint64
	rotateAge   time.Duration

	mu     sync.Mutex // serialises creation per Manager
	cacheM sync.RWMutex
	cache  map[string]*DataKey
}

// Option configures a Manager.
type Option func(*Manager)

// WithAdmission sets the check that a resource exists before a key of it
// is created (its first, or a new version); it returns an error wrapping
// ErrNoResource for one that does not. The abuse key is not checked.
// Without it, every resource that was not shredded is admitted.
func WithAdmission(admit func(ctx context.Context, resource string) error) Option {
	return func(m *Manager) { m.admit = admit }
}

// WithRotation sets after how many seals by this process, or at what age,
// a key is replaced by a new version (defaults DefaultRotateSeals and
// DefaultRotateAge); zero keeps the default.
func WithRotation(seals uint64, age time.Duration) Option {
	return func(m *Manager) {
		if seals > 0 {
			m.rotateSeals = seals
		}
		if age > 0 {
			m.rotateAge = age
		}
	}
}

// WithClock sets the clock keys are dated and aged by; default time.Now.
func WithClock(now func() time.Time) Option {
	return func(m *Manager) { m.now = now }
}

// NewManager returns a Manager over the given wrapper and store.
func NewManager(w KeyWrapper, s Store, opts ...Option) (*Manager, error) {
	if w == nil || s == nil {
		return nil, errors.New("keys.NewManager: wrapper and store are required")
	}
	m := &Manager{wrapper: w, store: s, now: time.Now, cache: map[string]*DataKey{},
		rotateSeals: DefaultRotateSeals, rotateAge: DefaultRotateAge}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// ForResource returns the current data key of resource in geo, creating
// one if it has none and replacing it by a new version when it is due.
// It fails with an error wrapping ErrResourceGone for a resource that was
// shredded or (with WithAdmission) does not exist.
func (m *Manager) ForResource(ctx context.Context, geo, resource string) (*DataKey, error) {
	k, err := m.forResource(ctx, geo, resource)
	if err != nil {
		return nil, fmt.Errorf("data key of %s/%s: %w", geo, resource, err)
	}
	return k, nil
}

func (m *Manager) forResource(ctx context.Context, geo, resource string) (*DataKey, error) {
	wk, err := m.store.Current(ctx, geo, resource)
	if errors.Is(err, ErrKeyNotFound) {
		if wk, err = m.create(ctx, geo, resource, ""); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	k, err := m.unwrap(ctx, wk)
	if err != nil || !m.due(k, wk) {
		return k, err
	}
	if wk, err = m.create(ctx, geo, resource, wk.ID); err != nil {
		return nil, err
	}
	return m.unwrap(ctx, wk)
}

// due reports whether k should be replaced by a new version.
func (m *Manager) due(k *DataKey, wk WrappedKey) bool {
	return k.seals.Load() >= m.rotateSeals || m.now().Sub(wk.CreatedAt) >= m.rotateAge
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

// Shred deletes every data key (every version) of resource in geo and
// records the resource as shredded: everything sealed under them,
// wherever it is stored, becomes unreadable, and no key of it is created
// again (ForResource fails with ErrShredded) unless it is reopened.
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

// Reopen lets a resource created anew under the name of a shredded one
// have keys again in geo; what was shredded stays unreadable.
func (m *Manager) Reopen(ctx context.Context, geo, resource string) error {
	if err := m.store.Reopen(ctx, geo, resource); err != nil {
		return fmt.Errorf("reopening %s/%s: %w", geo, resource, err)
	}
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

// create makes a new key of geo/resource: its first when replacing is
// empty, else the version after replacing. If the store already holds a
// different current key (another caller or instance made one meanwhile),
// that key is returned instead, so instances converge on the newest.
func (m *Manager) create(ctx context.Context, geo, resource, replacing string) (WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, err := m.store.Current(ctx, geo, resource)
	switch {
	case err == nil && cur.ID != replacing:
		return cur, nil
	case err != nil && !errors.Is(err, ErrKeyNotFound):
		return WrappedKey{}, err
	}
	purpose := PurposeData
	if resource == AbuseResource {
		purpose = PurposeAbuse
	} else if m.admit != nil {
		if err := m.admit(ctx, resource); err != nil {
			return WrappedKey{}, err
		}
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
	mu       sync.RWMutex
	keys     map[string]WrappedKey
	shredded map[string]bool // "<geo>/<resource>"
	seq      int64
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{keys: map[string]WrappedKey{}, shredded: map[string]bool{}}
}

// Put implements Store.
func (s *MemoryStore) Put(_ context.Context, k WrappedKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shredded[k.Geo+"/"+k.Resource] {
		return ErrShredded
	}
	s.seq++
	k.Seq = s.seq
	if old, ok := s.keys[k.ID]; ok {
		k.Seq = old.Seq // rewrapping keeps a key's place
	}
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
	if s.shredded[geo+"/"+resource] {
		return WrappedKey{}, ErrShredded
	}
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
	s.shredded[geo+"/"+resource] = true
	return nil
}

// Reopen implements Store.
func (s *MemoryStore) Reopen(_ context.Context, geo, resource string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.shredded, geo+"/"+resource)
	return nil
}

// Newest returns the key of geo/resource in keys that was written last
// (highest Seq), or ErrKeyNotFound. Ties are broken by creation time, then
// ID, so every store picks the same key.
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
		if c[i].Seq != c[j].Seq {
			return c[i].Seq > c[j].Seq
		}
		if !c[i].CreatedAt.Equal(c[j].CreatedAt) {
			return c[i].CreatedAt.After(c[j].CreatedAt)
		}
		return c[i].ID > c[j].ID
	})
	return c[0], nil
}
