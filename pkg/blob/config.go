package blob

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/config"
)

// Backends a geography's store can use.
const (
	BackendDir = "dir"
	BackendS3  = "s3"
)

// DefaultDir is the directory under which each geography's directory store
// lives (<DefaultDir>/<geo>), relative to the working directory.
var DefaultDir = filepath.Join(".terroir", "blobs")

// GeoConfig configures the blob store of one geography.
type GeoConfig struct {
	Backend string   // BackendDir or BackendS3
	Dir     string   // the geography's directory (BackendDir)
	S3      S3Config // the geography's bucket (BackendS3)
}

// Config maps each geography to the configuration of its store.
type Config struct {
	Geos map[string]GeoConfig
}

// LoadConfig reads the blob store configuration of geos from env,
// recording every problem in env (env.Err reports them):
//
//	TERROIR_BLOB_BACKEND(_<GEO>)                dir (default) or s3
//	TERROIR_BLOB_DIR                            root of the directory stores (default .terroir/blobs); a geography's is <root>/<geo>
//	TERROIR_BLOB_S3_ENDPOINT(_<GEO>)            S3 endpoint URL (default: AWS, by region)
//	TERROIR_BLOB_S3_BUCKET(_<GEO>)              bucket (required for s3; one per geography)
//	TERROIR_BLOB_S3_REGION(_<GEO>)              region (default us-east-1)
//	TERROIR_BLOB_S3_ACCESS_KEY_ID(_<GEO>)       access key ID (required for s3)
//	TERROIR_BLOB_S3_SECRET_ACCESS_KEY(_<GEO>)   secret access key, or TERROIR_BLOB_S3_SECRET_ACCESS_KEY_FILE(_<GEO>) naming a file holding it (required for s3)
//	TERROIR_BLOB_S3_PATH_STYLE(_<GEO>)          true for path-style requests (most non-AWS servers); default false
//
// Two geographies may not share one bucket at one endpoint: a store never
// mixes geographies.
func LoadConfig(env *config.Env, geos []string) Config {
	const p = "TERROIR_BLOB_"
	backend := env.PerGeo(p+"BACKEND", geos, BackendDir)
	root := env.String(p+"DIR", DefaultDir)
	endpoint := env.PerGeo(p+"S3_ENDPOINT", geos, "")
	bucket := env.PerGeo(p+"S3_BUCKET", geos, "")
	region := env.PerGeo(p+"S3_REGION", geos, DefaultS3Region)
	access := env.PerGeo(p+"S3_ACCESS_KEY_ID", geos, "")
	secret := env.SecretPerGeo(p+"S3_SECRET_ACCESS_KEY", geos)
	pathStyle := env.PerGeo(p+"S3_PATH_STYLE", geos, "false")

	// name returns the variable that set v for geo: its _<GEO> form if set.
	name := func(base, geo string) string {
		if g := base + "_" + strings.ToUpper(geo); env.Lookup(g) != "" {
			return g
		}
		if env.Lookup(base) != "" {
			return base
		}
		return base + "_" + strings.ToUpper(geo)
	}
	cfg := Config{Geos: make(map[string]GeoConfig, len(geos))}
	buckets := map[string]string{} // endpoint + bucket → geography
	for _, g := range geos {
		gc := GeoConfig{Backend: backend[g]}
		switch gc.Backend {
		case BackendDir:
			gc.Dir = filepath.Join(root, g)
		case BackendS3:
			ps, err := strconv.ParseBool(pathStyle[g])
			if err != nil {
				env.Fail(name(p+"S3_PATH_STYLE", g), fmt.Errorf("%q is not true or false", pathStyle[g]))
			}
			gc.S3 = S3Config{Endpoint: endpoint[g], Bucket: bucket[g], Region: region[g],
				AccessKeyID: access[g], SecretAccessKey: secret[g], PathStyle: ps}
			for v, val := range map[string]string{"S3_BUCKET": gc.S3.Bucket, "S3_ACCESS_KEY_ID": gc.S3.AccessKeyID, "S3_SECRET_ACCESS_KEY": gc.S3.SecretAccessKey} {
				if val == "" {
					env.Fail(p+v+"_"+strings.ToUpper(g), errors.New("required when the blob backend is s3"))
				}
			}
			if gc.S3.Bucket != "" {
				id := gc.S3.Endpoint + "\x00" + gc.S3.Bucket
				if other, ok := buckets[id]; ok {
					env.Fail(p+"S3_BUCKET_"+strings.ToUpper(g), fmt.Errorf("bucket %q is %s's too: each geography needs its own", gc.S3.Bucket, other))
				}
				buckets[id] = g
			}
		default:
			env.Fail(name(p+"BACKEND", g), fmt.Errorf("%q is not one of %s, %s", gc.Backend, BackendDir, BackendS3))
		}
		if _, err := strconv.ParseBool(pathStyle[g]); err != nil && gc.Backend != BackendS3 {
			env.Fail(name(p+"S3_PATH_STYLE", g), fmt.Errorf("%q is not true or false", pathStyle[g]))
		}
		cfg.Geos[g] = gc
	}
	return cfg
}

// Open opens the store of every geography in cfg.
func Open(cfg Config) (Stores, error) {
	m := make(map[string]Store, len(cfg.Geos))
	fail := func(err error) (Stores, error) {
		_ = NewStores(m).Close()
		return Stores{}, err
	}
	for g, gc := range cfg.Geos {
		switch gc.Backend {
		case BackendDir:
			d, err := NewDir(gc.Dir)
			if err != nil {
				return fail(fmt.Errorf("blob store of %s: %w", g, err))
			}
			m[g] = d
		case BackendS3:
			s, err := NewS3(gc.S3)
			if err != nil {
				return fail(fmt.Errorf("blob store of %s: %w", g, err))
			}
			m[g] = s
		default:
			return fail(fmt.Errorf("blob store of %s: unknown backend %q", g, gc.Backend))
		}
	}
	return NewStores(m), nil
}
