package stack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReady(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	// Ready from the third poll on.
	soon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer soon.Close()
	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer never.Close()

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	services := []Service{
		{Name: "ingress", AdminAddr: strings.TrimPrefix(soon.URL, "http://")},
		{Name: "review", AdminAddr: strings.TrimPrefix(never.URL, "http://")},
		{Name: "batch", AdminAddr: freeAddr(t)},
	}
	got := WaitReady(ctx, &http.Client{Timeout: time.Second}, services, 10*time.Millisecond)
	want := []struct {
		ready bool
		last  string
	}{
		{true, "200 OK"},
		{false, "503 Service Unavailable"},
		{false, "connection refused"},
	}
	for i, w := range want {
		if got[i].Name != services[i].Name || got[i].Ready != w.ready || !strings.Contains(got[i].Last, w.last) {
			t.Errorf("result %d = %+v, want ready=%v last containing %q", i, got[i], w.ready, w.last)
		}
	}
}
