package drops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"path/filepath"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/config"
)

// Backends of a geography's drop store.
const (
	BackendDir = "dir" // a Folder
	BackendS3  = "s3"  // a prefix of the geography's blob bucket
	BackendOff = "off" // no drops in the geography
)

// DefaultDir is the root of the dev stack's drop folders, relative to the
// working directory (the repository root under make run).
var DefaultDir = filepath.Join(".terroir", "drops")

// StoreConfig says where one geography's drops are.
type StoreConfig struct {
	Backend string
	// Dir is the root folder (BackendDir); a resource's location is a
	// folder inside it.
	Dir string
	// Prefix is the key prefix inside the geography's blob bucket
	// (BackendS3), ending in '/'.
	Prefix string
}

// Settings are the drop watchers' configuration.
type Settings struct {
	Geos     map[string]StoreConfig
	Poll     time.Duration
	Settle   time.Duration
	MaxBytes int64
}

// LoadSettings reads the drop configuration of geos from env, recording
// every problem in env:
//
//	TERROIR_BATCH_DROPS_BACKEND(_<GEO>)  dir (default), s3 or off
//	TERROIR_BATCH_DROPS_DIR(_<GEO>)      root of the drop folders (default .terroir/drops)
//	TERROIR_BATCH_DROPS_PREFIX(_<GEO>)   prefix of the drops in the geography's blob bucket (s3; default drops/)
//	TERROIR_BATCH_DROP_POLL              how often inboxes are listed (default 1s)
//	TERROIR_BATCH_DROP_SETTLE            how long a file must stay unchanged (default 2s)
//	TERROIR_BATCH_DROP_MAX_BYTES         largest drop file accepted (default 200 MiB)
func LoadSettings(env *config.Env, geos []string) Settings {
	backend := env.PerGeo("TERROIR_BATCH_DROPS_BACKEND", geos, BackendDir)
	dir := env.PerGeo("TERROIR_BATCH_DROPS_DIR", geos, DefaultDir)
	prefix := env.PerGeo("TERROIR_BATCH_DROPS_PREFIX", geos, "drops/")
	s := Settings{Geos: map[string]StoreConfig{},
		Poll:     env.Duration("TERROIR_BATCH_DROP_POLL", time.Second),
		Settle:   env.Duration("TERROIR_BATCH_DROP_SETTLE", 2*time.Second),
		MaxBytes: int64(env.Int("TERROIR_BATCH_DROP_MAX_BYTES", 200<<20, 1, 1<<40)),
	}
	if s.Poll < 10*time.Millisecond || s.Poll > time.Hour {
		env.Fail("TERROIR_BATCH_DROP_POLL", fmt.Errorf("%s is outside 10ms to 1h", s.Poll))
	}
	if s.Settle > time.Hour {
		env.Fail("TERROIR_BATCH_DROP_SETTLE", fmt.Errorf("%s is longer than 1h", s.Settle))
	}
	for _, g := range geos {
		sc := StoreConfig{Backend: backend[g], Dir: dir[g], Prefix: prefix[g]}
		switch sc.Backend {
		case BackendDir, BackendOff:
		case BackendS3:
			if !strings.HasSuffix(sc.Prefix, "/") || blob.ValidateKey(sc.Prefix+"x") != nil {
				env.Fail("TERROIR_BATCH_DROPS_PREFIX_"+strings.ToUpper(g), fmt.Errorf("%q is not a folder of the bucket (a clean path ending in '/')", sc.Prefix))
			}
		default:
			env.Fail("TERROIR_BATCH_DROPS_BACKEND_"+strings.ToUpper(g), fmt.Errorf("%q is not one of dir, s3, off", sc.Backend))
		}
		s.Geos[g] = sc
	}
	return s
}

// Store is an opened drop store of one geography.
type Store struct {
	blob.Store
	// Whole is Deps.Whole for this store.
	Whole func(ctx context.Context, key string) bool
}

// Open opens the drop store of geo. An s3 store is a prefix of the bucket
// of the geography's blob store (blobs); it is an error when that store
// is not on S3.
func (s Settings) Open(geo string, blobs blob.Config) (Store, error) {
	sc := s.Geos[geo]
	switch sc.Backend {
	case BackendDir:
		f, err := NewFolder(sc.Dir)
		if err != nil {
			return Store{}, fmt.Errorf("drops of %s: %w", geo, err)
		}
		return Store{Store: f, Whole: f.Whole}, nil
	case BackendS3:
		bc := blobs.Geos[geo]
		if bc.Backend != blob.BackendS3 {
			return Store{}, fmt.Errorf("drops of %s: TERROIR_BATCH_DROPS_BACKEND is s3, but the geography's blob store is %q, not s3", geo, bc.Backend)
		}
		st, err := blob.NewS3(bc.S3)
		if err != nil {
			return Store{}, fmt.Errorf("drops of %s: %w", geo, err)
		}
		return Store{Store: Prefixed{Store: st, Prefix: sc.Prefix}}, nil
	}
	return Store{}, errors.New("drops of " + geo + " are off")
}

// Prefixed is a Store whose keys live under Prefix of another: the drops
// of a geography inside its bucket.
type Prefixed struct {
	Store  blob.Store
	Prefix string
}

// Put implements blob.Store.
func (p Prefixed) Put(ctx context.Context, key string, r io.Reader, md map[string]string) (blob.Info, error) {
	in, err := p.Store.Put(ctx, p.Prefix+key, r, md)
	in.Key = strings.TrimPrefix(in.Key, p.Prefix)
	return in, err
}

// Get implements blob.Store.
func (p Prefixed) Get(ctx context.Context, key string, rng blob.Range) (io.ReadCloser, blob.Info, error) {
	rc, in, err := p.Store.Get(ctx, p.Prefix+key, rng)
	in.Key = strings.TrimPrefix(in.Key, p.Prefix)
	return rc, in, err
}

// Stat implements blob.Store.
func (p Prefixed) Stat(ctx context.Context, key string) (blob.Info, error) {
	in, err := p.Store.Stat(ctx, p.Prefix+key)
	in.Key = strings.TrimPrefix(in.Key, p.Prefix)
	return in, err
}

// Delete implements blob.Store.
func (p Prefixed) Delete(ctx context.Context, key string) error {
	return p.Store.Delete(ctx, p.Prefix+key)
}

// List implements blob.Store.
func (p Prefixed) List(ctx context.Context, prefix string) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		for in, err := range p.Store.List(ctx, p.Prefix+prefix) {
			in.Key = strings.TrimPrefix(in.Key, p.Prefix)
			if !yield(in, err) {
				return
			}
		}
	}
}
