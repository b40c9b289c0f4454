package keys_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/keys"
)

// TestShreddedResourceNeverGetsANewKey: once a resource's keys are
// shredded, asking for its key (a request still in flight) fails closed
// and creates nothing, on this manager and on one that starts afterwards
// over the same store, until the resource is created anew.
func TestShreddedResourceNeverGetsANewKey(t *testing.T) {
	t.Parallel()
	p := keyFile(t, "eu")
	store := keys.NewMemoryStore()
	m := newManager(t, p, store)
	ctx := t.Context()
	old, err := m.ForResource(ctx, "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Shred(ctx, "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	for name, mgr := range map[string]*keys.Manager{"same manager": m, "restarted": newManager(t, p, store)} {
		k, err := mgr.ForResource(ctx, "eu", "acme")
		if !errors.Is(err, keys.ErrShredded) || !errors.Is(err, keys.ErrResourceGone) {
			t.Fatalf("%s: ForResource after shredding = %v, %v; want ErrShredded", name, k, err)
		}
	}
	if _, err := store.Current(ctx, "eu", "acme"); !errors.Is(err, keys.ErrShredded) {
		t.Fatalf("a key of the shredded resource is in the store: %v", err)
	}
	if err := store.Put(ctx, keys.WrappedKey{ID: "eu/acme/late", Geo: "eu", Resource: "acme", KEKID: "eu/kek/v1", Wrapped: []byte("w")}); !errors.Is(err, keys.ErrShredded) {
		t.Fatalf("Put of a key of a shredded resource = %v", err)
	}
	if _, err := store.Get(ctx, "eu/acme/late"); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Fatalf("the refused key was kept: %v", err)
	}
	if _, err := m.ForResource(ctx, "eu", "globex"); err != nil {
		t.Fatalf("another resource: %v", err)
	}
	// A resource created again under the name gets a key of its own.
	if err := m.Reopen(ctx, "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	k, err := m.ForResource(ctx, "eu", "acme")
	if err != nil || k.ID == old.ID {
		t.Fatalf("after Reopen: %v, %v", k, err)
	}
	if _, err := m.ByID(ctx, old.ID); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Fatalf("Reopen brought a shredded key back: %v", err)
	}
}

// TestKeysOnlyForExistingResources: the admission check decides whether a
// resource exists before its first key (or a new version) is made; the
// abuse key belongs to the geography and needs none.
func TestKeysOnlyForExistingResources(t *testing.T) {
	t.Parallel()
	exists := map[string]bool{"acme": true}
	admit := func(_ context.Context, resource string) error {
		if !exists[resource] {
			return keys.ErrNoResource
		}
		return nil
	}
	store := keys.NewMemoryStore()
	m := newManager(t, keyFile(t, "eu"), store, keys.WithAdmission(admit))
	ctx := t.Context()
	cases := []struct {
		resource string
		wantErr  error
	}{
		{"acme", nil},
		{"ghost", keys.ErrNoResource},
		{keys.AbuseResource, nil},
	}
	for _, c := range cases {
		_, err := m.ForResource(ctx, "eu", c.resource)
		if !errors.Is(err, c.wantErr) {
			t.Errorf("ForResource(%s) = %v, want %v", c.resource, err, c.wantErr)
		}
	}
	if _, err := store.Current(ctx, "eu", "ghost"); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Errorf("a key was stored for a resource that does not exist: %v", err)
	}
}

// TestDataKeysRoll: after the configured number of seals, or once older
// than the configured age, a resource's key (and the abuse key) is
// replaced by a new version; older versions still open what they sealed
// until the resource is shredded, which takes every version.
func TestDataKeysRoll(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := keys.NewMemoryStore()
	p := keyFile(t, "eu")
	m := newManager(t, p, store, keys.WithRotation(3, 24*time.Hour), keys.WithClock(clock))
	ctx := t.Context()
	versions := map[string][]string{}
	for _, res := range []string{"acme", keys.AbuseResource} {
		t.Run(res, func(t *testing.T) {
			type sealed struct {
				id, text string
				ct       []byte
			}
			var all []sealed
			var ids []string
			for i := range 7 {
				k, err := m.ForResource(ctx, "eu", res)
				if err != nil {
					t.Fatal(err)
				}
				if len(ids) == 0 || ids[len(ids)-1] != k.ID {
					ids = append(ids, k.ID)
				}
				text := string(rune('a' + i))
				all = append(all, sealed{k.ID, text, k.Seal([]byte(text), keys.AAD("r", res, "t"))})
			}
			if len(ids) != 3 { // seals 1-3, 4-6, 7
				t.Fatalf("7 seals at 3 per key used %d keys: %v", len(ids), ids)
			}
			versions[res] = ids
			for _, s := range all {
				k, err := m.ByID(ctx, s.id)
				if err != nil {
					t.Fatal(err)
				}
				if pt, err := k.Open(s.ct, keys.AAD("r", res, "t")); err != nil || string(pt) != s.text {
					t.Fatalf("old version %s: %q, %v", s.id, pt, err)
				}
			}
		})
	}
	// age
	k1, err := m.ForResource(ctx, "eu", "globex")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(23 * time.Hour)
	if k, _ := m.ForResource(ctx, "eu", "globex"); k.ID != k1.ID {
		t.Fatal("rolled before the age limit")
	}
	now = now.Add(2 * time.Hour)
	k2, err := m.ForResource(ctx, "eu", "globex")
	if err != nil || k2.ID == k1.ID {
		t.Fatalf("did not roll after the age limit: %v %v", k2, err)
	}
	// Another instance over the same store takes the newest version
	// rather than making its own.
	other := newManager(t, p, store, keys.WithRotation(3, 24*time.Hour), keys.WithClock(clock))
	if k, err := other.ForResource(ctx, "eu", "globex"); err != nil || k.ID != k2.ID {
		t.Fatalf("another instance: %v, %v; want %s", k, err, k2.ID)
	}
	if err := m.Shred(ctx, "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	for _, id := range versions["acme"] {
		if _, err := other.ByID(ctx, id); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Errorf("version %s survived shredding: %v", id, err)
		}
	}
	for _, id := range versions[keys.AbuseResource] {
		if _, err := other.ByID(ctx, id); err != nil {
			t.Errorf("abuse key version %s: %v", id, err)
		}
	}
}

// TestRotationDefaultsStayInsideTheNonceLimit: AES-GCM with random
// nonces allows about 2^32 messages per key.
func TestRotationDefaultsStayInsideTheNonceLimit(t *testing.T) {
	t.Parallel()
	if keys.DefaultRotateSeals > 1<<24 || keys.DefaultRotateSeals == 0 || keys.DefaultRotateAge > 7*24*time.Hour || keys.DefaultRotateAge <= 0 {
		t.Fatalf("defaults %d seals, %v", keys.DefaultRotateSeals, keys.DefaultRotateAge)
	}
}
