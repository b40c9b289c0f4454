package blob

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"
	"sync"

	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"

	"github.com/terroir-ai/terroir/pkg/keys"
)

// Errors of the sealed layer, besides the Store's.
var (
	// ErrShredded: the object's key cannot be unwrapped because its
	// resource's data key was shredded; the content is gone for good.
	ErrShredded = errors.New("the object's key was shredded with its resource's data key: its content is unreadable")
	// ErrCorrupt: the object or its metadata failed authentication: it
	// was altered, truncated, or copied under another name.
	ErrCorrupt = errors.New("sealed blob failed authentication (altered, truncated or moved)")
)

// DefaultSegmentSize is the ciphertext segment size of sealed objects:
// encryption and decryption hold about one segment per stream.
const DefaultSegmentSize = 1 << 20

// Names of the metadata a sealed object is stored with.
const (
	mdCipher  = "terroir-cipher"     // the streaming AEAD, versioned
	mdSegment = "terroir-segment"    // ciphertext segment size, bytes
	mdKeyID   = "terroir-key-id"     // the resource data key that wraps the object key
	mdWrapped = "terroir-object-key" // the object key, sealed by that data key (base64url)

	cipherName = "aes256-gcm-hkdf-sha256-v1"
	keyBytes   = 32
	// Tink's AES-GCM-HKDF streaming format: a header of 1 length byte, a
	// salt of the key's size and a 7-byte nonce prefix, then segments
	// that each end in a 16-byte tag.
	headerLen = 1 + keyBytes + subtle.AESGCMHKDFNoncePrefixSizeInBytes
	tagLen    = subtle.AESGCMHKDFTagSizeInBytes
)

// Keys hands out resource data keys; *keys.Manager implements it.
type Keys interface {
	ForResource(ctx context.Context, geo, resource string) (*keys.DataKey, error)
	ByID(ctx context.Context, id string) (*keys.DataKey, error)
	Shred(ctx context.Context, geo, resource string) error
}

// Sealed stores customer content encrypted before it leaves the process,
// in the store of the resource's home geography, under
// "<resource>/<key>" (a resource can name only its own objects).
//
// Each object has its own key: a fresh 256-bit key for Tink's streaming
// AEAD (AES-GCM-HKDF, 1 MiB segments), so a stream of any size is
// encrypted and decrypted one segment at a time. The object key is sealed
// by the resource's current data key and stored in the object's metadata
// with that data key's ID, so it opens after the data key rolls, and never
// in the blob's bytes. The object's identity (geography, resource, key) is
// the associated data of both the content and the wrapped key, so bytes
// or metadata copied under another name, resource or geography do not
// open.
//
// Deleting an object deletes its metadata (and with it the wrapped key)
// first or at once (see each Store's Delete); shredding the resource's
// data keys (keys.Manager.Shred, DeleteResource) makes every object key
// of the resource unopenable at once, wherever copies lie.
type Sealed struct {
	stores  Stores
	keys    Keys
	segment int
}

// SealedOption configures a Sealed.
type SealedOption func(*Sealed)

// WithSegmentSize sets the ciphertext segment size of new objects (default
// DefaultSegmentSize). Objects keep the size they were written with.
func WithSegmentSize(n int) SealedOption { return func(s *Sealed) { s.segment = n } }

// NewSealed returns a Sealed over stores and keys.
func NewSealed(stores Stores, k Keys, opts ...SealedOption) (*Sealed, error) {
	if k == nil {
		return nil, errors.New("blob.NewSealed: keys are required")
	}
	s := &Sealed{stores: stores, keys: k, segment: DefaultSegmentSize}
	for _, o := range opts {
		o(s)
	}
	if s.segment <= headerLen+tagLen || s.segment > 64<<20 {
		return nil, fmt.Errorf("blob.NewSealed: segment size %d out of range", s.segment)
	}
	return s, nil
}

