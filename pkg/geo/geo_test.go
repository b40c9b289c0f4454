package geo_test

import (
	"testing"

	"github.com/terroir-ai/terroir/pkg/geo"
)

func TestParseList(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"eu,us", []string{"eu", "us"}, true},
		{" US , eu ", []string{"us", "eu"}, true},
		{"eu,eu", nil, false},
		{"eu,atlantis", nil, false},
		{"", nil, false},
		{" , ", nil, false},
	}
	for _, c := range cases {
		got, err := geo.ParseList(c.in)
		if (err == nil) != c.ok || (c.ok && len(got) != len(c.want)) {
			t.Errorf("ParseList(%q) = %v, %v", c.in, got, err)
			continue
		}
		for i := range c.want {
			if got[i] != c.want[i] {
				t.Errorf("ParseList(%q) = %v", c.in, got)
			}
		}
	}
}

func TestSameDataZone(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b string
		want bool
	}{
		{"eu", "eu", true},
		{"eu", "us", false},
		{"uk", "uk", true},
		{"uk", "ch", false}, // neither has a data zone
		{"eu", "nowhere", false},
	}
	for _, c := range cases {
		if got := geo.SameDataZone(c.a, c.b); got != c.want {
			t.Errorf("SameDataZone(%s,%s) = %v", c.a, c.b, got)
		}
	}
	if g, ok := geo.Lookup("eu"); !ok || g.ReviewRegion != "EEA" || g.DataZone != "EU" {
		t.Errorf("eu = %+v", g)
	}
}
