// Package keys implements Terroir's envelope encryption: customer content is
// sealed with AES-256-GCM under a per-resource data key; data keys are
// wrapped by a per-geography key-encryption key (KEK) that never leaves its
// KeyWrapper. Deleting a resource's data keys makes every copy of its
// content unreadable wherever it lies (crypto-shredding).
//
// Abuse-monitoring records are the one exception: they are sealed under a
// per-geography abuse data key wrapped by the geography's abuse KEK, so the
// subject of a record cannot erase the evidence.
package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Purpose names what a key-encryption key protects.
type Purpose string

const (
	// PurposeData KEKs wrap per-resource data keys.
	PurposeData Purpose = "kek"
	// PurposeAbuse KEKs wrap the geography's abuse-monitoring data key.
	PurposeAbuse Purpose = "abuse"
)

// KEKRef names a key-encryption key without its version.
type KEKRef struct {
	Geo     string
	Purpose Purpose
}

// ID returns the versioned key ID, e.g. "eu/kek/v2".
func (r KEKRef) ID(version int) string {
	return r.Geo + "/" + string(r.Purpose) + "/v" + strconv.Itoa(version)
}

// ParseKEKID splits "eu/kek/v2" into its reference and version.
func ParseKEKID(id string) (KEKRef, int, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "v") {
		return KEKRef{}, 0, fmt.Errorf("malformed KEK id %q", id)
	}
	v, err := strconv.Atoi(parts[2][1:])
	if err != nil || v < 1 {
		return KEKRef{}, 0, fmt.Errorf("malformed KEK id %q: bad version", id)
	}
	return KEKRef{Geo: parts[0], Purpose: Purpose(parts[1])}, v, nil
}

// KeyWrapper wraps and unwraps data keys under key-encryption keys. The
// local implementation reads a keyring file; an external KMS (cloud KMS,
// HSM, Vault transit) implements the same two calls.
type KeyWrapper interface {
	// Wrap seals dek under the primary version of the KEK named by ref,
	// binding aad, and returns the wrapped key and the versioned KEK ID.
	Wrap(ctx context.Context, ref KEKRef, dek, aad []byte) (wrapped []byte, kekID string, err error)
	// Unwrap opens a key wrapped under kekID. Every version that is still
	// held can unwrap, so rotating a KEK keeps older data readable.
	Unwrap(ctx context.Context, kekID string, wrapped, aad []byte) ([]byte, error)
}

// ErrUnknownKEK is returned for a KEK the wrapper does not hold.
var ErrUnknownKEK = errors.New("unknown key-encryption key")

// keyringFile is the on-disk form of the dev keyring: per geography and
// purpose, the KEK versions (base64 of 32 random bytes) and the primary one.
type keyringFile struct {
	Geographies map[string]map[Purpose]*kekVersions `json:"geographies"`
}

type kekVersions struct {
	Primary  int               `json:"primary"`
	Versions map[string]string `json:"versions"`
}

// LocalWrapper is a KeyWrapper over KEKs held in memory, loaded from a
// keyring file. It is meant for development and single-host deployments;
// production plugs an external KMS into KeyWrapper.
type LocalWrapper struct {
	mu      sync.RWMutex
	aeads   map[string]cipher.AEAD // by versioned KEK ID
	primary map[KEKRef]int
}

// LoadKeyFile reads a keyring file written by EnsureKeyFile or RotateKeyFile.
func LoadKeyFile(path string) (*LocalWrapper, error) {
	kf, err := readKeyring(path)
	if err != nil {
		return nil, err
	}
	w := &LocalWrapper{aeads: map[string]cipher.AEAD{}, primary: map[KEKRef]int{}}
	for geo, purposes := range kf.Geographies {
		for purpose, kv := range purposes {
			ref := KEKRef{Geo: geo, Purpose: purpose}
			for vs, b64 := range kv.Versions {
				v, err := strconv.Atoi(vs)
				if err != nil || v < 1 {
					return nil, fmt.Errorf("keyring %s: %s: bad version %q", path, ref.ID(0), vs)
				}
				raw, err := base64.StdEncoding.DecodeString(b64)
				if err != nil || len(raw) != 32 {
					return nil, fmt.Errorf("keyring %s: %s: key must be 32 bytes of base64", path, ref.ID(v))
				}
				a, err := newAEAD(raw)
				if err != nil {
					return nil, fmt.Errorf("keyring %s: %w", path, err)
				}
				w.aeads[ref.ID(v)] = a
			}
			if _, ok := w.aeads[ref.ID(kv.Primary)]; !ok {
				return nil, fmt.Errorf("keyring %s: primary version %d of %s/%s is missing", path, kv.Primary, geo, purpose)
			}
			w.primary[ref] = kv.Primary
		}
	}
	return w, nil
}

