package bus_test

import (
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/tlsfiles/tlstest"
)

func TestKafkaSecurityConfiguration(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	for _, tt := range []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, s map[string]bus.Security)
	}{
		{name: "nothing set is plaintext", check: func(t *testing.T, s map[string]bus.Security) {
			if s["eu"].TLS != nil || s["eu"].Mechanism != "" {
				t.Errorf("eu = %+v", s["eu"])
			}
		}},
		{name: "per-geography forms override the shared ones", env: map[string]string{
			"TERROIR_KAFKA_TLS": "1", "TERROIR_KAFKA_TLS_CA_FILE_US": ca.CertFile,
			"TERROIR_KAFKA_SASL_MECHANISM": "scram-sha-512", "TERROIR_KAFKA_SASL_USER": "svc",
			"TERROIR_KAFKA_SASL_PASSWORD": "shared", "TERROIR_KAFKA_SASL_PASSWORD_US": "us-only",
		}, check: func(t *testing.T, s map[string]bus.Security) {
			if s["eu"].TLS == nil || s["eu"].TLS.RootCAs != nil || s["us"].TLS == nil || s["us"].TLS.RootCAs == nil {
				t.Errorf("TLS: eu %+v, us %+v", s["eu"].TLS, s["us"].TLS)
			}
			if s["eu"].Mechanism != bus.SASLScramSHA512 || s["eu"].Password != "shared" || s["us"].Password != "us-only" {
				t.Errorf("SASL: eu %s/%s, us %s", s["eu"].Mechanism, s["eu"].User, s["us"].User)
			}
		}},
		{name: "PLAIN needs TLS", env: map[string]string{"TERROIR_KAFKA_SASL_MECHANISM_EU": "PLAIN",
			"TERROIR_KAFKA_SASL_USER": "svc", "TERROIR_KAFKA_SASL_PASSWORD": "pw"},
			wantErr: "TERROIR_KAFKA_SASL_MECHANISM_EU: SASL PLAIN without TLS"},
		{name: "unknown mechanism", env: map[string]string{"TERROIR_KAFKA_SASL_MECHANISM": "GSSAPI",
			"TERROIR_KAFKA_SASL_USER": "svc", "TERROIR_KAFKA_SASL_PASSWORD": "pw"}, wantErr: `unknown SASL mechanism "GSSAPI"`},
		{name: "mechanism without password", env: map[string]string{"TERROIR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
			"TERROIR_KAFKA_SASL_USER": "svc"}, wantErr: "needs a user and a password"},
		{name: "password twice", env: map[string]string{"TERROIR_KAFKA_SASL_PASSWORD": "pw",
			"TERROIR_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}, wantErr: "TERROIR_KAFKA_SASL_PASSWORD_FILE: set either"},
		{name: "unreadable CA", env: map[string]string{"TERROIR_KAFKA_TLS_CA_FILE_EU": "/nonexistent/ca.pem"},
			wantErr: "TERROIR_KAFKA_TLS_*_EU: reading CA file"},
		{name: "certificate without key", env: map[string]string{"TERROIR_KAFKA_TLS_CERT_FILE": ca.CertFile},
			wantErr: "needs both its certificate and its key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := config.New(func(k string) string { return tt.env[k] })
			s := bus.SecurityFromEnv(env, []string{"eu", "us"})
			err := env.Err()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, s)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pw") && !strings.Contains(tt.wantErr, "pw") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}
