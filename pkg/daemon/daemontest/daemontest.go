// Package daemontest runs a service's run function the way production
// does, against an in-process kfake cluster (over the wire) and a real
// redis-server, and checks its lifecycle: it becomes ready, serves its
// admin endpoints, and drains and returns nil when its context ends.
package daemontest

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/redistest"
)

// Service is a running service under test.
type Service struct {
	AdminURL string
	Env      map[string]string
	cancel   context.CancelFunc
	done     chan error
}

// Env returns the environment of a service under test: fresh test
// infrastructure (kfake cluster, redis-server, keyring, namespace, free
// admin and HTTP ports, the repository's topics and catalog), overridden
// by extra.
func Env(t *testing.T, extra map[string]string) map[string]string {
	t.Helper()
	return EnvOn(t, bustest.New(t), extra)
}

// EnvOn is Env on a given cluster (one with a data directory, say).
func EnvOn(t *testing.T, c *bustest.Cluster, extra map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"TERROIR_GEOS":            "eu,us",
		"TERROIR_KAFKA_BROKERS":   strings.Join(c.Brokers, ","),
		"TERROIR_KAFKA_NAMESPACE": bustest.Namespace(),
		"TERROIR_KEY_FILE":        c.KeyFile,
		"TERROIR_TOPICS_FILE":     bustest.TopicsFile(t),
		"TERROIR_CATALOG_FILE":    bustest.RepoFile(t, "deployments/catalog.yaml"),
		"TERROIR_HTTP_ADDR":       FreeAddr(t),
		"TERROIR_ADMIN_ADDR":      FreeAddr(t),
		"TERROIR_LOG_FORMAT":      "console",
		"TERROIR_LOG_LEVEL":       "warn",
		"TERROIR_DRAIN_TIMEOUT":   "5s",
		"TERROIR_BLOB_DIR":        t.TempDir(), // the blob stores, a directory per geography
		"TERROIR_BATCH_DROPS_DIR": t.TempDir(), // the batch drop folders
	}
	for k, v := range extra {
		env[k] = v
	}
	if env["TERROIR_REDIS_ADDR"] == "" {
		env["TERROIR_REDIS_ADDR"] = redistest.Start(t)
	}
	return env
}

// Start runs run with Env(t, extra) and waits until /readyz answers 200.
// The service is stopped when t ends if Stop was not called.
func Start(t *testing.T, run daemon.RunFunc, extra map[string]string) *Service {
	t.Helper()
	return StartEnv(t, run, Env(t, extra))
}

// StartEnv runs run with env and waits until /readyz answers 200. A free
// port can be taken by another test between FreeAddr and the service's
// bind: when the service exits for that reason, it is started again on
// fresh HTTP and admin addresses (env is updated in place).
func StartEnv(t *testing.T, run daemon.RunFunc, env map[string]string) *Service {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s := Launch(t, run, env)
		ready, err := s.waitReady(t)
		if ready {
			return s
		}
		if attempt < 3 && err != nil && strings.Contains(err.Error(), "address already in use") {
			env["TERROIR_HTTP_ADDR"], env["TERROIR_ADMIN_ADDR"] = FreeAddr(t), FreeAddr(t)
			continue
		}
		t.Fatalf("service exited before it was ready: %v", err)
	}
}

// waitReady waits until /readyz answers 200 (true), or reports what run
// returned when the service exits first.
func (s *Service) waitReady(t *testing.T) (bool, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := s.Get(t, "/readyz")
		if code == http.StatusOK {
			return true, nil
		}
		select {
		case err := <-s.done:
			s.done <- err // for the cleanup
			return false, err
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30 s: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// Launch runs run with env in the background without waiting for it.
func Launch(t *testing.T, run daemon.RunFunc, env map[string]string) *Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{AdminURL: "http://" + env["TERROIR_ADMIN_ADDR"], Env: env, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, func(k string) string { return env[k] }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	return s
}

// Get fetches an admin path, returning status and body (0 when the server
// does not answer).
func (s *Service) Get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.AdminURL + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Stop ends the service's context and returns what run returned.
func (s *Service) Stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop within 30 s")
		return nil
	}
}

// CheckLifecycle is the test every service runs: it starts, is healthy
// and ready, exposes bus metrics, and stops cleanly.
func CheckLifecycle(t *testing.T, run daemon.RunFunc) {
	t.Helper()
	s := Start(t, run, nil)
	if code, _ := s.Get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	code, metrics := s.Get(t, "/metrics")
	if code != http.StatusOK || !strings.Contains(metrics, "terroir_build_info") || !strings.Contains(metrics, "go_goroutines") {
		t.Errorf("/metrics = %d, missing build info or runtime metrics", code)
	}
	if err := s.Stop(t); err != nil {
		t.Fatalf("run returned %v after its context ended", err)
	}
	if code, _ := s.Get(t, "/readyz"); code != 0 {
		t.Errorf("admin server still answers after stop: %d", code)
	}
}

// FreeAddr returns a loopback address with a port free at the time of the call.
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
