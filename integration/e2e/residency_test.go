package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestResidency: a Standard eu resource's records are only on eu topics;
// a GlobalStandard eu request goes to us when eu has no capacity, and its
// abuse-monitoring record is still on eu; a DataZoneStandard request never
// leaves its zone.
func TestResidency(t *testing.T) {
	// The inference worker serves us only: eu has no capacity.
	s := startStack(t, map[string]map[string]string{"inference": {"TERROIR_GEOS": "us"}, "ingress": {"TERROIR_REQUEST_TIMEOUT": "3s"}})
	key := s.tenant("acme", "eu", true)
	s.op("PUT", "/mgmt/resources/acme/deployments/global", map[string]any{"sku": map[string]any{"name": "GlobalStandard", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}, http.StatusCreated)
	s.op("PUT", "/mgmt/resources/acme/deployments/zone", map[string]any{"sku": map[string]any{"name": "DataZoneStandard", "capacity": 100},
		"properties": map[string]any{"model": map[string]any{"name": "terroir-ngram"}}}, http.StatusCreated)

	body := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":10}`
	}
	// Capacity reports from the us worker may take a moment to arrive.
	var global resp
	for range 10 {
		global = s.call("POST", "/v1/chat/completions", key, body("global"))
		if global.status == http.StatusOK {
			break
		}
	}
	if global.status != http.StatusOK {
		t.Fatalf("global = %d %s\n%s", global.status, global.raw, s.logs.String())
	}
	globalID := global.header.Get("x-request-id")
	// Standard and DataZone requests of an eu resource are never sent to
	// us, so with no eu worker they time out rather than leave the zone.
	zoneID := ""
	if r := s.call("POST", "/v1/chat/completions", key, body("zone")); r.status == http.StatusOK {
		t.Fatalf("a DataZone request was answered without an eu worker: %s", r.raw)
	} else {
		zoneID = r.header.Get("x-request-id")
	}

	seen := map[string]map[string]bool{} // request ID → geo/stream
	for _, r := range s.allRecords() {
		id := header(r, "terroir-request-id")
		if id == "" {
			id = string(r.Key)
		}
		if id != globalID && id != zoneID {
			continue
		}
		g, stream := geoOf(r.Topic)
		if seen[id] == nil {
			seen[id] = map[string]bool{}
		}
		seen[id][g+"/"+stream] = true
	}
	for _, want := range []string{"us/requests", "us/inference", "us/completions", "eu/abuse-log", "eu/safety-signals"} {
		if !seen[globalID][want] {
			t.Errorf("global request not on %s; seen %v", want, seen[globalID])
		}
	}
	if seen[globalID]["us/abuse-log"] || seen[globalID]["eu/inference"] {
		t.Errorf("global request's records in the wrong place: %v", seen[globalID])
	}
	for where := range seen[zoneID] {
		if strings.HasPrefix(where, "us/") {
			t.Errorf("DataZone request left its zone: %s", where)
		}
	}
	if !seen[zoneID]["eu/requests"] {
		t.Errorf("DataZone request not on eu/requests: %v", seen[zoneID])
	}
}