// locate returns the store of geo and the stored key of resource's key.
func (s *Sealed) locate(geo, resource, key string) (Store, string, error) {
	if err := ValidateKey(resource); err != nil || strings.Contains(resource, "/") {
		return nil, "", fmt.Errorf("resource %q: %w", resource, ErrInvalidKey)
	}
	if err := ValidateKey(key); err != nil {
		return nil, "", err
	}
	st, err := s.stores.For(geo)
	if err != nil {
		return nil, "", err
	}
	full := resource + "/" + key
	if err := ValidateKey(full); err != nil {
		return nil, "", err
	}
	return st, full, nil
}

// Put encrypts the stream r (of any length) into the object key of
// resource in geo, replacing what was there.
func (s *Sealed) Put(ctx context.Context, geo, resource, key string, r io.Reader) (Info, error) {
	st, full, err := s.locate(geo, resource, key)
	if err != nil {
		return Info{}, err
	}
	dk, err := s.keys.ForResource(ctx, geo, resource)
	if err != nil {
		return Info{}, fmt.Errorf("sealing %s in %s: %w", full, geo, err)
	}
	objKey := make([]byte, keyBytes)
	_, _ = rand.Read(objKey)
	wrapped := dk.Seal(objKey, identity("object key", geo, resource, key))
	aead, err := subtle.NewAESGCMHKDF(objKey, "SHA256", keyBytes, s.segment, 0)
	clear(objKey) // the primitive holds its own copy
	if err != nil {
		return Info{}, fmt.Errorf("sealing %s: %w", full, err)
	}
	md := map[string]string{
		mdCipher: cipherName, mdSegment: strconv.Itoa(s.segment),
		mdKeyID: dk.ID, mdWrapped: base64.RawURLEncoding.EncodeToString(wrapped),
	}
	pr, pw := io.Pipe()
	var plain int64
	var wg sync.WaitGroup
	wg.Go(func() {
		w, err := aead.NewEncryptingWriter(pw, identity("content", geo, resource, key))
		if err == nil {
			if plain, err = io.Copy(w, r); err == nil {
				err = w.Close()
			}
		}
		pw.CloseWithError(err) // nil: the store reads EOF
	})
	info, err := st.Put(ctx, full, pr, md)
	pr.CloseWithError(errors.New("the store stopped reading")) // frees the encrypter if Put returned early
	wg.Wait()
	if err != nil {
		return Info{}, fmt.Errorf("sealing %s in %s: %w", full, geo, err)
	}
	return Info{Key: key, Size: plain, Created: info.Created}, nil
}

// Get returns a reader of the plaintext of the object key of resource in
// geo that rng selects, and the object's Info (plaintext size).
//
// Ranges: Tink's streaming AEAD decrypts a stream from its start, so a
// range is read by decrypting from the object's first segment and
// discarding the bytes before the range; only the ciphertext up to the
// segment that holds the range's last byte is fetched from the store.
// Every byte returned is authenticated (its segment's tag checked) before
// it is returned; an error wrapping ErrCorrupt can still come from Read
// for a later segment.
func (s *Sealed) Get(ctx context.Context, geo, resource, key string, rng Range) (io.ReadCloser, Info, error) {
	st, full, err := s.locate(geo, resource, key)
	if err != nil {
		return nil, Info{}, err
	}
	if rng.Offset < 0 || rng.Length < 0 {
		_, _, err := rng.Resolve(0)
		return nil, Info{}, err
	}
	var inner Range // the whole object, unless the range ends early
	if rng.Length > 0 {
		// segment s ends at ciphertext byte (s+1)×segment; one byte more
		// tells the decrypter it is not the last
		last := segmentOf(rng.Offset+rng.Length-1, s.segment)
		inner = Range{Length: (last+1)*int64(s.segment) + 1}
	}
	body, ci, err := st.Get(ctx, full, inner)
	if err != nil {
		return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, err)
	}
	aead, seg, err := s.open(ctx, geo, resource, key, ci.Metadata)
	if err == nil && seg != s.segment && rng.Length > 0 {
		// written with another segment size: the fetched prefix may be
		// too short, so fetch the whole object
		body.Close()
		s2 := *s
		s2.segment = seg
		return s2.Get(ctx, geo, resource, key, rng)
	}
	if err != nil {
		body.Close()
		return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, err)
	}
	size, err := plainSize(ci.Size, seg)
	if err != nil {
		body.Close()
		return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, err)
	}
	off, n, err := rng.Resolve(size)
	if err != nil {
		body.Close()
		return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, err)
	}
	src := &errTrap{r: body}
	dr, err := aead.NewDecryptingReader(src, identity("content", geo, resource, key))
	if err != nil {
		body.Close()
		return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, src.wrap(err))
	}
	pr := &plainReader{r: dr, src: src, body: body, left: n}
	if off > 0 {
		if _, err := io.CopyN(io.Discard, pr.reader(), off); err != nil {
			body.Close()
			return nil, Info{}, fmt.Errorf("reading %s in %s: %w", full, geo, src.wrap(err))
		}
	}
	return pr, Info{Key: key, Size: size, Created: ci.Created}, nil
}

