// Package blob stores Terroir's large customer content — uploaded files,
// batch inputs and outputs, vector-store chunks, fine-tuned weights — in
// the blob store of its home geography.
//
// A Store holds the blobs of one geography and never another's; Stores maps
// each configured geography to its Store and refuses the rest. Two
// backends implement Store: a directory per geography (the dev default)
// and an S3 bucket per geography. Every Store passes the contract suite in
// blobtest.
//
// Customer content is never handed to a Store in the clear: Sealed wraps
// Stores and encrypts each object in segments under a key of its own,
// wrapped by its resource's data key (package keys).
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors a Store returns, wrapped with what failed; test with errors.Is.
var (
	// ErrNotFound: no object has that key.
	ErrNotFound = errors.New("blob not found")
	// ErrInvalidKey: the key is not a clean relative path (see ValidateKey).
	ErrInvalidKey = errors.New("invalid blob key")
	// ErrInvalidRange: the range starts at or past the end of the object.
	ErrInvalidRange = errors.New("range not satisfiable")
	// ErrInvalidMetadata: a metadata name or value a Store cannot keep.
	ErrInvalidMetadata = errors.New("invalid blob metadata")
	// ErrUnknownGeo: no store is configured for the geography.
	ErrUnknownGeo = errors.New("no blob store is configured for the geography")
)

// MaxKeyLen is the longest key a Store accepts, in bytes (S3's limit),
// and MaxSegmentLen the longest segment between '/' (so the directory
// store can name a file after it).
const (
	MaxKeyLen     = 1024
	MaxSegmentLen = 250
)

// MaxMetadataLen bounds the metadata of one object: the sum of the lengths
// of its names and values, in bytes (S3 keeps 2 KiB of user metadata).
const MaxMetadataLen = 2048

// Info describes a stored object.
type Info struct {
	Key     string
	Size    int64     // bytes of the blob, without its metadata
	Created time.Time // when the object was written (by the store's clock)
	// Metadata the object was put with. List leaves it nil; Stat and Get
	// fill it.
	Metadata map[string]string
}

// Range selects bytes of an object. The zero Range is the whole object.
type Range struct {
	Offset int64 // first byte, from 0
	Length int64 // bytes from Offset; 0 means to the end of the object
}

// Resolve returns the first byte and the number of bytes r selects in an
// object of size bytes: Length is cut at the end of the object, and an
// Offset at or past the end (but for the zero Range) is ErrInvalidRange.
func (r Range) Resolve(size int64) (off, n int64, err error) {
	if r.Offset < 0 || r.Length < 0 {
		return 0, 0, fmt.Errorf("range %d+%d: %w", r.Offset, r.Length, ErrInvalidRange)
	}
	if r.Offset == 0 && r.Length == 0 {
		return 0, size, nil
	}
	if r.Offset >= size {
		return 0, 0, fmt.Errorf("range from %d of %d bytes: %w", r.Offset, size, ErrInvalidRange)
	}
	n = size - r.Offset
	if r.Length > 0 && r.Length < n {
		n = r.Length
	}
	return r.Offset, n, nil
}

// Store holds the blobs of one geography under keys that are relative
// paths such as "<resource>/files/<file-id>". Implementations are safe for
// concurrent use.
//
// A key that continues another key past a '/' ("a/b" and "a/b/c") is not
// portable: S3 servers over a file system (versitygw's POSIX backend)
// refuse the second. Terroir's key scheme never needs it.
type Store interface {
	// Put stores the bytes read from r (of any length, unknown in
	// advance) under key with metadata, replacing an object already
	// there. Readers see the old object or the new one, never a part.
	// Metadata names are lowercase letters, digits and '-'; values are
	// printable ASCII; MaxMetadataLen bounds the whole.
	Put(ctx context.Context, key string, r io.Reader, metadata map[string]string) (Info, error)
	// Get returns a reader of the bytes of key that rng selects, and the
	// Info of the whole object (Size is the size of the whole). The caller
	// closes the reader.
	Get(ctx context.Context, key string, rng Range) (io.ReadCloser, Info, error)
	// Stat returns the Info of key.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes key, its metadata first or with it. Deleting a key
	// that does not exist is not an error, so a retried delete succeeds.
	Delete(ctx context.Context, key string) error
	// List yields the objects whose keys start with prefix, in ascending
	// byte order of their keys, without metadata. It stops at the first
	// error, which it yields.
	List(ctx context.Context, prefix string) iter.Seq2[Info, error]
}

// ValidateKey reports whether key is a clean relative path a Store
// accepts: non-empty, at most MaxKeyLen bytes of UTF-8, segments of at
// most MaxSegmentLen bytes separated by single '/', no segment "." or
// "..", no leading or trailing '/', and
// no NUL, control character or backslash. Every Store refuses other keys
// with ErrInvalidKey, so no key can reach outside its store.
func ValidateKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("%q: %s: %w", key, why, ErrInvalidKey) }
	switch {
	case key == "":
		return bad("empty")
	case len(key) > MaxKeyLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case !utf8.ValidString(key):
		return bad("not UTF-8")
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return bad("NUL, control character or backslash")
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return bad("empty path segment (leading, trailing or double '/')")
		case ".", "..":
			return bad("'.' or '..' segment")
		}
		if len(seg) > MaxSegmentLen {
			return bad(fmt.Sprintf("a segment longer than %d bytes", MaxSegmentLen))
		}
	}
	return nil
}

// validatePrefix accepts "" and any prefix of a valid key.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A prefix may end in '/' or in part of a segment: check it as a key
	// with a final segment completed.
	if err := ValidateKey(prefix + "x"); err != nil {
		return fmt.Errorf("prefix %q: %w", prefix, ErrInvalidKey)
	}
	return nil
}

// validateMetadata checks names and values against what every backend
// can keep unchanged (S3 sends metadata as HTTP headers).
func validateMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		total += len(k) + len(v)
		if k == "" || strings.ContainsFunc(k, func(r rune) bool {
			return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-'
		}) {
			return fmt.Errorf("name %q: want lowercase letters, digits and '-': %w", k, ErrInvalidMetadata)
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			return fmt.Errorf("value of %q: want printable ASCII: %w", k, ErrInvalidMetadata)
		}
	}
	if total > MaxMetadataLen {
		return fmt.Errorf("%d bytes, more than %d: %w", total, MaxMetadataLen, ErrInvalidMetadata)
	}
	return nil
}

// Stores maps each configured geography to its Store. It never answers
// for a geography it was not given, so content cannot land in another
// geography's store by a fallback.
type Stores struct {
	byGeo map[string]Store
}

// NewStores returns Stores over byGeo (geography → its store).
func NewStores(byGeo map[string]Store) Stores {
	m := make(map[string]Store, len(byGeo))
	for g, s := range byGeo {
		m[g] = s
	}
	return Stores{byGeo: m}
}

// For returns the store of geo, or ErrUnknownGeo.
func (s Stores) For(geo string) (Store, error) {
	st, ok := s.byGeo[geo]
	if !ok || st == nil {
		return nil, fmt.Errorf("geography %q: %w", geo, ErrUnknownGeo)
	}
	return st, nil
}

// Close closes every store that holds resources (an open directory).
func (s Stores) Close() error {
	var errs []error
	for _, st := range s.byGeo {
		if c, ok := st.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Geos lists the configured geographies.
func (s Stores) Geos() []string {
	out := make([]string, 0, len(s.byGeo))
	for g := range s.byGeo {
		out = append(out, g)
	}
	return out
}
