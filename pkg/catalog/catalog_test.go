package catalog_test

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/catalog"
)

func TestDefaultCatalogServesWithNothingInstalled(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	c, err := catalog.Load(filepath.Join(filepath.Dir(file), "..", "..", "deployments", "catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chat, embed bool
	for _, m := range c.Models {
		if m.Backend.Builtin && m.Can(catalog.CapabilityChat) && m.Can(catalog.CapabilityCompletions) {
			chat = true
		}
		if m.Backend.Builtin && m.Can(catalog.CapabilityEmbeddings) {
			embed = true
		}
	}
	if !chat || !embed {
		t.Fatalf("default catalog lacks a built-in chat (%v) or embedding (%v) model", chat, embed)
	}
	for _, m := range c.Models {
		generates := m.Can(catalog.CapabilityChat) || m.Can(catalog.CapabilityCompletions)
		if m.ContextWindow <= 0 || (generates && (m.MaxOutputTokens <= 0 || m.MaxOutputTokens > m.ContextWindow)) {
			t.Errorf("%s: context window %d, max output tokens %d", m.ID, m.ContextWindow, m.MaxOutputTokens)
		}
	}
	if m, _ := c.Model("terroir-ngram"); m.MaxOutputTokens != 4096 { // what the built-in model generates at most
		t.Errorf("terroir-ngram max output tokens = %d", m.MaxOutputTokens)
	}
	up, ok := c.Model("llama-3.1-8b-instruct")
	if !ok || up.Backend.Builtin || up.Backend.BaseURL == "" || up.Backend.Timeout != 120*time.Second || up.Curated {
		t.Fatalf("upstream example = %+v", up)
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown field":        {"models:\n - id: a\n   versoin: 1\n", "versoin"},
		"bad backend scalar":   {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: magic}\n", "backend must be builtin"},
		"bad base url":         {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: {base_url: 'ftp://x'}}\n", "base_url"},
		"bad timeout":          {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: {base_url: 'http://x', timeout: soon}}\n", "timeout"},
		"unknown capability":   {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [telepathy], backend: builtin}\n", "telepathy"},
		"duplicate id":         {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n", "twice"},
		"missing license":      {"models:\n - {id: a, version: '1', publisher: p, capabilities: [chat], backend: builtin}\n", "license"},
		"bad id":               {"models:\n - {id: 'a b', version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n", "id"},
		"empty":                {"models: []\n", "no models"},
		"output over context":  {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin, context_window: 100, max_output_tokens: 200}\n", "max_output_tokens"},
		"negative context":     {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin, context_window: -1}\n", "context_window"},
		"output of embeddings": {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [embeddings], backend: builtin, max_output_tokens: 10}\n", "max_output_tokens"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := catalog.Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestUpstreamModelDefaultsToID(t *testing.T) {
	c, err := catalog.Parse([]byte("models:\n - {id: m, version: '1', publisher: p, license: l, capabilities: [chat], backend: {base_url: 'http://127.0.0.1:1/v1', api_key_env: K}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := c.Model("m"); m.Backend.Model != "m" || m.Backend.APIKeyEnv != "K" {
		t.Fatalf("%+v", m.Backend)
	}
}

// TestTokenLimitsDefault: a model that does not state its limits gets
// documented ones, so every generating model has a cap on max_tokens.
func TestTokenLimitsDefault(t *testing.T) {
	c, err := catalog.Parse([]byte("models:\n - {id: g, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n" +
		" - {id: e, version: '1', publisher: p, license: l, capabilities: [embeddings], backend: builtin}\n" +
		" - {id: big, version: '1', publisher: p, license: l, capabilities: [completions], backend: builtin, context_window: 131072, max_output_tokens: 16384}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id              string
		context, output int
	}{
		{"g", catalog.DefaultContextWindow, catalog.DefaultMaxOutputTokens},
		{"e", catalog.DefaultContextWindow, 0},
		{"big", 131072, 16384},
	}
	for _, cs := range cases {
		if m, _ := c.Model(cs.id); m.ContextWindow != cs.context || m.MaxOutputTokens != cs.output {
			t.Errorf("%s: context %d output %d, want %d %d", cs.id, m.ContextWindow, m.MaxOutputTokens, cs.context, cs.output)
		}
	}
}
