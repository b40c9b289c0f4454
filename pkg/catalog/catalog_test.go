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
	up, ok := c.Model("llama-3.1-8b-instruct")
	if !ok || up.Backend.Builtin || up.Backend.BaseURL == "" || up.Backend.Timeout != 120*time.Second || up.Curated {
		t.Fatalf("upstream example = %+v", up)
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown field":      {"models:\n - id: a\n   versoin: 1\n", "versoin"},
		"bad backend scalar": {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: magic}\n", "backend must be builtin"},
		"bad base url":       {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: {base_url: 'ftp://x'}}\n", "base_url"},
		"bad timeout":        {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: {base_url: 'http://x', timeout: soon}}\n", "timeout"},
		"unknown capability": {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [telepathy], backend: builtin}\n", "telepathy"},
		"duplicate id":       {"models:\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n - {id: a, version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n", "twice"},
		"missing license":    {"models:\n - {id: a, version: '1', publisher: p, capabilities: [chat], backend: builtin}\n", "license"},
		"bad id":             {"models:\n - {id: 'a b', version: '1', publisher: p, license: l, capabilities: [chat], backend: builtin}\n", "id"},
		"empty":              {"models: []\n", "no models"},
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
