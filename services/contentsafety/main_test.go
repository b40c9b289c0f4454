package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
)

func TestLifecycle(t *testing.T) { daemontest.CheckLifecycle(t, run) }

func TestGuardConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "guard.key")
	if err := os.WriteFile(keyFile, []byte("sk-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		want guard.Config
		bad  []string // variables the error names
	}{
		{"off by default", map[string]string{}, guard.Config{}, nil},
		{"defaults", map[string]string{"TERROIR_GUARD_URL": "http://127.0.0.1:8000", "TERROIR_GUARD_MODEL": "meta-llama/Llama-Guard-3-8B"},
			guard.Config{URL: "http://127.0.0.1:8000", Model: "meta-llama/Llama-Guard-3-8B", Format: guard.FormatLlamaGuard,
				Timeout: guard.DefaultTimeout, Concurrency: guard.DefaultConcurrency, MaxTokens: guard.DefaultMaxTokens}, nil},
		{"everything set", map[string]string{"TERROIR_GUARD_URL": "http://127.0.0.1:11434/v1", "TERROIR_GUARD_MODEL": "shieldgemma:2b",
			"TERROIR_GUARD_FORMAT": "shieldgemma", "TERROIR_GUARD_TIMEOUT": "750ms", "TERROIR_GUARD_CONCURRENCY": "4",
			"TERROIR_GUARD_MAX_TOKENS": "8", "TERROIR_GUARD_API_KEY_FILE": keyFile},
			guard.Config{URL: "http://127.0.0.1:11434/v1", Model: "shieldgemma:2b", APIKey: "sk-from-file", Format: guard.FormatShieldGemma,
				Timeout: 750 * time.Millisecond, Concurrency: 4, MaxTokens: 8}, nil},
		{"key in the environment", map[string]string{"TERROIR_GUARD_URL": "https://guard.internal", "TERROIR_GUARD_MODEL": "m", "TERROIR_GUARD_API_KEY": "sk-env"},
			guard.Config{URL: "https://guard.internal", Model: "m", APIKey: "sk-env", Format: guard.FormatLlamaGuard,
				Timeout: guard.DefaultTimeout, Concurrency: guard.DefaultConcurrency, MaxTokens: guard.DefaultMaxTokens}, nil},
		{"settings without a URL", map[string]string{"TERROIR_GUARD_MODEL": "m"}, guard.Config{}, []string{"TERROIR_GUARD_URL"}},
		{"every problem at once", map[string]string{"TERROIR_GUARD_URL": "ftp://x", "TERROIR_GUARD_FORMAT": "llamaguard4",
			"TERROIR_GUARD_TIMEOUT": "soon", "TERROIR_GUARD_CONCURRENCY": "0", "TERROIR_GUARD_API_KEY_FILE": empty},
			guard.Config{}, []string{"TERROIR_GUARD_URL", "TERROIR_GUARD_MODEL", "TERROIR_GUARD_FORMAT", "TERROIR_GUARD_TIMEOUT",
				"TERROIR_GUARD_CONCURRENCY", "TERROIR_GUARD_API_KEY_FILE"}},
		{"two keys", map[string]string{"TERROIR_GUARD_URL": "http://h", "TERROIR_GUARD_MODEL": "m", "TERROIR_GUARD_API_KEY": "a",
			"TERROIR_GUARD_API_KEY_FILE": keyFile}, guard.Config{}, []string{"TERROIR_GUARD_API_KEY_FILE"}},
		{"unreadable key file", map[string]string{"TERROIR_GUARD_URL": "http://h", "TERROIR_GUARD_MODEL": "m",
			"TERROIR_GUARD_API_KEY_FILE": keyFile + ".missing"}, guard.Config{}, []string{"TERROIR_GUARD_API_KEY_FILE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := config.New(func(k string) string { return c.env[k] })
			got := loadConfig(env).Guard
			err := env.Err()
			if c.bad == nil {
				if err != nil || got != c.want || got.Enabled() != (c.want.URL != "") {
					t.Fatalf("loadConfig = %+v, %v; want %+v", got, err, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("loadConfig = %+v, want an error", got)
			}
			for _, v := range c.bad {
				if !strings.Contains(err.Error(), v+":") {
					t.Errorf("the error does not name %s: %v", v, err)
				}
			}
			if strings.Contains(err.Error(), "sk-") {
				t.Errorf("the error carries a key: %v", err)
			}
		})
	}
}

// TestGuardURLsPerGeography: each served geography's guard server is its
// own TERROIR_GUARD_URL_<GEO>, else TERROIR_GUARD_URL; a geography with
// neither has none, and a per-geography URL alone turns the stage on.
func TestGuardURLsPerGeography(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  map[string]string
		want map[string]string
		bad  []string
	}{
		{"off", map[string]string{}, map[string]string{}, nil},
		{"one URL for every geography", map[string]string{"TERROIR_GUARD_URL": "http://g", "TERROIR_GUARD_MODEL": "m"},
			map[string]string{"eu": "http://g", "us": "http://g"}, nil},
		{"per geography", map[string]string{"TERROIR_GUARD_URL_EU": "http://eu-guard", "TERROIR_GUARD_URL_US": "http://us-guard", "TERROIR_GUARD_MODEL": "m"},
			map[string]string{"eu": "http://eu-guard", "us": "http://us-guard"}, nil},
		{"one geography only", map[string]string{"TERROIR_GUARD_URL_EU": "http://eu-guard", "TERROIR_GUARD_MODEL": "m"},
			map[string]string{"eu": "http://eu-guard"}, nil},
		{"bad geography URL", map[string]string{"TERROIR_GUARD_URL_US": "ftp://x", "TERROIR_GUARD_MODEL": "m"}, nil, []string{"TERROIR_GUARD_URL_US"}},
		{"no model", map[string]string{"TERROIR_GUARD_URL_EU": "http://eu-guard"}, nil, []string{"TERROIR_GUARD_MODEL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := config.New(func(k string) string { return c.env[k] })
			got := loadConfig(env, "eu", "us").GuardURLs
			err := env.Err()
			if c.bad != nil {
				if err == nil {
					t.Fatalf("loadConfig = %v, want an error", got)
				}
				for _, v := range c.bad {
					if !strings.Contains(err.Error(), v+":") {
						t.Errorf("the error does not name %s: %v", v, err)
					}
				}
				return
			}
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("GuardURLs = %v, %v; want %v", got, err, c.want)
			}
			for g, u := range c.want {
				if got[g] != u {
					t.Errorf("%s = %q, want %q", g, got[g], u)
				}
			}
		})
	}
}
