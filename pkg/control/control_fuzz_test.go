package control_test

import (
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

var fuzzKinds = []events.ControlKind{events.ControlResource, events.ControlDeployment, events.ControlAPIKey,
	events.ControlFilterPolicy, events.ControlBlocklist, events.ControlDeploymentPolicy, events.ControlEnforcement,
	events.ControlAudit, "unknown_kind"}

// fuzzChanges turns fuzz bytes into a few control records of two
// geographies: kind, object, deletion, clock and spec all chosen by the
// input, specs often not what their kind expects.
func fuzzChanges(data []byte, specs [][]byte) []record {
	var out []record
	for i := 0; len(data) >= 4 && i < 16; i++ {
		b := data[:4]
		data = data[4:]
		c := events.ControlChange{Kind: fuzzKinds[int(b[0])%len(fuzzKinds)], Resource: []string{"acme", "globex", ""}[int(b[1])%3],
			ID: []string{"a", "b", ""}[int(b[1]>>2)%3], Actor: "fuzz", Deleted: b[2]&1 == 1,
			At: time.Unix(1_800_000_000+int64(int8(b[3])), 0).UTC()}
		if !c.Deleted {
			c.Spec = json.RawMessage(specs[int(b[2]>>1)%len(specs)])
		}
		out = append(out, record{geo: []string{"eu", "us"}[int(b[2]>>7)], change: c})
	}
	return out
}

type record struct {
	geo    string
	change events.ControlChange
}

// view is everything a State answers, for comparing two.
func view(s *control.State) map[string]any {
	v := map[string]any{"resources": s.Resources(), "policies": s.DeploymentPolicies()}
	for _, r := range []string{"acme", "globex", ""} {
		v["deployments/"+r] = s.Deployments(r)
		v["filter/"+r] = s.FilterPolicies(r)
		v["blocklists/"+r] = s.Blocklists(r)
		v["keys/"+r] = s.APIKeys(r)
		e, ok := s.Enforcement(r)
		v["enforcement/"+r] = []any{e, ok}
		v["audit/"+r] = s.Audit(r, 100)
	}
	return v
}

// FuzzControlRecords applies arbitrary control records, each geography's
// in its topic's order, and checks that the view never panics, that
// replaying a record changes nothing, and that two instances reading the
// two geographies' topics interleaved differently end with the same view.
func FuzzControlRecords(f *testing.F) {
	specs := [][]byte{
		[]byte(`{"name":"acme","location":"eu","content_logging":true}`),
		[]byte(`{"name":"a","model":"terroir-ngram","sku":"Standard","capacity":10}`),
		[]byte(`{"name":"key1","hash":"00"}`),
		[]byte(`{"action":"suspend"}`),
		[]byte(`null`), []byte(`"a string"`), []byte(`[1,2]`), []byte(`{"capacity":"ten"}`), []byte(`{`),
	}
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 1, 1, 4, 2, 0, 6, 4, 130, 255})
	f.Add([]byte{0, 0, 0, 5, 0, 0, 128, 0, 0, 0, 1, 4, 3, 1, 14, 9})
	f.Add([]byte{8, 1, 16, 0, 2, 9, 2, 2, 6, 0, 0, 0, 0, 0, 129, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs := fuzzChanges(data, specs)
		apply := func(order []int) *control.State {
			s := control.NewState(zap.NewNop())
			offsets := map[string]int64{}
			var byGeo = map[string][]record{}
			for _, r := range recs {
				byGeo[r.geo] = append(byGeo[r.geo], r)
			}
			// order says which geography's topic delivers its next record
			next := map[string]int{}
			for _, o := range order {
				g := []string{"eu", "us"}[o%2]
				if next[g] >= len(byGeo[g]) {
					g = []string{"eu", "us"}[(o+1)%2]
				}
				if next[g] >= len(byGeo[g]) {
					break
				}
				r := byGeo[g][next[g]]
				offsets[g]++
				s.ApplyFrom(g, offsets[g], r.change)
				// a replay of the same record changes nothing
				s.ApplyFrom(g, offsets[g], r.change)
				next[g]++
			}
			return s
		}
		var order1, order2 []int
		seed := uint32(len(data))
		if len(data) >= 4 {
			seed = binary.LittleEndian.Uint32(data)
		}
		for i := range 2 * len(recs) {
			order1 = append(order1, i%2)
			seed = seed*1664525 + 1013904223
			order2 = append(order2, int(seed>>16)%2)
		}
		a, b := view(apply(order1)), view(apply(order2))
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("two orders of the same topics give different views:\n%v\n%v", a, b)
		}
	})
}
