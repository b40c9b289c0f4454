package main

import (
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
)

func TestLifecycle(t *testing.T) { daemontest.CheckLifecycle(t, run) }

// TestHTTPLimitsConfiguration: the HTTP limits are read from their
// variables, and impossible values are refused naming the variable.
func TestHTTPLimitsConfiguration(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  map[string]string
		want string // a variable the error names; "" for no error
	}{
		{"defaults", nil, ""},
		{"set", map[string]string{"TERROIR_HTTP_READ_TIMEOUT": "5s", "TERROIR_HTTP_MAX_HEADER_BYTES": "8192"}, ""},
		{"header timeout beyond read timeout", map[string]string{"TERROIR_HTTP_READ_HEADER_TIMEOUT": "1m"}, "TERROIR_HTTP_READ_HEADER_TIMEOUT"},
		{"not a duration", map[string]string{"TERROIR_HTTP_WRITE_TIMEOUT": "soon"}, "TERROIR_HTTP_WRITE_TIMEOUT"},
		{"header limit too small", map[string]string{"TERROIR_HTTP_MAX_HEADER_BYTES": "10"}, "TERROIR_HTTP_MAX_HEADER_BYTES"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := config.New(func(k string) string { return c.env[k] })
			cfg := loadConfig(env)
			err := env.Err()
			if c.want == "" {
				if err != nil || cfg.HTTP.ReadTimeout <= 0 || cfg.HTTP.WriteTimeout <= 0 || cfg.HTTP.IdleTimeout <= 0 ||
					cfg.HTTP.ReadHeaderTimeout <= 0 || cfg.HTTP.MaxHeaderBytes <= 0 {
					t.Fatalf("%+v %v", cfg.HTTP, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one naming %s", err, c.want)
			}
		})
	}
}
