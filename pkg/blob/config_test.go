package blob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/blob/blobtest"
	"github.com/terroir-ai/terroir/pkg/config"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c blob.Config)
		wantErr []string // variables named in the error
	}{
		{"defaults: a directory per geography", nil, func(t *testing.T, c blob.Config) {
			for _, g := range []string{"eu", "us"} {
				if gc := c.Geos[g]; gc.Backend != "dir" || gc.Dir != filepath.Join(".terroir", "blobs", g) {
					t.Errorf("%s: %+v", g, gc)
				}
			}
		}, nil},
		{"dir root", map[string]string{"TERROIR_BLOB_DIR": "/var/lib/terroir/blobs"}, func(t *testing.T, c blob.Config) {
			if c.Geos["eu"].Dir != "/var/lib/terroir/blobs/eu" {
				t.Errorf("eu: %+v", c.Geos["eu"])
			}
		}, nil},
		{"s3 per geography", map[string]string{
			"TERROIR_BLOB_BACKEND":                      "s3",
			"TERROIR_BLOB_S3_ENDPOINT_EU":               "https://s3.eu.example",
			"TERROIR_BLOB_S3_ENDPOINT_US":               "https://s3.us.example",
			"TERROIR_BLOB_S3_BUCKET":                    "terroir-blobs",
			"TERROIR_BLOB_S3_REGION_EU":                 "eu-central-1",
			"TERROIR_BLOB_S3_ACCESS_KEY_ID":             "AK",
			"TERROIR_BLOB_S3_SECRET_ACCESS_KEY_US":      "us-secret",
			"TERROIR_BLOB_S3_SECRET_ACCESS_KEY_FILE_EU": secretFile,
			"TERROIR_BLOB_S3_PATH_STYLE":                "true",
		}, func(t *testing.T, c blob.Config) {
			eu, us := c.Geos["eu"], c.Geos["us"]
			if eu.Backend != "s3" || eu.S3.Endpoint != "https://s3.eu.example" || eu.S3.Region != "eu-central-1" ||
				eu.S3.SecretAccessKey != "from-file" || eu.S3.AccessKeyID != "AK" || !eu.S3.PathStyle || eu.S3.Bucket != "terroir-blobs" {
				t.Errorf("eu: %+v", eu)
			}
			if us.S3.Endpoint != "https://s3.us.example" || us.S3.Region != "us-east-1" || us.S3.SecretAccessKey != "us-secret" {
				t.Errorf("us: %+v", us)
			}
		}, nil},
		{"one backend per geography", map[string]string{
			"TERROIR_BLOB_BACKEND_US": "s3", "TERROIR_BLOB_S3_BUCKET_US": "b", "TERROIR_BLOB_S3_ACCESS_KEY_ID": "a",
			"TERROIR_BLOB_S3_SECRET_ACCESS_KEY": "s",
		}, func(t *testing.T, c blob.Config) {
			if c.Geos["eu"].Backend != "dir" || c.Geos["us"].Backend != "s3" {
				t.Errorf("%+v", c.Geos)
			}
		}, nil},
		{"s3 without bucket or credentials", map[string]string{"TERROIR_BLOB_BACKEND": "s3"}, nil,
			[]string{"TERROIR_BLOB_S3_BUCKET_EU", "TERROIR_BLOB_S3_BUCKET_US", "TERROIR_BLOB_S3_ACCESS_KEY_ID_EU", "TERROIR_BLOB_S3_SECRET_ACCESS_KEY_EU"}},
		{"two geographies in one bucket", map[string]string{
			"TERROIR_BLOB_BACKEND": "s3", "TERROIR_BLOB_S3_BUCKET": "shared", "TERROIR_BLOB_S3_ACCESS_KEY_ID": "a",
			"TERROIR_BLOB_S3_SECRET_ACCESS_KEY": "s",
		}, nil, []string{"TERROIR_BLOB_S3_BUCKET_US"}},
		{"unknown backend and bad path style", map[string]string{
			"TERROIR_BLOB_BACKEND": "ftp", "TERROIR_BLOB_S3_PATH_STYLE_EU": "maybe",
		}, nil, []string{"TERROIR_BLOB_BACKEND", "TERROIR_BLOB_S3_PATH_STYLE_EU"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := config.New(func(k string) string { return c.env[k] })
			cfg := blob.LoadConfig(env, []string{"eu", "us"})
			err := env.Err()
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, v := range c.wantErr {
					if !strings.Contains(err.Error(), v+":") {
						t.Errorf("error does not name %s: %v", v, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
		})
	}
}

// TestOpenFromEnvironment: stores opened from the environment keep each
// geography's objects in its own directory or bucket.
func TestOpenFromEnvironment(t *testing.T) {
	t.Parallel()
	srv := blobtest.StartS3(t)
	root := t.TempDir()
	env := map[string]string{
		"TERROIR_BLOB_DIR":                  root,
		"TERROIR_BLOB_BACKEND_US":           "s3",
		"TERROIR_BLOB_S3_ENDPOINT":          srv.Endpoint,
		"TERROIR_BLOB_S3_BUCKET_US":         srv.NewBucket(t),
		"TERROIR_BLOB_S3_ACCESS_KEY_ID":     srv.AccessKeyID,
		"TERROIR_BLOB_S3_SECRET_ACCESS_KEY": srv.SecretAccessKey,
		"TERROIR_BLOB_S3_PATH_STYLE":        "true",
	}
	e := config.New(func(k string) string { return env[k] })
	cfg := blob.LoadConfig(e, []string{"eu", "us"})
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	stores, err := blob.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Close()
	ctx := t.Context()
	for _, g := range []string{"eu", "us"} {
		s, err := stores.For(g)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "acme/files/"+g, strings.NewReader(g), nil); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "eu", "acme.d", "files.d", "eu.blob")); err != nil {
		t.Errorf("eu's object is not in eu's directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "us")); err == nil {
		t.Error("us (on S3) wrote into the directory")
	}
	us, _ := stores.For("us")
	if _, err := us.Stat(ctx, "acme/files/eu"); err == nil {
		t.Error("eu's object is in us's bucket")
	}
	if _, err := stores.For("ap"); err == nil {
		t.Error("a store for an unconfigured geography")
	}
}
