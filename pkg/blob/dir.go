package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Dir is a Store in a directory of its own (by default
// .terroir/blobs/<geo>/), for development and single-host deployments.
//
// Each object is one file: a small metadata record (its creation time and
// metadata) followed by the blob's bytes. The record is never part of the
// blob: Get, Size and ranges count from the byte after it. Keeping both in
// one file makes a put atomic (the file is written under a temporary name,
// synced and renamed into place), so a reader never pairs one version's
// metadata (for Sealed: its wrapped key) with another version's bytes.
//
// Key segments become directory names with the suffix ".d" and the last
// one a file name with the suffix ".blob", so "a/b" and "a/b/c" can both
// exist, and temporary files (".put-*.tmp") are never mistaken for
// objects. All access goes through an os.Root, so even a symlink planted
// inside the directory cannot lead a key outside it.
type Dir struct {
	root *os.Root
	now  func() time.Time
}

const (
	dirMagic   = "TRRBLOB1"
	dirHdrMax  = 64 << 10
	dirSuffix  = ".d"
	blobSuffix = ".blob"
	tmpSuffix  = ".tmp"
)

type dirRecord struct {
	Created  time.Time         `json:"created"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// NewDir returns a Dir over the directory at path, creating it (0700) if
// needed. Close releases it.
func NewDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("creating blob directory: %w", err)
	}
	r, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("opening blob directory: %w", err)
	}
	return &Dir{root: r, now: time.Now}, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// objectPath returns the file of key and the directory that holds it.
func objectPath(key string) (file, dir string) {
	segs := strings.Split(key, "/")
	for i := range segs[:len(segs)-1] {
		segs[i] += dirSuffix
	}
	segs[len(segs)-1] += blobSuffix
	file = strings.Join(segs, "/")
	return file, path.Dir(file)
}

// Put implements Store.
func (d *Dir) Put(ctx context.Context, key string, r io.Reader, md map[string]string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := validateMetadata(md); err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	file, dir := objectPath(key)
	rec := dirRecord{Created: d.now().UTC(), Metadata: md}
	hdr, err := encodeRecord(rec)
	if err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	var tmp string
	var f *os.File
	// A concurrent Delete may remove the emptied directory between
	// MkdirAll and creating the file: try again.
	for attempt := 0; ; attempt++ {
		if err := d.root.MkdirAll(dir, 0o700); err != nil {
			return Info{}, fmt.Errorf("putting %s: %w", key, err)
		}
		tmp = path.Join(dir, ".put-"+randomHex(8)+tmpSuffix)
		f, err = d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 3 {
			return Info{}, fmt.Errorf("putting %s: %w", key, err)
		}
	}
	n, err := writeObject(ctx, f, hdr, r)
	if err != nil {
		_ = d.root.Remove(tmp)
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	if err := d.root.Rename(tmp, file); err != nil {
		_ = d.root.Remove(tmp)
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	if err := d.syncDir(dir); err != nil {
		return Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	return Info{Key: key, Size: n, Created: rec.Created, Metadata: md}, nil
}

func writeObject(ctx context.Context, f *os.File, hdr []byte, r io.Reader) (int64, error) {
	defer f.Close()
	if _, err := f.Write(hdr); err != nil {
		return 0, err
	}
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return n, err
	}
	if err := f.Sync(); err != nil {
		return n, err
	}
	return n, f.Close()
}

func (d *Dir) syncDir(dir string) error {
	f, err := d.root.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// open opens the file of key and reads its record.
func (d *Dir) open(key string, flag int) (*os.File, Info, int64, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, 0, err
	}
	file, _ := objectPath(key)
	f, err := d.root.OpenFile(file, flag, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
		return nil, Info{}, 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, Info{}, 0, fmt.Errorf("opening %s: %w", key, err)
	}
	rec, hlen, err := readRecord(f)
	if errors.Is(err, ErrNotFound) {
		f.Close()
		return nil, Info{}, 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		f.Close()
		return nil, Info{}, 0, fmt.Errorf("reading %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, 0, fmt.Errorf("reading %s: %w", key, err)
	}
	return f, Info{Key: key, Size: fi.Size() - hlen, Created: rec.Created, Metadata: rec.Metadata}, hlen, nil
}

// Get implements Store.
func (d *Dir) Get(_ context.Context, key string, rng Range) (io.ReadCloser, Info, error) {
	f, info, hlen, err := d.open(key, os.O_RDONLY)
	if err != nil {
		return nil, Info{}, err
	}
	off, n, err := rng.Resolve(info.Size)
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("reading %s: %w", key, err)
	}
	return sectionCloser{io.NewSectionReader(f, hlen+off, n), f}, info, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Stat implements Store.
func (d *Dir) Stat(_ context.Context, key string) (Info, error) {
	f, info, _, err := d.open(key, os.O_RDONLY)
	if err != nil {
		return Info{}, err
	}
	f.Close()
	return info, nil
}

// Delete implements Store. It first overwrites the object's metadata
// record in place with zeros and syncs it, so the metadata (for Sealed:
// the wrapped object key) is gone from the file's blocks before the file
// is unlinked; then it removes directories the delete left empty.
func (d *Dir) Delete(_ context.Context, key string) error {
	f, _, hlen, err := d.open(key, os.O_RDWR)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, hlen), 0); err != nil {
		return fmt.Errorf("deleting %s: wiping its metadata: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("deleting %s: wiping its metadata: %w", key, err)
	}
	file, dir := objectPath(key)
	if err := d.root.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	for ; dir != "."; dir = path.Dir(dir) {
		if d.root.Remove(dir) != nil { // not empty, or gone
			break
		}
	}
	return nil
}

// List implements Store.
func (d *Dir) List(_ context.Context, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := validatePrefix(prefix); err != nil {
			yield(Info{}, err)
			return
		}
		// Walk only the directory the prefix names in full.
		start := "."
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			start, _ = objectPath(prefix[:i] + "/x")
			start = path.Dir(start)
		}
		var keys []string
		err := fs.WalkDir(d.root.FS(), start, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // nothing under the prefix, or removed while walking
				}
				return err
			}
			if e.IsDir() || !strings.HasSuffix(p, blobSuffix) {
				return nil
			}
			if k := keyOf(p); strings.HasPrefix(k, prefix) {
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil {
			yield(Info{}, fmt.Errorf("listing %q: %w", prefix, err))
			return
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, info, _, err := d.open(k, os.O_RDONLY)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since the walk
			}
			if err != nil {
				yield(Info{}, err)
				return
			}
			f.Close()
			info.Metadata = nil
			if !yield(info, nil) {
				return
			}
		}
	}
}

// keyOf reverses objectPath.
func keyOf(file string) string {
	segs := strings.Split(file, "/")
	for i := range segs[:len(segs)-1] {
		segs[i] = strings.TrimSuffix(segs[i], dirSuffix)
	}
	segs[len(segs)-1] = strings.TrimSuffix(segs[len(segs)-1], blobSuffix)
	return strings.Join(segs, "/")
}

func encodeRecord(rec dirRecord) ([]byte, error) {
	js, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(dirMagic)+4+len(js))
	b = append(b, dirMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(js)))
	return append(b, js...), nil
}

// readRecord reads the metadata record at the start of f and returns it
// and its length on disk.
func readRecord(f *os.File) (dirRecord, int64, error) {
	var pre [len(dirMagic) + 4]byte
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(len(pre))), pre[:]); err != nil {
		return dirRecord{}, 0, fmt.Errorf("malformed object file: %w", err)
	}
	if bytes.Equal(pre[:], make([]byte, len(pre))) {
		return dirRecord{}, 0, ErrNotFound // wiped by a Delete under way
	}
	if !bytes.Equal(pre[:len(dirMagic)], []byte(dirMagic)) {
		return dirRecord{}, 0, errors.New("malformed object file: no metadata record")
	}
	n := binary.BigEndian.Uint32(pre[len(dirMagic):])
	if n > dirHdrMax {
		return dirRecord{}, 0, errors.New("malformed object file: metadata record too long")
	}
	js := make([]byte, n)
	if _, err := f.ReadAt(js, int64(len(pre))); err != nil {
		return dirRecord{}, 0, fmt.Errorf("malformed object file: %w", err)
	}
	var rec dirRecord
	if err := json.Unmarshal(js, &rec); err != nil {
		return dirRecord{}, 0, fmt.Errorf("malformed object file: %w", err)
	}
	return rec, int64(len(pre)) + int64(n), nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
