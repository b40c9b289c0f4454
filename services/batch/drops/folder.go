package drops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/terroir-ai/terroir/pkg/blob"
)

// Folder is a blob.Store over a plain directory whose objects are the
// files a person sees: key "acme/inbox/q1.jsonl" is the file
// <dir>/acme/inbox/q1.jsonl, holding exactly the object's bytes. It is
// the dev stack's drop store (TERROIR_BATCH_DROPS_DIR). Unlike blob.Dir
// (whose files carry a metadata record and are named after segments with
// suffixes) it keeps no metadata: Put refuses any, and an Info's Created
// is the file's modification time. Hidden files (a segment starting with
// '.') are never listed, so a writer can fill ".q1.jsonl" and rename it
// to "q1.jsonl" when it is complete. All access goes through an os.Root:
// a symlink inside the directory cannot lead a key outside it.
type Folder struct {
	root *os.Root
}

const folderTmpPrefix = ".put-"

// NewFolder returns a Folder over dir, creating it (0700) if needed.
// Close releases it.
func NewFolder(dir string) (*Folder, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating drop directory: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening drop directory: %w", err)
	}
	return &Folder{root: r}, nil
}

// Close releases the directory.
func (f *Folder) Close() error { return f.root.Close() }

// MakeFolders creates the folders of prefix ("acme/" → acme/inbox,
// acme/outbox, acme/processed), readable by their owner only.
func (f *Folder) MakeFolders(_ context.Context, prefix string) error {
	for _, sub := range []string{inbox, outbox, processed} {
		key := prefix + sub
		if err := blob.ValidateKey(key); err != nil {
			return err
		}
		if err := f.root.MkdirAll(key, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", key, err)
		}
	}
	return nil
}

// Put implements blob.Store; metadata must be empty.
func (f *Folder) Put(ctx context.Context, key string, r io.Reader, md map[string]string) (blob.Info, error) {
	if err := blob.ValidateKey(key); err != nil {
		return blob.Info{}, err
	}
	if len(md) > 0 {
		return blob.Info{}, fmt.Errorf("putting %s: a drop folder keeps no metadata: %w", key, blob.ErrInvalidMetadata)
	}
	dir := path.Dir(key)
	if err := f.root.MkdirAll(dir, 0o700); err != nil {
		return blob.Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	tmp := path.Join(dir, folderTmpPrefix+randomHex()+".tmp")
	file, err := f.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return blob.Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	n, err := io.Copy(file, ctxReader{ctx, r})
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.root.Rename(tmp, key)
	}
	if err != nil {
		_ = f.root.Remove(tmp)
		return blob.Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	fi, err := f.root.Stat(key)
	if err != nil {
		return blob.Info{}, fmt.Errorf("putting %s: %w", key, err)
	}
	return blob.Info{Key: key, Size: n, Created: fi.ModTime()}, nil
}

func (f *Folder) stat(key string) (fs.FileInfo, error) {
	if err := blob.ValidateKey(key); err != nil {
		return nil, err
	}
	fi, err := f.root.Lstat(key)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", key, blob.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return fi, nil
}

// Get implements blob.Store.
func (f *Folder) Get(_ context.Context, key string, rng blob.Range) (io.ReadCloser, blob.Info, error) {
	if _, err := f.stat(key); err != nil {
		return nil, blob.Info{}, err
	}
	file, err := f.root.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, blob.Info{}, fmt.Errorf("%s: %w", key, blob.ErrNotFound)
	}
	if err != nil {
		return nil, blob.Info{}, fmt.Errorf("opening %s: %w", key, err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, blob.Info{}, fmt.Errorf("opening %s: %w", key, err)
	}
	off, n, err := rng.Resolve(fi.Size())
	if err != nil {
		file.Close()
		return nil, blob.Info{}, fmt.Errorf("reading %s: %w", key, err)
	}
	return sectionCloser{io.NewSectionReader(file, off, n), file}, blob.Info{Key: key, Size: fi.Size(), Created: fi.ModTime()}, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Stat implements blob.Store.
func (f *Folder) Stat(_ context.Context, key string) (blob.Info, error) {
	fi, err := f.stat(key)
	if err != nil {
		return blob.Info{}, err
	}
	return blob.Info{Key: key, Size: fi.Size(), Created: fi.ModTime()}, nil
}

// Delete implements blob.Store.
func (f *Folder) Delete(_ context.Context, key string) error {
	if err := blob.ValidateKey(key); err != nil {
		return err
	}
	if err := f.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// Rename moves the file at from to to, replacing what is there: the move
// of an accepted drop from inbox/ to processed/ without a copy.
func (f *Folder) Rename(_ context.Context, from, to string) error {
	for _, k := range []string{from, to} {
		if err := blob.ValidateKey(k); err != nil {
			return err
		}
	}
	if err := f.root.MkdirAll(path.Dir(to), 0o700); err != nil {
		return fmt.Errorf("moving %s: %w", from, err)
	}
	if err := f.root.Rename(from, to); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("moving %s: %w", from, blob.ErrNotFound)
		}
		return fmt.Errorf("moving %s: %w", from, err)
	}
	return nil
}

// Whole reports whether the file at key was renamed (or had its mode
// changed) after its last write — its inode changed after its content —
// which is how a writer that fills a hidden file and renames it into the
// inbox says it is complete. File systems keep these times in ticks of a
// coarse clock (1 to 10 ms), so a rename within the tick of the last
// write is not seen; that file, like any file where the system does not
// say, is taken once it has settled.
func (f *Folder) Whole(_ context.Context, key string) bool {
	fi, err := f.stat(key)
	if err != nil {
		return false
	}
	return renamedAfterWrite(fi)
}

// List implements blob.Store. It lists regular files only, skipping
// hidden ones and symlinks.
func (f *Folder) List(_ context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		if prefix != "" {
			if err := blob.ValidateKey(prefix + "x"); err != nil {
				yield(blob.Info{}, fmt.Errorf("prefix %q: %w", prefix, blob.ErrInvalidKey))
				return
			}
		}
		start := "."
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			start = prefix[:i]
		}
		var infos []blob.Info
		err := fs.WalkDir(f.root.FS(), start, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if strings.HasPrefix(e.Name(), ".") && p != "." {
				if e.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if e.IsDir() || !e.Type().IsRegular() || !strings.HasPrefix(p, prefix) {
				return nil
			}
			fi, err := e.Info()
			if err != nil {
				return nil // removed while walking
			}
			infos = append(infos, blob.Info{Key: p, Size: fi.Size(), Created: fi.ModTime()})
			return nil
		})
		if err != nil {
			yield(blob.Info{}, fmt.Errorf("listing %q: %w", prefix, err))
			return
		}
		slices.SortFunc(infos, func(a, b blob.Info) int { return strings.Compare(a.Key, b.Key) })
		for _, in := range infos {
			if !yield(in, nil) {
				return
			}
		}
	}
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

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
