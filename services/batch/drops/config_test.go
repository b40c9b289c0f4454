package drops_test

import (
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/services/batch/drops"
)

func TestSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		bad   []string
		check func(drops.Settings) bool
	}{
		{name: "defaults", check: func(s drops.Settings) bool {
			return s.Poll == time.Second && s.Settle == 2*time.Second && s.MaxBytes == 200<<20 &&
				s.Geos["eu"] == drops.StoreConfig{Backend: "dir", Dir: ".terroir/drops", Prefix: "drops/"}
		}},
		{name: "per geography", env: map[string]string{"TERROIR_BATCH_DROPS_DIR": "/srv/drops", "TERROIR_BATCH_DROPS_BACKEND_US": "s3",
			"TERROIR_BATCH_DROPS_PREFIX_US": "in/drops/", "TERROIR_BATCH_DROP_SETTLE": "500ms"}, check: func(s drops.Settings) bool {
			return s.Geos["eu"].Dir == "/srv/drops" && s.Geos["us"].Backend == "s3" && s.Geos["us"].Prefix == "in/drops/" && s.Settle == 500*time.Millisecond
		}},
		{name: "bad", env: map[string]string{"TERROIR_BATCH_DROPS_BACKEND_EU": "ftp", "TERROIR_BATCH_DROPS_BACKEND_US": "s3",
			"TERROIR_BATCH_DROPS_PREFIX": "../x", "TERROIR_BATCH_DROP_POLL": "1ms"},
			bad: []string{"TERROIR_BATCH_DROPS_BACKEND_EU", "TERROIR_BATCH_DROPS_PREFIX_US", "TERROIR_BATCH_DROP_POLL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := config.New(func(k string) string { return tc.env[k] })
			s := drops.LoadSettings(env, []string{"eu", "us"})
			err := env.Err()
			if len(tc.bad) == 0 && (err != nil || !tc.check(s)) {
				t.Fatalf("%+v, %v", s, err)
			}
			for _, v := range tc.bad {
				if err == nil || !strings.Contains(err.Error(), v) {
					t.Errorf("%v does not name %s", err, v)
				}
			}
		})
	}
	// s3 drops need the geography's blob store on s3.
	s := drops.Settings{Geos: map[string]drops.StoreConfig{"eu": {Backend: "s3", Prefix: "drops/"}}}
	if _, err := s.Open("eu", blob.Config{Geos: map[string]blob.GeoConfig{"eu": {Backend: blob.BackendDir}}}); err == nil {
		t.Fatal("s3 drops opened over a directory blob store")
	}
}