// Wrap implements KeyWrapper.
func (w *LocalWrapper) Wrap(_ context.Context, ref KEKRef, dek, aad []byte) ([]byte, string, error) {
	w.mu.RLock()
	v, ok := w.primary[ref]
	a := w.aeads[ref.ID(v)]
	w.mu.RUnlock()
	if !ok {
		return nil, "", fmt.Errorf("wrapping data key under %s/%s: %w", ref.Geo, ref.Purpose, ErrUnknownKEK)
	}
	return a.Seal(nil, nil, dek, aad), ref.ID(v), nil
}

// Unwrap implements KeyWrapper.
func (w *LocalWrapper) Unwrap(_ context.Context, kekID string, wrapped, aad []byte) ([]byte, error) {
	w.mu.RLock()
	a, ok := w.aeads[kekID]
	w.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unwrapping data key under %s: %w", kekID, ErrUnknownKEK)
	}
	dek, err := a.Open(nil, nil, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("unwrapping data key under %s: %w", kekID, err)
	}
	return dek, nil
}

// Geographies lists the geographies the wrapper holds a data KEK for.
func (w *LocalWrapper) Geographies() []string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var out []string
	for ref := range w.primary {
		if ref.Purpose == PurposeData {
			out = append(out, ref.Geo)
		}
	}
	slices.Sort(out)
	return out
}

// EnsureKeyFile creates the dev keyring at path (mode 0600) with a data KEK
// and an abuse KEK for each geography, or adds the missing ones to an
// existing file. Existing keys are never changed.
func EnsureKeyFile(path string, geos []string) error {
	kf, err := readKeyring(path)
	if errors.Is(err, os.ErrNotExist) {
		kf = &keyringFile{Geographies: map[string]map[Purpose]*kekVersions{}}
	} else if err != nil {
		return err
	}
	changed := false
	for _, g := range geos {
		if kf.Geographies[g] == nil {
			kf.Geographies[g] = map[Purpose]*kekVersions{}
		}
		for _, p := range []Purpose{PurposeData, PurposeAbuse} {
			if kf.Geographies[g][p] != nil {
				continue
			}
			kf.Geographies[g][p] = &kekVersions{Primary: 1, Versions: map[string]string{"1": newKeyB64()}}
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return writeKeyring(path, kf)
}

// RotateKeyFile adds a new version of the KEK geo/purpose to the keyring at
// path and makes it primary. Older versions stay, so data wrapped under
// them remains readable; it returns the new version.
func RotateKeyFile(path, geo string, purpose Purpose) (int, error) {
	kf, err := readKeyring(path)
	if err != nil {
		return 0, err
	}
	kv := kf.Geographies[geo][purpose]
	if kv == nil {
		return 0, fmt.Errorf("rotating %s/%s in %s: %w", geo, purpose, path, ErrUnknownKEK)
	}
	next := 0
	for vs := range kv.Versions {
		if v, _ := strconv.Atoi(vs); v > next {
			next = v
		}
	}
	next++
	kv.Versions[strconv.Itoa(next)] = newKeyB64()
	kv.Primary = next
	return next, writeKeyring(path, kf)
}

func readKeyring(path string) (*keyringFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading keyring: %w", err)
	}
	var kf keyringFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("parsing keyring %s: %w", path, err)
	}
	if kf.Geographies == nil {
		kf.Geographies = map[string]map[Purpose]*kekVersions{}
	}
	return &kf, nil
}

func writeKeyring(path string, kf *keyringFile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating keyring folder: %w", err)
	}
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding keyring: %w", err)
	}
	// Write then rename so a crash never leaves a truncated keyring.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing keyring: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing keyring: %w", err)
	}
	return nil
}

func newKeyB64() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails on supported platforms
	return base64.StdEncoding.EncodeToString(k)
}

// newAEAD returns AES-256-GCM with a random 96-bit nonce prepended to each
// ciphertext.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("AES-256 key must be 32 bytes, got %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating AES cipher: %w", err)
	}
	a, err := cipher.NewGCMWithRandomNonce(b)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	return a, nil
}
