// Package catalog reads the model catalog (deployments/catalog.yaml): the
// models a resource may deploy, who publishes them under what license,
// what they can do, how they are served, and whether they were scanned.
package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// Capabilities a model may have.
const (
	CapabilityChat        = "chat"
	CapabilityCompletions = "completions"
	CapabilityEmbeddings  = "embeddings"
	CapabilityFineTuning  = "fine-tuning"
)

var capabilities = []string{CapabilityChat, CapabilityCompletions, CapabilityEmbeddings, CapabilityFineTuning}

// Token limits a model takes when its entry does not state them.
const (
	// DefaultContextWindow is the tokens a model reads and writes in one
	// request, prompt and output together.
	DefaultContextWindow = 8192
	// DefaultMaxOutputTokens is the most tokens a chat or completions
	// model writes per choice.
	DefaultMaxOutputTokens = 4096
)

// Model is one catalog entry.
type Model struct {
	ID           string   `yaml:"id" json:"id"`
	Version      string   `yaml:"version" json:"version"`
	Publisher    string   `yaml:"publisher" json:"publisher"`
	License      string   `yaml:"license" json:"license"`
	Description  string   `yaml:"description" json:"description,omitempty"`
	Capabilities []string `yaml:"capabilities" json:"capabilities"`
	Backend      Backend  `yaml:"backend" json:"backend"`
	// Curated means the model's container and weights were scanned.
	Curated bool `yaml:"curated" json:"curated"`
	// Downloadable means the weights are open.
	Downloadable bool `yaml:"downloadable" json:"downloadable"`
	// ContextWindow is the tokens the model handles in one request,
	// prompt and output together (default DefaultContextWindow).
	ContextWindow int `yaml:"context_window" json:"contextWindow"`
	// MaxOutputTokens is the most a request's max_tokens (or
	// max_completion_tokens) may ask of a chat or completions model, per
	// choice (default DefaultMaxOutputTokens, at most ContextWindow); 0
	// for a model that writes no text.
	MaxOutputTokens int `yaml:"max_output_tokens" json:"maxOutputTokens,omitempty"`
}

// Can reports whether the model has capability c.
func (m Model) Can(c string) bool { return slices.Contains(m.Capabilities, c) }

// Backend says how a model is served: built in, or by an OpenAI-compatible
// upstream server.
type Backend struct {
	// Builtin is set for models served inside the inference service.
	Builtin bool `json:"builtin"`
	// BaseURL is the upstream's OpenAI API root ("http://host:8000/v1").
	BaseURL string `json:"baseUrl,omitempty"`
	// APIKeyEnv names the variable holding the upstream's key; the key
	// itself never appears in the catalog.
	APIKeyEnv string `json:"apiKeyVariable,omitempty"`
	// Model is the upstream's name for the model; default the catalog ID.
	Model string `json:"upstreamModel,omitempty"`
	// Timeout bounds one upstream call; default 120 s.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// UnmarshalYAML reads either the scalar "builtin" or an upstream mapping.
func (b *Backend) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "builtin" {
			return fmt.Errorf("line %d: backend must be builtin or a mapping with base_url, not %q", n.Line, n.Value)
		}
		*b = Backend{Builtin: true}
		return nil
	}
	var u struct {
		BaseURL   string `yaml:"base_url"`
		APIKeyEnv string `yaml:"api_key_env"`
		Model     string `yaml:"model"`
		Timeout   string `yaml:"timeout"`
	}
	if err := decodeStrict(n, &u); err != nil {
		return err
	}
	*b = Backend{BaseURL: u.BaseURL, APIKeyEnv: u.APIKeyEnv, Model: u.Model, Timeout: 120 * time.Second}
	if u.Timeout != "" {
		d, err := time.ParseDuration(u.Timeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("line %d: backend timeout %q is not a positive duration", n.Line, u.Timeout)
		}
		b.Timeout = d
	}
	return nil
}

func decodeStrict(n *yaml.Node, v any) error {
	out, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// Catalog is the set of deployable models.
type Catalog struct {
	Models []Model `yaml:"models" json:"data"`
}

// Model returns the model with id.
func (c *Catalog) Model(id string) (Model, bool) {
	for _, m := range c.Models {
		if m.ID == id {
			return m, true
		}
	}
	return Model{}, false
}

// Load reads and checks a catalog file.
func Load(path string) (*Catalog, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading catalog: %w", err)
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return c, nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Parse reads and checks catalog YAML, reporting every problem.
func Parse(raw []byte) (*Catalog, error) {
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	var errs []error
	seen := map[string]bool{}
	for i, m := range c.Models {
		where := fmt.Sprintf("models[%d]", i)
		if !idPattern.MatchString(m.ID) {
			errs = append(errs, fmt.Errorf("%s: id %q must be 1-64 letters, digits, '.', '_' or '-'", where, m.ID))
		}
		if seen[m.ID] {
			errs = append(errs, fmt.Errorf("%s: id %q appears twice", where, m.ID))
		}
		seen[m.ID] = true
		if m.Version == "" || m.Publisher == "" || m.License == "" {
			errs = append(errs, fmt.Errorf("%s (%s): version, publisher and license are required", where, m.ID))
		}
		if len(m.Capabilities) == 0 {
			errs = append(errs, fmt.Errorf("%s (%s): capabilities are required", where, m.ID))
		}
		for _, cap := range m.Capabilities {
			if !slices.Contains(capabilities, cap) {
				errs = append(errs, fmt.Errorf("%s (%s): unknown capability %q (known: %v)", where, m.ID, cap, capabilities))
			}
		}
		generates := m.Can(CapabilityChat) || m.Can(CapabilityCompletions)
		switch {
		case m.ContextWindow < 0:
			errs = append(errs, fmt.Errorf("%s (%s): context_window %d must be positive", where, m.ID, m.ContextWindow))
		case m.ContextWindow == 0:
			c.Models[i].ContextWindow = max(DefaultContextWindow, m.MaxOutputTokens)
		}
		switch {
		case !generates && m.MaxOutputTokens != 0:
			errs = append(errs, fmt.Errorf("%s (%s): max_output_tokens applies to chat and completions models only", where, m.ID))
		case m.MaxOutputTokens < 0:
			errs = append(errs, fmt.Errorf("%s (%s): max_output_tokens %d must be positive", where, m.ID, m.MaxOutputTokens))
		case generates && m.MaxOutputTokens == 0:
			c.Models[i].MaxOutputTokens = min(DefaultMaxOutputTokens, c.Models[i].ContextWindow)
		case m.ContextWindow > 0 && m.MaxOutputTokens > m.ContextWindow:
			errs = append(errs, fmt.Errorf("%s (%s): max_output_tokens %d exceeds context_window %d", where, m.ID, m.MaxOutputTokens, m.ContextWindow))
		}
		if !m.Backend.Builtin {
			u, err := url.Parse(m.Backend.BaseURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("%s (%s): backend base_url %q must be an http(s) URL", where, m.ID, m.Backend.BaseURL))
			}
			if m.Backend.Model == "" {
				c.Models[i].Backend.Model = m.ID
			}
		}
	}
	if len(c.Models) == 0 {
		errs = append(errs, errors.New("no models"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}
