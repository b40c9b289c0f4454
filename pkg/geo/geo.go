// Package geo knows Terroir's geographies: where a resource's data may be
// processed and stored, the data zone each belongs to, and the region its
// human reviewers must be located in.
package geo

import (
	"fmt"
	"slices"
	"strings"
)

// Geo is one geography.
type Geo struct {
	// Name is the short lowercase name used in topic names and keys ("eu").
	Name string
	// DataZone groups geographies that DataZone deployments may process in
	// ("EU"); empty when the geography belongs to no data zone.
	DataZone string
	// ReviewRegion is where reviewers of this geography's abuse-monitoring
	// records must be located ("EEA").
	ReviewRegion string
}

// known lists the geographies Terroir can be configured for. It is
// read-only.
var known = []Geo{
	{Name: "eu", DataZone: "EU", ReviewRegion: "EEA"},
	{Name: "us", DataZone: "US", ReviewRegion: "US"},
	{Name: "uk", DataZone: "", ReviewRegion: "UK"},
	{Name: "ch", DataZone: "", ReviewRegion: "CH"},
	{Name: "jp", DataZone: "", ReviewRegion: "JP"},
	{Name: "au", DataZone: "", ReviewRegion: "AU"},
}

// Lookup returns the geography with the given name.
func Lookup(name string) (Geo, bool) {
	for _, g := range known {
		if g.Name == name {
			return g, true
		}
	}
	return Geo{}, false
}

// Known returns the names of every geography Terroir knows.
func Known() []string {
	out := make([]string, len(known))
	for i, g := range known {
		out[i] = g.Name
	}
	return out
}

// ParseList parses a comma-separated list of geography names, rejecting
// unknown and duplicate names. The result keeps the given order.
func ParseList(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		name := strings.TrimSpace(strings.ToLower(part))
		if name == "" {
			continue
		}
		if _, ok := Lookup(name); !ok {
			return nil, fmt.Errorf("unknown geography %q (known: %s)", name, strings.Join(Known(), ", "))
		}
		if slices.Contains(out, name) {
			return nil, fmt.Errorf("geography %q listed twice", name)
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no geography given (known: %s)", strings.Join(Known(), ", "))
	}
	return out, nil
}

// SameDataZone reports whether a and b are the same geography or share a
// data zone.
func SameDataZone(a, b string) bool {
	if a == b {
		return true
	}
	ga, okA := Lookup(a)
	gb, okB := Lookup(b)
	return okA && okB && ga.DataZone != "" && ga.DataZone == gb.DataZone
}
