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
	s, err := admin.Listen("127.0.0.1:0", prometheus.NewRegistry())
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
