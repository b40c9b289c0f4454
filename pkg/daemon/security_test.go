package daemon_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/daemon"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/tlsfiles/tlstest"
)

// secureCluster starts a kfake cluster that speaks only TLS with a
// certificate of its own CA and admits only the given SASL user.
func secureCluster(t *testing.T, mechanism, user, password string) (*bustest.Cluster, *tlstest.CA) {
	t.Helper()
	ca := tlstest.NewCA(t)
	pair := ca.Server(t, t.TempDir(), "kafka")
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := bustest.New(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser(mechanism, user, password))
	return c, ca
}

// TestKafkaTLSAndSASLPerGeography: each geography's cluster is reached
// over TLS with its own CA and authenticated with its own SASL mechanism
// and credentials, read from the per-geography variables (a password
// from a file for one of them).
func TestKafkaTLSAndSASLPerGeography(t *testing.T) {
	t.Parallel()
	eu, euCA := secureCluster(t, "SCRAM-SHA-512", "terroir-eu", "eu-secret")
	us, usCA := secureCluster(t, "PLAIN", "terroir-us", "us-secret")
	pwFile := filepath.Join(t.TempDir(), "us-password")
	if err := os.WriteFile(pwFile, []byte("us-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secure := map[string]string{
		"TERROIR_KAFKA_BROKERS_EU":            strings.Join(eu.Brokers, ","),
		"TERROIR_KAFKA_BROKERS_US":            strings.Join(us.Brokers, ","),
		"TERROIR_KAFKA_TLS_CA_FILE_EU":        euCA.CertFile,
		"TERROIR_KAFKA_TLS_CA_FILE_US":        usCA.CertFile,
		"TERROIR_KAFKA_TLS_SERVER_NAME_US":    "localhost",
		"TERROIR_KAFKA_SASL_MECHANISM_EU":     "SCRAM-SHA-512",
		"TERROIR_KAFKA_SASL_USER_EU":          "terroir-eu",
		"TERROIR_KAFKA_SASL_PASSWORD_EU":      "eu-secret",
		"TERROIR_KAFKA_SASL_MECHANISM_US":     "PLAIN",
		"TERROIR_KAFKA_SASL_USER_US":          "terroir-us",
		"TERROIR_KAFKA_SASL_PASSWORD_FILE_US": pwFile,
	}
	t.Run("right credentials", func(t *testing.T) {
		t.Parallel()
		s := daemontest.StartEnv(t, runWith(true, func(*daemon.Daemon) {}), daemontest.EnvOn(t, eu, secure))
		if err := s.Stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
	for _, tt := range []struct {
		name   string
		change map[string]string
	}{
		{"wrong password", map[string]string{"TERROIR_KAFKA_SASL_PASSWORD_EU": "guess"}},
		{"another geography's CA", map[string]string{"TERROIR_KAFKA_TLS_CA_FILE_US": euCA.CertFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := daemontest.EnvOn(t, eu, secure)
			for k, v := range tt.change {
				env[k] = v
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := runWith(true, func(*daemon.Daemon) {})(ctx, func(k string) string { return env[k] }); err == nil {
				t.Fatal("the service started")
			}
		})
	}
}
