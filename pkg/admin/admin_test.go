package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terroir-ai/terroir/pkg/admin"
)

// TestOversizedHeadersAreRefused: the admin port answers probes and
// scrapes, whose headers are small; a request with more than
// admin.MaxHeaderBytes of headers is refused before any handler runs.
func TestOversizedHeadersAreRefused(t *testing.T) {
	t.Parallel()
	s, err := admin.Listen("127.0.0.1:0", prometheus.NewRegistry(), admin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	cases := []struct {
		name    string
		padding int
		want    int
	}{
		{"probe", 100, http.StatusOK},
		{"headers over the limit", 2 * admin.MaxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/healthz", nil)
		req.Header.Set("X-Padding", strings.Repeat("p", c.padding))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
}

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
