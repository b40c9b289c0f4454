package stack

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Readiness is the outcome of polling one service's /readyz.
type Readiness struct {
	// Name is the service.
	Name string
	// URL is the /readyz URL polled.
	URL string
	// Ready is true once the URL answered 200.
	Ready bool
	// Last is the last status line or error seen ("200 OK" when ready,
	// "not polled" if the context ended first).
	Last string
}

// WaitReady polls http://<admin>/readyz of every service every interval until
// all answer 200 or ctx ends, and returns one Readiness per service in the
// order given.
func WaitReady(ctx context.Context, client *http.Client, services []Service, interval time.Duration) []Readiness {
	res := make([]Readiness, len(services))
	var wg sync.WaitGroup
	for i, s := range services {
		res[i] = Readiness{Name: s.Name, URL: "http://" + s.AdminAddr + "/readyz", Last: "not polled"}
		wg.Add(1)
		go func(r *Readiness) {
			defer wg.Done()
			pollReady(ctx, client, r, interval)
		}(&res[i])
	}
	wg.Wait()
	return res
}

func pollReady(ctx context.Context, client *http.Client, r *Readiness, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		code, status, err := getStatus(ctx, client, r.URL)
		switch {
		case err != nil && ctx.Err() != nil && r.Last != "not polled":
			// Keep the last real answer rather than the cancellation.
		case err != nil:
			r.Last = err.Error()
		default:
			r.Last = status
		}
		if err == nil && code == http.StatusOK {
			r.Ready = true
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func getStatus(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", fmt.Errorf("building request for %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Status, nil
}
