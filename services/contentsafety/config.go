package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/terroir-ai/terroir/pkg/config"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
)

// Config is contentsafety's own configuration, beside the shared one.
type Config struct {
	// StreamWindow is the size in bytes of the windows streamed output is
	// checked in (TERROIR_STREAM_WINDOW_BYTES, default 256).
	StreamWindow int
	// Guard configures the optional guard-model stage, built with
	// guard.New and the daemon's logger and registry. It is off (the
	// built-in rules decide alone) unless TERROIR_GUARD_URL or a
	// geography's TERROIR_GUARD_URL_<GEO> is set; see the README for the
	// variables. Guard.URL is TERROIR_GUARD_URL.
	Guard guard.Config
	// GuardURLs is the guard model's server per served geography
	// (TERROIR_GUARD_URL_<GEO>, else TERROIR_GUARD_URL): text processed
	// in a geography is rated only by that geography's server, and a
	// geography with neither has no guard stage.
	GuardURLs map[string]string
}

// guardVars are the variables that only mean something with
// TERROIR_GUARD_URL.
var guardVars = []string{"TERROIR_GUARD_MODEL", "TERROIR_GUARD_API_KEY", "TERROIR_GUARD_API_KEY_FILE",
	"TERROIR_GUARD_FORMAT", "TERROIR_GUARD_TIMEOUT", "TERROIR_GUARD_CONCURRENCY", "TERROIR_GUARD_MAX_TOKENS"}

// loadConfig reads contentsafety's configuration for the geographies it
// serves.
func loadConfig(env *config.Env, geos ...string) Config {
	c := Config{StreamWindow: env.Int("TERROIR_STREAM_WINDOW_BYTES", 256, 16, 1<<20)}
	base := env.Lookup("TERROIR_GUARD_URL")
	urls := env.PerGeo("TERROIR_GUARD_URL", geos, "")
	for g, u := range urls {
		if u == "" {
			delete(urls, g)
			continue
		}
		if u != base {
			if _, err := guard.Endpoint(u); err != nil {
				env.Fail("TERROIR_GUARD_URL_"+strings.ToUpper(g), err)
			}
		}
	}
	if base == "" && len(urls) == 0 {
		for _, v := range guardVars {
			if env.Lookup(v) != "" {
				env.Fail("TERROIR_GUARD_URL", fmt.Errorf("required when %s is set", v))
				break
			}
		}
		return c
	}
	g := guard.Config{
		URL:         base,
		Model:       env.Lookup("TERROIR_GUARD_MODEL"),
		Format:      guard.Format(env.OneOf("TERROIR_GUARD_FORMAT", string(guard.FormatLlamaGuard), string(guard.FormatLlamaGuard), string(guard.FormatShieldGemma))),
		Timeout:     env.Duration("TERROIR_GUARD_TIMEOUT", guard.DefaultTimeout),
		Concurrency: env.Int("TERROIR_GUARD_CONCURRENCY", guard.DefaultConcurrency, 1, 1024),
		MaxTokens:   env.Int("TERROIR_GUARD_MAX_TOKENS", guard.DefaultMaxTokens, 1, 4096),
	}
	if base != "" {
		if _, err := guard.Endpoint(base); err != nil {
			env.Fail("TERROIR_GUARD_URL", err)
		}
	}
	if g.Model == "" {
		env.Fail("TERROIR_GUARD_MODEL", errors.New("required with TERROIR_GUARD_URL: the name the server knows the guard model by"))
	}
	key, file := env.Lookup("TERROIR_GUARD_API_KEY"), env.Lookup("TERROIR_GUARD_API_KEY_FILE")
	switch {
	case key != "" && file != "":
		env.Fail("TERROIR_GUARD_API_KEY_FILE", errors.New("set either TERROIR_GUARD_API_KEY or TERROIR_GUARD_API_KEY_FILE, not both"))
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			env.Fail("TERROIR_GUARD_API_KEY_FILE", err)
		} else if key = strings.TrimSpace(string(b)); key == "" {
			env.Fail("TERROIR_GUARD_API_KEY_FILE", fmt.Errorf("%s is empty", file))
		}
	}
	g.APIKey = key
	c.Guard = g
	c.GuardURLs = urls
	return c
}
