package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// viewPublisher applies changes straight to the view, as the control
// topic's consumer would after a round trip; the bus path itself is
// covered by the integration tests.
type viewPublisher struct{ state *control.State }

func (p viewPublisher) Publish(_ context.Context, _ string, changes ...events.ControlChange) error {
	for _, c := range changes {
		p.state.ApplyChange(c)
	}
	return nil
}

type noShredder struct{}

func (noShredder) Shred(context.Context, string, string) error { return nil }

func (noShredder) Reopen(context.Context, string, string) error { return nil }

// fuzzBodyRoutes are the management calls that take a body.
var fuzzBodyRoutes = []struct{ method, path string }{
	{"PUT", "/mgmt/resources/acme"},
	{"PUT", "/mgmt/resources/fresh"},
	{"PATCH", "/mgmt/resources/acme"},
	{"POST", "/mgmt/resources/acme/regenerateKey"},
	{"PUT", "/mgmt/resources/acme/deployments/chat"},
	{"PUT", "/mgmt/resources/acme/contentFilterPolicies/strict"},
	{"PUT", "/mgmt/resources/acme/blocklists/names"},
	{"PUT", "/mgmt/policies/residency"},
}

const fuzzToken = "fuzz-operator-token"

// FuzzManagementBodies sends arbitrary bodies to every management call
// that takes one, on a view holding a resource with a deployment, a
// policy and a blocklist. No body crashes the handler or gets a 5xx; a
// refusal is an OpenAI-shaped error that names no more of the body than a
// short quote.
func FuzzManagementBodies(f *testing.F) {
	_, file, _, _ := runtime.Caller(0)
	cat, err := catalog.Load(filepath.Join(filepath.Dir(file), "..", "..", "..", "deployments", "catalog.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		`{"location":"eu","properties":{"contact":{"name":"Ops","email":"ops@contoso.example"}}}`,
		`{"location":"mars"}`,
		`{"properties":{"abuseMonitoring":{"optOutApproved":true,"contentLogging":false}}}`,
		`{"keyName":"key1"}`,
		`{"keyName":"key3"}`,
		`{"sku":{"name":"Standard","capacity":10},"properties":{"model":{"format":"OpenAI","name":"terroir-ngram","version":"1"}}}`,
		`{"sku":{"name":"Standard","capacity":-1e300},"properties":{"model":{"name":"terroir-ngram"},"raiPolicyName":"strict"}}`,
		`{"properties":{"contentFilters":[{"name":"hate","source":"Prompt","severityThreshold":"Low"},{"name":"guard_model","source":"Completion","failureMode":"Closed"}],"customBlocklists":[{"blocklistName":"names","source":"Prompt"}]}}`,
		`{"properties":{"blocklistItems":[{"pattern":"Initech"},{"blocklistItemId":"codes","pattern":"project-\\d{4}","isRegex":true},{"pattern":"(a+)+$","isRegex":true}]}}`,
		`{"properties":{"assignedTo":["*"],"rules":{"allowedSkus":["Standard"],"curatedOnly":true,"allowedModels":["terroir-ngram"]}}}`,
		`{"name":"other"}`, `[]`, `null`, `{"properties":{"blocklistItems":[{"pattern":"` + strings.Repeat("x", 400) + `"}]}}`,
	}
	for i := range fuzzBodyRoutes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		state := control.NewState(zap.NewNop())
		var clock atomic.Int64
		a, err := New(Config{State: state, Publisher: viewPublisher{state}, Keys: noShredder{}, Catalog: cat,
			Geos: []string{"eu", "us"}, OperatorToken: fuzzToken, MaxBody: 64 << 10, Log: zap.NewNop(),
			// every change a moment after the one before, as writes are
			Now: func() time.Time { return time.Unix(1_800_000_000, clock.Add(1)) }})
		if err != nil {
			t.Fatal(err)
		}
		h := a.Handler()
		call := func(method, path string, body []byte) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+fuzzToken)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			return w
		}
		for _, setup := range []struct{ method, path, body string }{
			{"PUT", "/mgmt/resources/acme", seeds[0]},
			{"PUT", "/mgmt/resources/acme/deployments/chat", seeds[5]},
			{"PUT", "/mgmt/resources/acme/blocklists/names", seeds[8]},
			{"PUT", "/mgmt/resources/acme/contentFilterPolicies/strict", seeds[7]},
		} {
			if w := call(setup.method, setup.path, []byte(setup.body)); w.Code >= 300 {
				t.Fatalf("setup %s %s = %d %s", setup.method, setup.path, w.Code, w.Body)
			}
		}
		rt := fuzzBodyRoutes[int(route)%len(fuzzBodyRoutes)]
		w := call(rt.method, rt.path, body)
		if w.Code >= 500 {
			t.Fatalf("%s %s = %d: %s", rt.method, rt.path, w.Code, w.Body)
		}
		if w.Code < 400 {
			return
		}
		var e struct {
			Error struct {
				Message *string `json:"message"`
				Code    any     `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Message == nil || *e.Error.Message == "" {
			t.Fatalf("%s %s = %d, not an OpenAI-shaped error: %s", rt.method, rt.path, w.Code, w.Body)
		}
		if n := len(*e.Error.Message); n > 1024 {
			t.Fatalf("%s %s: an error message of %d bytes", rt.method, rt.path, n)
		}
		// the error quotes at most a short piece of the body
		const window = 48
		for i := 0; i+window <= len(body); i++ {
			if bytes.Contains(w.Body.Bytes(), body[i:i+window]) {
				t.Fatalf("%s %s: the error quotes %q of the body: %s", rt.method, rt.path, body[i:i+window], w.Body)
			}
		}
	})
}
