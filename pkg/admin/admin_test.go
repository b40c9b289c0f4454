package admin_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terroir-ai/terroir/pkg/admin"
)

// TestProfilingIsOffUnlessAskedFor: the profiling endpoints show where a
// process spends its time and can be made to run for long; they are only
// served when the operator turns them on.
func TestProfilingIsOffUnlessAskedFor(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		pprof bool
		want  int
	}{
		{"default", false, http.StatusNotFound},
		{"turned on", true, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := admin.Listen("127.0.0.1:0", prometheus.NewRegistry(), admin.Options{Pprof: tt.pprof})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/trace?seconds=0"} {
				resp, err := http.Get("http://" + s.Addr() + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, tt.want)
				}
			}
			resp, err := http.Get("http://" + s.Addr() + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz = %d", resp.StatusCode)
			}
		})
	}
}
