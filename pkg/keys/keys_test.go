package keys_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/pkg/keys/keystest"
)

func newManager(t *testing.T, path string, s keys.Store, opts ...keys.Option) *keys.Manager {
	t.Helper()
	w, err := keys.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.NewManager(w, s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func keyFile(t *testing.T, geos ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys", "keyring.json")
	if err := keys.EnsureKeyFile(p, geos); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnsureKeyFile(t *testing.T) {
	t.Parallel()
	p := keyFile(t, "eu")
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("keyring mode %v, want 0600", st.Mode().Perm())
	}
	before, _ := os.ReadFile(p)
	if err := keys.EnsureKeyFile(p, []string{"eu"}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(p)
	if !bytes.Equal(before, again) {
		t.Fatal("EnsureKeyFile changed existing keys")
	}
	if err := keys.EnsureKeyFile(p, []string{"eu", "us"}); err != nil {
		t.Fatal(err)
	}
	var kf struct {
		Geographies map[string]map[string]struct {
			Primary  int               `json:"primary"`
			Versions map[string]string `json:"versions"`
		} `json:"geographies"`
	}
	b, _ := os.ReadFile(p)
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"eu", "us"} {
		for _, purpose := range []string{"kek", "abuse"} {
			if kf.Geographies[g][purpose].Primary != 1 {
				t.Errorf("%s/%s missing", g, purpose)
			}
		}
	}
	w, err := keys.LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Geographies(); len(got) != 2 || got[0] != "eu" || got[1] != "us" {
		t.Errorf("Geographies() = %v", got)
	}
}

func TestSealOpenBindsContext(t *testing.T) {
	t.Parallel()
	m := newManager(t, keyFile(t, "eu", "us"), keys.NewMemoryStore())
	ctx := t.Context()
	k, err := m.ForResource(ctx, "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"prompt":"the canary sings at dawn"}`)
	aad := keys.AAD("req-1", "acme", "inference.request.v1")
	ct := k.Seal(msg, aad)
	if bytes.Contains(ct, []byte("canary")) {
		t.Fatal("ciphertext contains plaintext")
	}
	if len(ct) != len(msg)+k.Overhead() {
		t.Errorf("overhead %d, want %d", len(ct)-len(msg), k.Overhead())
	}
	if ct2 := k.Seal(msg, aad); bytes.Equal(ct, ct2) {
		t.Error("two seals of the same message are equal: nonce reuse")
	}
	pt, err := k.Open(ct, aad)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	tampered := append([]byte(nil), ct...)
	tampered[len(tampered)-1] ^= 1
	cases := []struct {
		name string
		ct   []byte
		aad  []byte
	}{
		{"other request", ct, keys.AAD("req-2", "acme", "inference.request.v1")},
		{"other resource", ct, keys.AAD("req-1", "globex", "inference.request.v1")},
		{"other event type", ct, keys.AAD("req-1", "acme", "inference.result.v1")},
		{"flipped bit", tampered, aad},
	}
	for _, c := range cases {
		if _, err := k.Open(c.ct, c.aad); err == nil {
			t.Errorf("%s: Open succeeded", c.name)
		}
	}
	other, err := m.ForResource(ctx, "eu", "globex")
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == k.ID {
		t.Fatal("two resources share a data key")
	}
	if _, err := other.Open(ct, aad); err == nil {
		t.Error("another resource's key opened the payload")
	}
	again, err := m.ForResource(ctx, "eu", "acme")
	if err != nil || again.ID != k.ID {
		t.Errorf("ForResource is not stable: %v %v", again, err)
	}
}

func TestKEKRotationKeepsOldDataReadable(t *testing.T) {
	t.Parallel()
	p := keyFile(t, "eu")
	store := keys.NewMemoryStore()
	ctx := t.Context()
	m1 := newManager(t, p, store)
	k1, err := m1.ForResource(ctx, "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	aad := keys.AAD("r", "acme", "t")
	ct := k1.Seal([]byte("before rotation"), aad)
	wk1, _ := store.Current(ctx, "eu", "acme")
	if wk1.KEKID != "eu/kek/v1" {
		t.Fatalf("KEK id %q", wk1.KEKID)
	}

	v, err := keys.RotateKeyFile(p, "eu", keys.PurposeData)
	if err != nil || v != 2 {
		t.Fatalf("rotate: %d, %v", v, err)
	}
	m2 := newManager(t, p, store)
	k, err := m2.ByID(ctx, wk1.ID) // still wrapped under v1
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := k.Open(ct, aad); err != nil || string(pt) != "before rotation" {
		t.Fatalf("old data after rotation: %q, %v", pt, err)
	}
	newKey, err := m2.ForResource(ctx, "eu", "fresh")
	if err != nil {
		t.Fatal(err)
	}
	wk2, _ := store.Get(ctx, newKey.ID)
	if wk2.KEKID != "eu/kek/v2" {
		t.Errorf("new key wrapped under %q, want eu/kek/v2", wk2.KEKID)
	}
	if err := m2.Rewrap(ctx, "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	wk1b, _ := store.Get(ctx, wk1.ID)
	if wk1b.KEKID != "eu/kek/v2" {
		t.Errorf("rewrapped under %q", wk1b.KEKID)
	}
	m3 := newManager(t, p, store)
	k3, err := m3.ByID(ctx, wk1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := k3.Open(ct, aad); err != nil || string(pt) != "before rotation" {
		t.Fatalf("after rewrap: %q, %v", pt, err)
	}
}

func TestShredMakesContentUnreadable(t *testing.T) {
	t.Parallel()
	store := keys.NewMemoryStore()
	m := newManager(t, keyFile(t, "eu"), store)
	ctx := t.Context()
	k, err := m.ForResource(ctx, "eu", "acme")
	if err != nil {
		t.Fatal(err)
	}
	abuse, err := m.AbuseKey(ctx, "eu")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Shred(ctx, "eu", "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ByID(ctx, k.ID); !errors.Is(err, keys.ErrKeyNotFound) {
		t.Fatalf("shredded key still usable: %v", err)
	}
	if _, err := m.ByID(ctx, abuse.ID); err != nil {
		t.Fatalf("abuse key went with the resource: %v", err)
	}
	if err := m.Shred(ctx, "eu", keys.AbuseResource); err == nil {
		t.Fatal("abuse key could be shredded")
	}
}

func TestAbuseKeyUsesAbuseKEK(t *testing.T) {
	t.Parallel()
	store := keys.NewMemoryStore()
	m := newManager(t, keyFile(t, "eu"), store)
	k, err := m.AbuseKey(t.Context(), "eu")
	if err != nil {
		t.Fatal(err)
	}
	wk, _ := store.Get(t.Context(), k.ID)
	if wk.KEKID != "eu/abuse/v1" {
		t.Errorf("abuse key wrapped under %q", wk.KEKID)
	}
}

func TestUnknownGeographyAndKEK(t *testing.T) {
	t.Parallel()
	p := keyFile(t, "eu")
	m := newManager(t, p, keys.NewMemoryStore())
	if _, err := m.ForResource(t.Context(), "jp", "acme"); !errors.Is(err, keys.ErrUnknownKEK) {
		t.Errorf("unknown geography: %v", err)
	}
	w, _ := keys.LoadKeyFile(p)
	if _, err := w.Unwrap(context.Background(), "eu/kek/v9", []byte("x"), nil); !errors.Is(err, keys.ErrUnknownKEK) {
		t.Errorf("unknown version: %v", err)
	}
	for _, bad := range []string{"", "eu", "eu/kek", "eu/kek/2", "eu/kek/v0", "eu/kek/vx"} {
		if _, _, err := keys.ParseKEKID(bad); err == nil {
			t.Errorf("ParseKEKID(%q) accepted", bad)
		}
	}
}

func TestLoadKeyFileRejectsBadFiles(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"not json":        `{`,
		"short key":       `{"geographies":{"eu":{"kek":{"primary":1,"versions":{"1":"AAAA"}}}}}`,
		"missing primary": `{"geographies":{"eu":{"kek":{"primary":2,"versions":{"1":"` + string(bytes.Repeat([]byte("A"), 43)) + `="}}}}}`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k.json")
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := keys.LoadKeyFile(p); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestMemoryStoreContract(t *testing.T) {
	t.Parallel()
	keystest.Run(t, func(*testing.T) func() keys.Store {
		s := keys.NewMemoryStore()
		return func() keys.Store { return s }
	})
}

func BenchmarkSeal1KB(b *testing.B) {
	m := newManagerB(b)
	k, _ := m.ForResource(context.Background(), "eu", "acme")
	msg := bytes.Repeat([]byte("x"), 1024)
	aad := keys.AAD("req-0123456789", "acme", "inference.request.v1")
	b.SetBytes(1024)
	for b.Loop() {
		_ = k.Seal(msg, aad)
	}
}

func BenchmarkOpen1KB(b *testing.B) {
	m := newManagerB(b)
	k, _ := m.ForResource(context.Background(), "eu", "acme")
	aad := keys.AAD("req-0123456789", "acme", "inference.request.v1")
	ct := k.Seal(bytes.Repeat([]byte("x"), 1024), aad)
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := k.Open(ct, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func newManagerB(b *testing.B) *keys.Manager {
	p := filepath.Join(b.TempDir(), "k.json")
	if err := keys.EnsureKeyFile(p, []string{"eu"}); err != nil {
		b.Fatal(err)
	}
	w, err := keys.LoadKeyFile(p)
	if err != nil {
		b.Fatal(err)
	}
	m, err := keys.NewManager(w, keys.NewMemoryStore())
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func TestHashIsKeyedAndStable(t *testing.T) {
	m := newManager(t, keyFile(t, "eu", "us"), keys.NewMemoryStore())
	ctx := t.Context()
	a, err := m.AbuseKey(ctx, "eu")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.AbuseKey(ctx, "us")
	if err != nil {
		t.Fatal(err)
	}
	h := a.Hash([]byte("same text"))
	if len(h) != 64 || h != a.Hash([]byte("same text")) || h == a.Hash([]byte("other text")) || h == b.Hash([]byte("same text")) {
		t.Fatalf("hash not stable per key or not keyed: %s", h)
	}
}

// TestMACIsKeyedAndApartFromHash: a MAC verifies only under its key and
// for its data, and is never a content hash of the same bytes (content
// hashes are visible in the review index; they must not double as
// signatures).
func TestMACIsKeyedAndApartFromHash(t *testing.T) {
	t.Parallel()
	m := newManager(t, keyFile(t, "eu", "us"), keys.NewMemoryStore())
	eu, err := m.AbuseKey(t.Context(), "eu")
	if err != nil {
		t.Fatal(err)
	}
	us, err := m.AbuseKey(t.Context(), "us")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("grant\x00eu\x00kim")
	mac := eu.MAC(data)
	if !eu.VerifyMAC(data, mac) || eu.VerifyMAC([]byte("grant\x00eu\x00kip"), mac) || us.VerifyMAC(data, mac) {
		t.Error("MAC verifies where it should not, or not where it should")
	}
	if fmt.Sprintf("%x", mac) == eu.Hash(data) {
		t.Error("the MAC of data equals its content hash")
	}
}
