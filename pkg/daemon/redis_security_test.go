package daemon_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/redistest"
	"github.com/terroir-ai/terroir/pkg/tlsfiles/tlstest"
)

// TestRedisAuthAndTLS: a service reaches a redis-server that asks for a
// password or an ACL user's credentials, and one that speaks only TLS
// (with a client certificate), configured by variables or by a rediss://
// URL, per geography; wrong credentials leave it not ready.
func TestRedisAuthAndTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	server := ca.Server(t, dir, "redis")
	client := ca.Client(t, dir, "terroir")
	tlsOpts := &redistest.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile, ClientCerts: true}
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		redis redistest.Options
		env   func(addr string) map[string]string
		ready bool
	}{
		{"requirepass", redistest.Options{Password: "s3cret-pw"}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": addr, "TERROIR_REDIS_PASSWORD": "s3cret-pw"}
		}, true},
		{"ACL user, password from a file, per geography", redistest.Options{Password: "other", User: "terroir", UserPassword: "from-a-file"}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": addr, "TERROIR_REDIS_USERNAME": "terroir",
				"TERROIR_REDIS_PASSWORD_FILE_EU": pwFile, "TERROIR_REDIS_PASSWORD_FILE_US": pwFile}
		}, true},
		{"TLS with a client certificate", redistest.Options{Password: "s3cret-pw", TLS: tlsOpts}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": addr, "TERROIR_REDIS_PASSWORD": "s3cret-pw",
				"TERROIR_REDIS_TLS_CA_FILE": ca.CertFile, "TERROIR_REDIS_TLS_CERT_FILE": client.CertFile,
				"TERROIR_REDIS_TLS_KEY_FILE": client.KeyFile}
		}, true},
		{"rediss URL", redistest.Options{User: "terroir", UserPassword: "url-pw", TLS: tlsOpts}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": "rediss://terroir:url-pw@" + addr + "/0",
				"TERROIR_REDIS_TLS_CA_FILE": ca.CertFile, "TERROIR_REDIS_TLS_CERT_FILE": client.CertFile,
				"TERROIR_REDIS_TLS_KEY_FILE": client.KeyFile}
		}, true},
		{"wrong password", redistest.Options{Password: "s3cret-pw"}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": addr, "TERROIR_REDIS_PASSWORD": "guess"}
		}, false},
		{"plaintext to a TLS server", redistest.Options{Password: "s3cret-pw", TLS: tlsOpts}, func(addr string) map[string]string {
			return map[string]string{"TERROIR_REDIS_ADDR": addr, "TERROIR_REDIS_PASSWORD": "s3cret-pw"}
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := redistest.StartWith(t, tt.redis)
			run := runWith(true, func(*daemon.Daemon) {})
			if tt.ready {
				s := daemontest.Start(t, run, tt.env(addr))
				if err := s.Stop(t); err != nil {
					t.Fatal(err)
				}
				return
			}
			s := daemontest.Launch(t, run, daemontest.Env(t, tt.env(addr)))
			deadline := time.Now().Add(10 * time.Second)
			for {
				code, body := s.Get(t, "/readyz")
				if code == http.StatusServiceUnavailable && strings.Contains(body, "redis of") {
					if strings.Contains(body, "guess") || strings.Contains(body, "s3cret") {
						t.Errorf("readiness quotes a password: %q", body)
					}
					return
				}
				if code == http.StatusOK {
					t.Fatal("ready with wrong Redis credentials")
				}
				if time.Now().After(deadline) {
					t.Fatalf("/readyz = %d %q, want 503 naming Redis", code, body)
				}
				time.Sleep(20 * time.Millisecond) // polling with a deadline
			}
		})
	}
}