// open unwraps the object key named by md and returns its streaming AEAD
// and segment size.
func (s *Sealed) open(ctx context.Context, geo, resource, key string, md map[string]string) (*subtle.AESGCMHKDF, int, error) {
	if md[mdCipher] != cipherName {
		return nil, 0, fmt.Errorf("cipher %q: %w", md[mdCipher], ErrCorrupt)
	}
	seg, err := strconv.Atoi(md[mdSegment])
	if err != nil || seg <= headerLen+tagLen || seg > 64<<20 {
		return nil, 0, fmt.Errorf("segment size %q: %w", md[mdSegment], ErrCorrupt)
	}
	kid := md[mdKeyID]
	if !strings.HasPrefix(kid, geo+"/"+resource+"/") {
		return nil, 0, fmt.Errorf("wrapped under key %q of another resource: %w", kid, ErrCorrupt)
	}
	wrapped, err := base64.RawURLEncoding.DecodeString(md[mdWrapped])
	if err != nil {
		return nil, 0, fmt.Errorf("wrapped object key: %w", ErrCorrupt)
	}
	dk, err := s.keys.ByID(ctx, kid)
	if errors.Is(err, keys.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", ErrShredded, err)
	}
	if err != nil {
		return nil, 0, err
	}
	objKey, err := dk.Open(wrapped, identity("object key", geo, resource, key))
	if err != nil {
		return nil, 0, fmt.Errorf("unwrapping the object key: %w", ErrCorrupt)
	}
	defer clear(objKey)
	aead, err := subtle.NewAESGCMHKDF(objKey, "SHA256", keyBytes, seg, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return aead, seg, nil
}

// Stat returns the Info of the object key of resource in geo, its Size the
// plaintext's.
func (s *Sealed) Stat(ctx context.Context, geo, resource, key string) (Info, error) {
	st, full, err := s.locate(geo, resource, key)
	if err != nil {
		return Info{}, err
	}
	ci, err := st.Stat(ctx, full)
	if err != nil {
		return Info{}, fmt.Errorf("stat %s in %s: %w", full, geo, err)
	}
	seg, err := strconv.Atoi(ci.Metadata[mdSegment])
	if err != nil || seg <= headerLen+tagLen {
		return Info{}, fmt.Errorf("stat %s in %s: segment size: %w", full, geo, ErrCorrupt)
	}
	size, err := plainSize(ci.Size, seg)
	if err != nil {
		return Info{}, fmt.Errorf("stat %s in %s: %w", full, geo, err)
	}
	return Info{Key: key, Size: size, Created: ci.Created}, nil
}

// Delete deletes the object key of resource in geo, and with it its
// wrapped object key (see Store.Delete).
func (s *Sealed) Delete(ctx context.Context, geo, resource, key string) error {
	st, full, err := s.locate(geo, resource, key)
	if err != nil {
		return err
	}
	return st.Delete(ctx, full)
}

// List yields the objects of resource in geo whose keys start with
// prefix, in key order, with plaintext sizes (a Stat each).
func (s *Sealed) List(ctx context.Context, geo, resource, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		st, full, err := s.locate(geo, resource, "x")
		if err != nil {
			yield(Info{}, err)
			return
		}
		base := strings.TrimSuffix(full, "x")
		for ci, err := range st.List(ctx, base+prefix) {
			if err != nil {
				yield(Info{}, err)
				return
			}
			info, err := s.Stat(ctx, geo, resource, strings.TrimPrefix(ci.Key, base))
			if errors.Is(err, ErrNotFound) {
				continue // deleted since listed
			}
			if !yield(info, err) || err != nil {
				return
			}
		}
	}
}

