package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/review/audit"
	"github.com/terroir-ai/terroir/services/review/pki"
)

// TestLifecycle runs the service without console configuration: store
// and detection run, the console is off.
func TestLifecycle(t *testing.T) { daemontest.CheckLifecycle(t, run) }

// consoleFixture writes a review CA, a server certificate, a people
// directory and the variables that point at them.
func consoleFixture(t *testing.T) (*pki.CA, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("Terroir review CA (test)")
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := ca.WritePEM(dir)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := server.WritePEM(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	people := filepath.Join(dir, "people.yaml")
	if err := os.WriteFile(people, []byte("people:\n  - {name: ana.reviewer, role: reviewer, location: EEA}\n  - {name: jonas.manager, role: manager, location: EEA}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, map[string]string{
		"TERROIR_REVIEW_ADDR":        daemontest.FreeAddr(t),
		"TERROIR_REVIEW_TLS_CERT":    certFile,
		"TERROIR_REVIEW_TLS_KEY":     keyFile,
		"TERROIR_REVIEW_CLIENT_CA":   caFile,
		"TERROIR_REVIEW_PEOPLE_FILE": people,
	}
}

func TestConsoleServed(t *testing.T) {
	t.Parallel()
	ca, extra := consoleFixture(t)
	s := daemontest.Start(t, run, extra)
	client, err := ca.Client("ana.reviewer")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := client.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	get := func(certs ...tls.Certificate) (*http.Response, string, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs}, DisableKeepAlives: true}}
		resp, err := c.Get("https://" + extra["TERROIR_REVIEW_ADDR"] + "/")
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	// The console may start a moment after readiness.
	var resp *http.Response
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for resp, body, err = get(cert); err != nil && time.Now().Before(deadline); resp, body, err = get(cert) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="whoami">ana.reviewer`) {
		t.Fatalf("console home = %d %s", resp.StatusCode, body)
	}
	if _, _, err := get(); err == nil {
		t.Fatal("console served a client without a certificate")
	}
	if code, metrics := s.Get(t, "/metrics"); code != http.StatusOK || !strings.Contains(metrics, "terroir_review_console_requests_total") {
		t.Fatalf("console metrics missing from /metrics (%d)", code)
	}
	if err := s.Stop(t); err != nil {
		t.Fatalf("run returned %v after its context ended", err)
	}
}

func TestConsoleConfiguration(t *testing.T) {
	t.Parallel()
	_, full := consoleFixture(t)
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		env   map[string]string
		wants []string
	}{
		{"only the certificate", map[string]string{"TERROIR_REVIEW_TLS_CERT": full["TERROIR_REVIEW_TLS_CERT"]},
			[]string{"TERROIR_REVIEW_TLS_KEY", "TERROIR_REVIEW_CLIENT_CA", "TERROIR_REVIEW_PEOPLE_FILE"}},
		{"unreadable files", map[string]string{"TERROIR_REVIEW_TLS_CERT": empty, "TERROIR_REVIEW_TLS_KEY": full["TERROIR_REVIEW_TLS_KEY"],
			"TERROIR_REVIEW_CLIENT_CA": empty, "TERROIR_REVIEW_PEOPLE_FILE": empty + ".missing"},
			[]string{"TERROIR_REVIEW_TLS_CERT", "TERROIR_REVIEW_CLIENT_CA", "TERROIR_REVIEW_PEOPLE_FILE"}},
		{"short CSRF key", func() map[string]string {
			m := map[string]string{"TERROIR_REVIEW_CSRF_KEY_FILE": empty}
			for k, v := range full {
				m[k] = v
			}
			return m
		}(), []string{"TERROIR_REVIEW_CSRF_KEY_FILE"}},
		{"rules", map[string]string{"TERROIR_REVIEW_RULES_FILE": empty + ".missing"}, []string{"TERROIR_REVIEW_RULES_FILE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := run(t.Context(), func(k string) string { return c.env[k] })
			if err == nil {
				t.Fatal("run accepted the configuration")
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %s: %v", w, err)
				}
			}
		})
	}
}

func TestVerifyAudit(t *testing.T) {
	t.Parallel()
	cluster := bustest.New(t)
	env := daemontest.EnvOn(t, cluster, nil)
	getenv := func(k string) string { return env[k] }
	b := cluster.Bus(t, bustest.Options{Namespace: env["TERROIR_KAFKA_NAMESPACE"]})
	rc := redis.NewClient(&redis.Options{Addr: env["TERROIR_REDIS_ADDR"]})
	t.Cleanup(func() { _ = rc.Close() })
	trail, err := audit.New(audit.Config{Bus: b, Redis: map[string]*redis.Client{"eu": rc, "us": rc}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"eu", "us"} {
		for _, subject := range []string{"req-1", "req-2", "req-3"} {
			if _, err := trail.Append(t.Context(), g, events.AuditEntry{Actor: "ana.reviewer", Action: events.AuditLookup, Subject: subject}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An entry that does not continue us's chain.
	if err := b.Publish(t.Context(), "us", bus.StreamAudit, bus.Meta{Key: "us"}, events.AuditEntry{Geo: "us", Seq: 4,
		PrevHash: strings.Repeat("0", 64), Hash: strings.Repeat("1", 64), Actor: "mallory", Action: events.AuditView,
		Subject: "req-9", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	if code := verifyAudit(t.Context(), []string{"-geo", "eu"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("intact chain: exit %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "3 entries, every link holds") {
		t.Fatalf("intact chain: %q", out.String())
	}
	out.Reset()
	if code := verifyAudit(t.Context(), []string{"-geo", "us"}, getenv, &out, &errOut); code != 1 {
		t.Fatalf("broken chain: exit %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "first broken link at seq 4") {
		t.Fatalf("broken chain: %q", out.String())
	}
	for _, args := range [][]string{nil, {"-geo"}, {"-geo", "jp"}, {"-geo", "eu", "extra"}} {
		if code := verifyAudit(t.Context(), args, getenv, &out, &errOut); code != 2 {
			t.Errorf("verify-audit %q: exit %d, want 2", args, code)
		}
	}
}

// TestConsoleAddressTaken: a console that cannot listen stops the service
// at start, and what the start had opened is closed again.
func TestConsoleAddressTaken(t *testing.T) {
	t.Parallel()
	_, extra := consoleFixture(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	extra["TERROIR_REVIEW_ADDR"] = taken.Addr().String()
	env := daemontest.Env(t, extra)
	err = run(t.Context(), func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("run = %v, want an error naming the taken address", err)
	}
	admin, err := net.Listen("tcp", env["TERROIR_ADMIN_ADDR"])
	if err != nil {
		t.Fatalf("admin address still held after a failed start: %v", err)
	}
	admin.Close()
}
