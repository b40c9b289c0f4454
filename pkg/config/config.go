// Package config reads Terroir's TERROIR_* environment variables into a
// service's config struct and collects every problem, each naming its
// variable, so a misconfigured service reports them all at once.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/terroir-ai/terroir/pkg/geo"
)

// Env reads variables through getenv (os.Getenv in main, a map in tests).
type Env struct {
	getenv func(string) string
	errs   []error
}

// New returns an Env over getenv.
func New(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Lookup returns the trimmed value of name, or "" when unset.
func (e *Env) Lookup(name string) string { return strings.TrimSpace(e.getenv(name)) }

// String returns name's value or def.
func (e *Env) String(name, def string) string {
	if v := e.Lookup(name); v != "" {
		return v
	}
	return def
}

// OneOf returns name's value or def, which must be one of allowed.
func (e *Env) OneOf(name, def string, allowed ...string) string {
	v := e.String(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	e.Fail(name, fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

// Duration returns name parsed as a Go duration (e.g. "10s"), or def.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v := e.Lookup(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.Fail(name, fmt.Errorf("%q is not a positive duration such as 10s", v))
		return def
	}
	return d
}

// Wait returns name parsed as a duration that may be zero (a wait that
// can be switched off, such as a linger), or def when unset.
func (e *Env) Wait(name string, def time.Duration) time.Duration {
	v := e.Lookup(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.Fail(name, fmt.Errorf("%q is not a duration of 0 or more such as 10ms", v))
		return def
	}
	return d
}

// Int returns name parsed as an integer in [min, max], or def.
func (e *Env) Int(name string, def, min, max int) int {
	v := e.Lookup(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		e.Fail(name, fmt.Errorf("%q is not an integer from %d to %d", v, min, max))
		return def
	}
	return n
}

// Geos returns name parsed as a comma-separated list of known
// geographies, or def parsed the same way.
func (e *Env) Geos(name, def string) []string {
	gs, err := geo.ParseList(e.String(name, def))
	if err != nil {
		e.Fail(name, err)
	}
	return gs
}

// List returns name split on commas, empty items dropped, or def.
func (e *Env) List(name string, def []string) []string {
	v := e.Lookup(name)
	if v == "" {
		return def
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// PerGeo returns, for each geography, the value of name_<GEO> (e.g.
// TERROIR_KAFKA_BROKERS_EU), falling back to name, then def.
func (e *Env) PerGeo(name string, geos []string, def string) map[string]string {
	all := e.String(name, def)
	out := make(map[string]string, len(geos))
	for _, g := range geos {
		out[g] = e.String(name+"_"+strings.ToUpper(g), all)
	}
	return out
}

// SecretPerGeo returns, for each geography, a secret given either in
// name_<GEO> or in the file name_FILE_<GEO> names, falling back to name
// or the file name_FILE names, then "". A file's content is used up to
// its first line break, so a trailing newline does not count. Setting
// both forms at one level is a mistake; so is a file that cannot be read.
func (e *Env) SecretPerGeo(name string, geos []string) map[string]string {
	read := func(suffix string) (string, bool) {
		v, file := e.Lookup(name+suffix), e.Lookup(name+"_FILE"+suffix)
		switch {
		case v != "" && file != "":
			e.Fail(name+"_FILE"+suffix, fmt.Errorf("set either %s or %s, not both", name+suffix, name+"_FILE"+suffix))
			return "", false
		case v != "":
			return v, true
		case file != "":
			raw, err := os.ReadFile(file)
			if err != nil {
				e.Fail(name+"_FILE"+suffix, err)
				return "", false
			}
			line, _, _ := strings.Cut(string(raw), "\n")
			return strings.TrimRight(line, "\r"), true
		}
		return "", false
	}
	all, _ := read("")
	out := make(map[string]string, len(geos))
	for _, g := range geos {
		if v, ok := read("_" + strings.ToUpper(g)); ok {
			out[g] = v
		} else {
			out[g] = all
		}
	}
	return out
}

// Fail records a problem with variable name.
func (e *Env) Fail(name string, err error) {
	e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
}

// Err returns every recorded problem, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration: %w", errors.Join(e.errs...))
}