// DeleteResource shreds every data key of resource in geo — from then on
// none of its objects opens, wherever copies lie — and then deletes its
// objects from the store.
func (s *Sealed) DeleteResource(ctx context.Context, geo, resource string) error {
	st, full, err := s.locate(geo, resource, "x")
	if err != nil {
		return err
	}
	if err := s.keys.Shred(ctx, geo, resource); err != nil {
		return fmt.Errorf("deleting the blobs of %s in %s: %w", resource, geo, err)
	}
	base := strings.TrimSuffix(full, "x")
	var errs []error
	for ci, err := range st.List(ctx, base) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		if err := st.Delete(ctx, ci.Key); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting the blobs of %s in %s (its keys are shredded): %w", resource, geo, err)
	}
	return nil
}

// identity is the associated data that binds a sealed value to what it
// is and whose: purpose, geography, resource and key, length-prefixed.
func identity(purpose, geo, resource, key string) []byte {
	var b []byte
	for _, f := range [...]string{"terroir blob " + purpose + " v1", geo, resource, key} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// segmentOf returns the index of the segment that holds plaintext byte p.
func segmentOf(p int64, segment int) int64 {
	first := int64(segment - headerLen - tagLen)
	if p < first {
		return 0
	}
	return 1 + (p-first)/int64(segment-tagLen)
}

// plainSize returns the plaintext size of a ciphertext of c bytes: the
// header, then segments that are full but for the last, each with a tag.
func plainSize(c int64, segment int) (int64, error) {
	seg := int64(segment)
	if c < headerLen+tagLen {
		return 0, fmt.Errorf("ciphertext of %d bytes: %w", c, ErrCorrupt)
	}
	n := int64(1)
	if c > seg {
		n += (c - seg + seg - 1) / seg
	}
	p := c - headerLen - n*tagLen
	if p < 0 {
		return 0, fmt.Errorf("ciphertext of %d bytes: %w", c, ErrCorrupt)
	}
	return p, nil
}

// errTrap remembers an error of the stored stream, so that a decryption
// error can be told apart from a failure to read the ciphertext.
type errTrap struct {
	r   io.Reader
	err error
}

func (e *errTrap) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// wrap returns the store's error if reading failed, else err as
// ErrCorrupt.
func (e *errTrap) wrap(err error) error {
	switch {
	case err == nil || err == io.EOF:
		return err
	case e.err != nil:
		return e.err
	default:
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
}

// plainReader returns the range's plaintext and checks that it is whole.
type plainReader struct {
	r    io.Reader
	src  *errTrap
	body io.Closer
	left int64
}

func (p *plainReader) reader() io.Reader {
	return readFunc(func(b []byte) (int, error) {
		n, err := p.r.Read(b)
		if err == io.EOF {
			err = fmt.Errorf("%w: the object ended early", ErrCorrupt)
		}
		return n, p.src.wrap(err)
	})
}

func (p *plainReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.reader().Read(b)
	p.left -= int64(n)
	if p.left == 0 {
		err = nil // the range is whole; later segments are not our concern
	}
	return n, err
}

func (p *plainReader) Close() error { return p.body.Close() }

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }
