package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
)

const operatorToken = "test-operator-token-0123456789"

// client is an HTTP client of one running ingress.
type client struct {
	t    *testing.T
	base string
}

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// errParam returns the param of an OpenAI-shaped error body.
func (r reply) errParam() any { return r.errField("param") }

func (r reply) errCode() any { return r.errField("code") }

func (r reply) errMessage() string { s, _ := r.errField("message").(string); return s }

func (r reply) errField(k string) any {
	e, _ := r.body["error"].(map[string]any)
	return e[k]
}

// do sends body (a string is sent as is, anything else as JSON) with
// cred as a Bearer token.
func (a client) do(method, path, cred string, body any) reply {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	r.raw, _ = io.ReadAll(resp.Body)
	if len(r.raw) > 0 {
		if err := json.Unmarshal(r.raw, &r.body); err != nil {
			a.t.Fatalf("%s %s: %d, body is not a JSON object: %q", method, path, r.status, r.raw)
		}
	}
	if resp.Header.Get("x-request-id") == "" || resp.Header.Get("apim-request-id") != resp.Header.Get("x-request-id") {
		a.t.Errorf("%s %s: request ID headers missing or different: %q %q", method, path, resp.Header.Get("x-request-id"), resp.Header.Get("apim-request-id"))
	}
	return r
}

// op calls as the operator and fails the test unless the status is want.
func (a client) op(method, path string, body any, want int) reply {
	a.t.Helper()
	r := a.do(method, path, operatorToken, body)
	if r.status != want {
		a.t.Fatalf("%s %s = %d, want %d: %s", method, path, r.status, want, r.raw)
	}
	return r
}

// startIngress runs ingress against fresh infrastructure.
func startIngress(t *testing.T) (client, *daemontest.Service) {
	t.Helper()
	s := daemontest.Start(t, run, map[string]string{"TERROIR_OPERATOR_TOKEN": operatorToken})
	return client{t: t, base: "http://" + s.Env["TERROIR_HTTP_ADDR"]}, s
}

// startAnother runs a second ingress instance on the same cluster and
// namespace as s.
func startAnother(t *testing.T, s *daemontest.Service) client {
	t.Helper()
	env := maps.Clone(s.Env)
	env["TERROIR_ADMIN_ADDR"] = daemontest.FreeAddr(t)
	env["TERROIR_HTTP_ADDR"] = daemontest.FreeAddr(t)
	env["TERROIR_INSTANCE_ID"] = "ingress-second"
	daemontest.StartEnv(t, run, env)
	return client{t: t, base: "http://" + env["TERROIR_HTTP_ADDR"]}
}

func resourceBody(location string) map[string]any {
	return map[string]any{"location": location, "properties": map[string]any{
		"contact": map[string]any{"name": "Ops", "email": "ops@contoso.example"}}}
}

func deploymentBody(model, sku string) map[string]any {
	return map[string]any{"sku": map[string]any{"name": sku, "capacity": 10},
		"properties": map[string]any{"model": map[string]any{"format": "OpenAI", "name": model, "version": "1"}}}
}

func props(r reply) map[string]any { p, _ := r.body["properties"].(map[string]any); return p }

func capabilities(r reply) []any { c, _ := props(r)["capabilities"].([]any); return c }

func TestResourceLifecycle(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	r := a.op("PUT", "/mgmt/resources/contoso-eu", resourceBody("eu"), http.StatusCreated)
	if r.body["name"] != "contoso-eu" || r.body["location"] != "eu" || props(r)["dataZone"] != "EU" ||
		props(r)["provisioningState"] != "Succeeded" || props(r)["endpoint"] != "http://127.0.0.1:8080/" {
		t.Fatalf("created resource = %s", r.raw)
	}
	am := props(r)["abuseMonitoring"].(map[string]any)
	if am["contentLogging"] != true || am["optOutApproved"] != false {
		t.Fatalf("abuse monitoring defaults = %v", am)
	}
	got := a.op("GET", "/mgmt/resources/contoso-eu", nil, http.StatusOK)
	if !bytes.Equal(got.raw, r.raw) {
		t.Fatalf("GET after PUT differs:\n%s\n%s", got.raw, r.raw)
	}
	// A GET body sent back unchanged is a valid PUT (read-only fields are ignored).
	a.op("PUT", "/mgmt/resources/contoso-eu", string(got.raw), http.StatusOK)

	changed := resourceBody("eu")
	changed["properties"].(map[string]any)["contact"] = map[string]any{"name": "Security", "email": "security@contoso.example"}
	a.op("PUT", "/mgmt/resources/contoso-eu", changed, http.StatusOK)
	got = a.op("GET", "/mgmt/resources/contoso-eu", nil, http.StatusOK)
	if c := props(got)["contact"].(map[string]any); c["email"] != "security@contoso.example" || c["name"] != "Security" {
		t.Fatalf("contact after change = %v", c)
	}
	a.op("PATCH", "/mgmt/resources/contoso-eu", map[string]any{"properties": map[string]any{"contact": map[string]any{"name": "Sec"}}}, http.StatusOK)
	got = a.op("GET", "/mgmt/resources/contoso-eu", nil, http.StatusOK)
	if c := props(got)["contact"].(map[string]any); c["email"] != "security@contoso.example" || c["name"] != "Sec" {
		t.Fatalf("PATCH did not merge: %v", c)
	}
	if r := a.op("PUT", "/mgmt/resources/contoso-eu", resourceBody("us"), http.StatusConflict); r.errParam() != "location" {
		t.Fatalf("moving a resource: %s", r.raw)
	}
	a.op("PUT", "/mgmt/resources/fabrikam-us", resourceBody("us"), http.StatusCreated)
	list := a.op("GET", "/mgmt/resources", nil, http.StatusOK)
	if v := list.body["value"].([]any); len(v) != 2 || v[0].(map[string]any)["name"] != "contoso-eu" || v[1].(map[string]any)["location"] != "us" {
		t.Fatalf("list = %s", list.raw)
	}

	// Deleting a resource takes what it owns with it.
	a.op("PUT", "/mgmt/resources/contoso-eu/deployments/chat", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
	keys := a.op("POST", "/mgmt/resources/contoso-eu/listKeys", nil, http.StatusOK)
	key1, _ := keys.body["key1"].(string)
	a.op("DELETE", "/mgmt/resources/contoso-eu", nil, http.StatusNoContent)
	a.op("GET", "/mgmt/resources/contoso-eu", nil, http.StatusNotFound)
	a.op("DELETE", "/mgmt/resources/contoso-eu", nil, http.StatusNotFound)
	if r := a.do("GET", "/mgmt/resources/contoso-eu", key1, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("key of a deleted resource: %d", r.status)
	}
	// Recreated under the same name, it starts empty.
	a.op("PUT", "/mgmt/resources/contoso-eu", resourceBody("eu"), http.StatusCreated)
	if v := a.op("GET", "/mgmt/resources/contoso-eu/deployments", nil, http.StatusOK).body["value"].([]any); len(v) != 0 {
		t.Fatalf("deployments survived deletion: %v", v)
	}
}

func TestBadInputIsOpenAIShapedAndNamesTheField(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/blocklists/names", map[string]any{"properties": map[string]any{
		"blocklistItems": []any{map[string]any{"pattern": "x"}}}}, http.StatusCreated)
	huge := `{"location":"eu","properties":{"contact":{"name":"` + strings.Repeat("x", 5<<20) + `"}}}`
	cases := []struct {
		name, method, path string
		body               any
		status             int
		param              string
	}{
		{"unknown geography", "PUT", "/mgmt/resources/r1", resourceBody("mars"), 400, "location"},
		{"geography not served", "PUT", "/mgmt/resources/r1", resourceBody("jp"), 400, "location"},
		{"missing location", "PUT", "/mgmt/resources/r1", map[string]any{}, 400, "location"},
		{"malformed JSON", "PUT", "/mgmt/resources/r1", `{"location": "eu",`, 400, "body"},
		{"empty body", "PUT", "/mgmt/resources/r1", "", 400, "body"},
		{"oversized body", "PUT", "/mgmt/resources/r1", huge, 413, "body"},
		{"wrong type", "PUT", "/mgmt/resources/r1", `{"location": 7}`, 400, "location"},
		{"unknown field", "PUT", "/mgmt/resources/r1", `{"location":"eu","properties":{"abuseMonitoring":{"loging":false}}}`, 400, "properties.abuseMonitoring.loging"},
		{"bad email", "PUT", "/mgmt/resources/r1", `{"location":"eu","properties":{"contact":{"email":"not an address"}}}`, 400, "properties.contact.email"},
		{"bad resource name", "PUT", "/mgmt/resources/-bad-", resourceBody("eu"), 400, "name"},
		{"name mismatch", "PUT", "/mgmt/resources/r1", `{"name":"r2","location":"eu"}`, 400, "name"},
		{"unknown model", "PUT", "/mgmt/resources/acme/deployments/d", deploymentBody("gpt-9", "Standard"), 400, "properties.model.name"},
		{"wrong model version", "PUT", "/mgmt/resources/acme/deployments/d", `{"sku":{"name":"Standard"},"properties":{"model":{"name":"terroir-ngram","version":"7"}}}`, 400, "properties.model.version"},
		{"missing sku", "PUT", "/mgmt/resources/acme/deployments/d", `{"properties":{"model":{"name":"terroir-ngram"}}}`, 400, "sku.name"},
		{"unknown sku", "PUT", "/mgmt/resources/acme/deployments/d", deploymentBody("terroir-ngram", "Cheap"), 400, "sku.name"},
		{"capacity type", "PUT", "/mgmt/resources/acme/deployments/d", `{"sku":{"name":"Standard","capacity":"lots"},"properties":{"model":{"name":"terroir-ngram"}}}`, 400, "sku.capacity"},
		{"capacity range", "PUT", "/mgmt/resources/acme/deployments/d", `{"sku":{"name":"Standard","capacity":0},"properties":{"model":{"name":"terroir-ngram"}}}`, 400, "sku.capacity"},
		{"unknown filter policy", "PUT", "/mgmt/resources/acme/deployments/d", `{"sku":{"name":"Standard"},"properties":{"model":{"name":"terroir-ngram"},"raiPolicyName":"nope"}}`, 400, "properties.raiPolicyName"},
		{"unknown category", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"rudeness","source":"Prompt","severityThreshold":"Low"}]}}`, 400, "properties.contentFilters[0].name"},
		{"bad threshold", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"hate","source":"Prompt","severityThreshold":"Extreme"}]}}`, 400, "properties.contentFilters[0].severityThreshold"},
		{"bad source", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"hate","source":"Both","severityThreshold":"Low"}]}}`, 400, "properties.contentFilters[0].source"},
		{"jailbreak on completions", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"jailbreak","source":"Completion"}]}}`, 400, "properties.contentFilters[0].source"},
		{"unknown guard failure mode", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"guard_model","source":"Prompt","failureMode":"Sometimes"}]}}`, 400, "properties.contentFilters[0].failureMode"},
		{"failure mode on a category", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"hate","source":"Prompt","severityThreshold":"Low"},{"name":"violence","source":"Prompt","severityThreshold":"Low","failureMode":"Closed"}]}}`, 400, "properties.contentFilters[1].failureMode"},
		{"guard filter without source", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"guard_model","failureMode":"Closed"}]}}`, 400, "properties.contentFilters[0].source"},
		{"guard filter twice", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"contentFilters":[{"name":"guard_model","source":"Prompt"},{"name":"guard","source":"prompt"}]}}`, 400, "properties.contentFilters[1]"},
		{"unknown blocklist", "PUT", "/mgmt/resources/acme/contentFilterPolicies/p", `{"properties":{"customBlocklists":[{"blocklistName":"ghost","source":"Prompt"}]}}`, 400, "properties.customBlocklists[0].blocklistName"},
		{"default policy is read-only", "PUT", "/mgmt/resources/acme/contentFilterPolicies/default", `{}`, 400, "name"},
		{"bad regex", "PUT", "/mgmt/resources/acme/blocklists/b", `{"properties":{"blocklistItems":[{"pattern":"ok"},{"pattern":"(unclosed","isRegex":true}]}}`, 400, "properties.blocklistItems[1].pattern"},
		{"blank pattern", "PUT", "/mgmt/resources/acme/blocklists/b", `{"properties":{"blocklistItems":[{"pattern":"  "}]}}`, 400, "properties.blocklistItems[0].pattern"},
		{"unknown policy sku", "PUT", "/mgmt/policies/p", `{"properties":{"assignedTo":["*"],"rules":{"allowedSkus":["Standard","Gold"]}}}`, 400, "properties.rules.allowedSkus[1]"},
		{"bad assignment", "PUT", "/mgmt/policies/p", `{"properties":{"assignedTo":["no spaces allowed"]}}`, 400, "properties.assignedTo[0]"},
		{"bad key name", "POST", "/mgmt/resources/acme/regenerateKey", `{"keyName":"key3"}`, 400, "keyName"},
		{"bad audit limit", "GET", "/mgmt/audit?limit=lots", nil, 400, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := client{t: t, base: a.base}
			r := a.do(c.method, c.path, operatorToken, c.body)
			if r.status != c.status || r.errParam() != c.param || r.errMessage() == "" || r.errField("type") == nil {
				t.Fatalf("%s %s = %d %s; want %d with param %q", c.method, c.path, r.status, r.raw, c.status, c.param)
			}
		})
	}
	// Nothing of the refused writes was applied.
	a.op("GET", "/mgmt/resources/r1", nil, http.StatusNotFound)
	a.op("GET", "/mgmt/resources/acme/deployments/d", nil, http.StatusNotFound)
	a.op("GET", "/mgmt/resources/acme/contentFilterPolicies/p", nil, http.StatusNotFound)
	a.op("GET", "/mgmt/policies/p", nil, http.StatusNotFound)
	if r := a.op("PUT", "/mgmt/resources/acme", `{}`, http.StatusOK); r.body["location"] != "eu" {
		t.Fatalf("PUT {} on an existing resource: %s", r.raw)
	}
	if r := a.do("POST", "/mgmt/resources/acme", operatorToken, nil); r.status != http.StatusMethodNotAllowed || r.errCode() != "method_not_allowed" {
		t.Fatalf("POST on a resource = %d %s", r.status, r.raw)
	}
	if r := a.do("GET", "/mgmt/nothing-here", operatorToken, nil); r.status != http.StatusNotFound || r.errMessage() == "" {
		t.Fatalf("unknown path = %d %s", r.status, r.raw)
	}
}

func TestAppKeysReadOnlyTheirOwnResource(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/globex", resourceBody("us"), http.StatusCreated)
	keys := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK)
	key1, _ := keys.body["key1"].(string)
	key2, _ := keys.body["key2"].(string)
	if len(key1) != 32 || len(key2) != 32 || key1 == key2 {
		t.Fatalf("listKeys = %s", keys.raw)
	}
	// Only hashes are kept: a second listKeys cannot show the keys again.
	if again := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK); again.body["key1"] != nil || again.body["key2"] != nil {
		t.Fatalf("listKeys showed keys twice: %s", again.raw)
	}
	own := a.do("GET", "/mgmt/resources/acme", key1, nil)
	if own.status != http.StatusOK || own.body["name"] != "acme" {
		t.Fatalf("own resource with app key = %d %s", own.status, own.raw)
	}
	req, _ := http.NewRequest("GET", a.base+"/mgmt/resources/acme", nil)
	req.Header.Set("api-key", key2)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("api-key header: %v %v", resp, err)
	}
	other := a.do("GET", "/mgmt/resources/globex", key1, nil)
	missing := a.do("GET", "/mgmt/resources/nobody", key1, nil)
	if other.status != http.StatusNotFound || other.errCode() != "ResourceNotFound" || missing.status != http.StatusNotFound {
		t.Fatalf("another resource with app key = %d %s", other.status, other.raw)
	}
	if strings.Replace(string(other.raw), "globex", "nobody", 1) != string(missing.raw) {
		t.Fatalf("an existing and a missing resource answer differently: %s vs %s", other.raw, missing.raw)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/mgmt/resources"}, {"PUT", "/mgmt/resources/acme"}, {"PATCH", "/mgmt/resources/acme"},
		{"DELETE", "/mgmt/resources/acme"}, {"POST", "/mgmt/resources/acme/listKeys"},
		{"POST", "/mgmt/resources/acme/regenerateKey"}, {"GET", "/mgmt/resources/acme/deployments"},
		{"PUT", "/mgmt/resources/acme/deployments/d"}, {"GET", "/mgmt/catalog"}, {"GET", "/mgmt/policies"},
		{"PUT", "/mgmt/policies/p"}, {"GET", "/mgmt/resources/acme/contentFilterPolicies"},
		{"PUT", "/mgmt/resources/acme/blocklists/b"}, {"GET", "/mgmt/audit"},
	} {
		if r := a.do(c.method, c.path, key1, `{}`); r.status != http.StatusForbidden || r.errCode() != "OperatorTokenRequired" {
			t.Errorf("%s %s with an app key = %d %s", c.method, c.path, r.status, r.raw)
		}
	}
	if r := a.do("GET", "/mgmt/resources", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("no credentials = %d", r.status)
	}
	if r := a.do("GET", "/mgmt/resources/acme", "0123456789abcdef0123456789abcdef", nil); r.status != http.StatusUnauthorized || r.errField("type") != "authentication_error" {
		t.Errorf("unknown key = %d %s", r.status, r.raw)
	}
	a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK)
}

func TestRegeneratedKeyIsRefusedAtOnceEverywhere(t *testing.T) {
	t.Parallel()
	a, s := startIngress(t)
	b := startAnother(t, s)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	keys := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK)
	old1, key2 := keys.body["key1"].(string), keys.body["key2"].(string)
	waitFor(t, time.Second, "the second instance accepts key1", func() bool {
		return b.do("GET", "/mgmt/resources/acme", old1, nil).status == http.StatusOK
	})
	regen := a.op("POST", "/mgmt/resources/acme/regenerateKey", map[string]string{"keyName": "key1"}, http.StatusOK)
	new1, _ := regen.body["key1"].(string)
	if len(new1) != 32 || new1 == old1 || regen.body["key2"] != nil {
		t.Fatalf("regenerateKey = %s", regen.raw)
	}
	// The instance that regenerated refuses the old key on the very next call.
	if r := a.do("GET", "/mgmt/resources/acme", old1, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("old key1 after regeneration = %d", r.status)
	}
	took := waitFor(t, time.Second, "the second instance refuses the old key1", func() bool {
		return b.do("GET", "/mgmt/resources/acme", old1, nil).status == http.StatusUnauthorized
	})
	t.Logf("old key refused by the second instance %v after regeneration", took)
	for _, c := range []client{a, b} {
		if r := c.do("GET", "/mgmt/resources/acme", new1, nil); r.status != http.StatusOK {
			t.Errorf("new key1 = %d", r.status)
		}
		if r := c.do("GET", "/mgmt/resources/acme", key2, nil); r.status != http.StatusOK {
			t.Errorf("untouched key2 = %d", r.status)
		}
	}
}

// TestRegenerateThenUseWhateverTheClocks: the key slot was last written
// by an instance whose clock runs an hour ahead; a key regenerated here
// afterwards still replaces it, and works on the very next call.
func TestRegenerateThenUseWhateverTheClocks(t *testing.T) {
	t.Parallel()
	a, s := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK)

	ahead := time.Now().UTC().Add(time.Hour)
	const fast = "fa57c10cfa57c10cfa57c10cfa57c10c"
	spec, err := json.Marshal(control.APIKey{Name: "key1", Hash: control.HashAPIKey(fast), CreatedAt: ahead})
	if err != nil {
		t.Fatal(err)
	}
	ch := events.ControlChange{Kind: events.ControlAPIKey, Resource: "acme", ID: "key1", Actor: "operator", At: ahead, Spec: spec}
	b := busOf(t, s, "ingress-fast-clock")
	if err := b.Publish(t.Context(), "eu", bus.StreamControl, bus.Meta{Key: control.KeyOf(ch), Resource: "acme"}, ch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the fast-clocked key works", func() bool {
		return a.do("GET", "/mgmt/resources/acme", fast, nil).status == http.StatusOK
	})

	for i := range 3 {
		regen := a.op("POST", "/mgmt/resources/acme/regenerateKey", map[string]string{"keyName": "key1"}, http.StatusOK)
		key1, _ := regen.body["key1"].(string)
		if r := a.do("GET", "/mgmt/resources/acme", key1, nil); r.status != http.StatusOK {
			t.Fatalf("regeneration %d: the key just handed out = %d %s", i, r.status, r.raw)
		}
		if r := a.do("GET", "/mgmt/resources/acme", fast, nil); r.status != http.StatusUnauthorized {
			t.Fatalf("regeneration %d: the replaced key = %d", i, r.status)
		}
	}
}

func TestContentLoggingCapability(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	hasCap := func(r reply) bool {
		found := false
		for _, c := range capabilities(r) {
			if c.(map[string]any)["name"] == "ContentLogging" {
				if c.(map[string]any)["value"] != "false" || found {
					t.Fatalf("ContentLogging capability malformed: %s", r.raw)
				}
				found = true
			}
		}
		return found
	}
	if hasCap(a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK)) {
		t.Fatal("ContentLogging capability shown while content logging is on")
	}
	off := map[string]any{"properties": map[string]any{"abuseMonitoring": map[string]any{"contentLogging": false}}}
	r := a.op("PATCH", "/mgmt/resources/acme", off, http.StatusConflict)
	if r.errCode() != "ContentLoggingOptOutNotApproved" || r.errParam() != "properties.abuseMonitoring.contentLogging" || !strings.Contains(r.errMessage(), "optOutApproved") {
		t.Fatalf("opt-out without approval: %s", r.raw)
	}
	// A new resource cannot start with logging off unless approved in the same request.
	create := resourceBody("eu")
	create["properties"].(map[string]any)["abuseMonitoring"] = map[string]any{"contentLogging": false}
	a.op("PUT", "/mgmt/resources/acme2", create, http.StatusConflict)
	if hasCap(a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK)) {
		t.Fatal("refused opt-out was applied")
	}
	a.op("PATCH", "/mgmt/resources/acme", map[string]any{"properties": map[string]any{"abuseMonitoring": map[string]any{"optOutApproved": true}}}, http.StatusOK)
	if hasCap(a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK)) {
		t.Fatal("approval alone turned content logging off")
	}
	if r := a.op("PATCH", "/mgmt/resources/acme", off, http.StatusOK); !hasCap(r) {
		t.Fatalf("content logging off, capability absent: %s", r.raw)
	}
	// The customer can check it with its own key.
	key1 := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK).body["key1"].(string)
	if r := a.do("GET", "/mgmt/resources/acme", key1, nil); r.status != http.StatusOK || !hasCap(r) {
		t.Fatalf("customer's view: %d %s", r.status, r.raw)
	}
	// Withdrawing the approval while logging is off is refused.
	a.op("PATCH", "/mgmt/resources/acme", map[string]any{"properties": map[string]any{"abuseMonitoring": map[string]any{"optOutApproved": false}}}, http.StatusConflict)
	on := map[string]any{"properties": map[string]any{"abuseMonitoring": map[string]any{"contentLogging": true}}}
	if r := a.op("PATCH", "/mgmt/resources/acme", on, http.StatusOK); hasCap(r) {
		t.Fatalf("content logging back on, capability still shown: %s", r.raw)
	}
}

func TestDeploymentsAndDeploymentPolicy(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	d := a.op("PUT", "/mgmt/resources/acme/deployments/chat", deploymentBody("terroir-ngram", "GlobalStandard"), http.StatusCreated)
	if d.body["name"] != "chat" || d.body["sku"].(map[string]any)["name"] != "GlobalStandard" || d.body["sku"].(map[string]any)["capacity"] != 10.0 ||
		props(d)["raiPolicyName"] != "default" || props(d)["provisioningState"] != "Succeeded" ||
		props(d)["model"].(map[string]any)["name"] != "terroir-ngram" || props(d)["model"].(map[string]any)["version"] != "1" {
		t.Fatalf("deployment = %s", d.raw)
	}
	if got := a.op("GET", "/mgmt/resources/acme/deployments/chat", nil, http.StatusOK); !bytes.Equal(got.raw, d.raw) {
		t.Fatalf("GET differs from PUT: %s", got.raw)
	}
	changed := deploymentBody("terroir-ngram", "Standard")
	changed["sku"].(map[string]any)["capacity"] = 50
	if r := a.op("PUT", "/mgmt/resources/acme/deployments/chat", changed, http.StatusOK); r.body["sku"].(map[string]any)["capacity"] != 50.0 {
		t.Fatalf("changed deployment = %s", r.raw)
	}
	a.op("PUT", "/mgmt/resources/acme/deployments/embed", deploymentBody("terroir-embed", "DataZoneStandard"), http.StatusCreated)
	if v := a.op("GET", "/mgmt/resources/acme/deployments", nil, http.StatusOK).body["value"].([]any); len(v) != 2 {
		t.Fatalf("list = %v", v)
	}

	// A residency policy: no Global SKUs, curated models only.
	policy := map[string]any{"properties": map[string]any{
		"description": "EU residency", "assignedTo": []string{"acme"},
		"rules": map[string]any{"allowedSkus": []string{"Standard", "DataZoneStandard", "DataZoneBatch"}, "curatedOnly": true},
	}}
	p := a.op("PUT", "/mgmt/policies/eu-residency", policy, http.StatusCreated)
	if props(p)["rules"].(map[string]any)["curatedOnly"] != true {
		t.Fatalf("policy = %s", p.raw)
	}
	if r := a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK); fmt.Sprint(props(r)["deploymentPolicies"]) != "[eu-residency]" {
		t.Fatalf("resource does not show its policy: %s", r.raw)
	}
	r := a.op("PUT", "/mgmt/resources/acme/deployments/global", deploymentBody("terroir-ngram", "GlobalStandard"), http.StatusForbidden)
	if r.errCode() != "RequestDisallowedByPolicy" || !strings.Contains(r.errMessage(), `"eu-residency"`) || !strings.Contains(r.errMessage(), "allowedSkus") || !strings.Contains(r.errMessage(), "GlobalStandard") {
		t.Fatalf("Global deployment under a residency policy: %s", r.raw)
	}
	r = a.op("PUT", "/mgmt/resources/acme/deployments/llama", deploymentBody("llama-3.1-8b-instruct", "Standard"), http.StatusForbidden)
	if !strings.Contains(r.errMessage(), "curatedOnly") {
		t.Fatalf("uncurated model: %s", r.raw)
	}
	// Changing an existing deployment is evaluated too.
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", deploymentBody("terroir-ngram", "GlobalStandard"), http.StatusForbidden)
	a.op("PUT", "/mgmt/resources/acme/deployments/chat2", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
	// Another resource is not bound by the policy.
	a.op("PUT", "/mgmt/resources/globex", resourceBody("us"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/globex/deployments/global", deploymentBody("terroir-ngram", "GlobalStandard"), http.StatusCreated)

	// An org-wide publisher rule, and what it would refuse today.
	a.op("PUT", "/mgmt/policies/publishers", map[string]any{"properties": map[string]any{"assignedTo": []string{"*"},
		"rules": map[string]any{"allowedPublishers": []string{"Meta"}}}}, http.StatusCreated)
	r = a.op("PUT", "/mgmt/resources/globex/deployments/more", deploymentBody("terroir-ngram", "Standard"), http.StatusForbidden)
	if !strings.Contains(r.errMessage(), `"publishers"`) || !strings.Contains(r.errMessage(), "allowedPublishers") {
		t.Fatalf("publisher rule: %s", r.raw)
	}
	nc := a.op("GET", "/mgmt/policies/publishers", nil, http.StatusOK)
	if fmt.Sprint(props(nc)["nonCompliantDeployments"]) != "[acme/chat acme/chat2 acme/embed globex/global]" {
		t.Fatalf("non-compliant deployments: %s", nc.raw)
	}
	if v := a.op("GET", "/mgmt/policies", nil, http.StatusOK).body["value"].([]any); len(v) != 2 {
		t.Fatalf("policies = %v", v)
	}
	a.op("DELETE", "/mgmt/policies/publishers", nil, http.StatusNoContent)
	a.op("GET", "/mgmt/policies/publishers", nil, http.StatusNotFound)
	a.op("PUT", "/mgmt/resources/globex/deployments/more", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)

	a.op("DELETE", "/mgmt/resources/acme/deployments/embed", nil, http.StatusNoContent)
	a.op("GET", "/mgmt/resources/acme/deployments/embed", nil, http.StatusNotFound)
	a.op("DELETE", "/mgmt/resources/acme/deployments/embed", nil, http.StatusNotFound)
	a.op("GET", "/mgmt/resources/nobody/deployments", nil, http.StatusNotFound)

	cat := a.op("GET", "/mgmt/catalog", nil, http.StatusOK)
	data := cat.body["data"].([]any)
	if len(data) < 2 || data[0].(map[string]any)["id"] != "terroir-ngram" || data[0].(map[string]any)["backend"].(map[string]any)["builtin"] != true {
		t.Fatalf("catalog = %s", cat.raw)
	}
}

func TestContentFilterPoliciesAndBlocklists(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	def := a.op("GET", "/mgmt/resources/acme/contentFilterPolicies/default", nil, http.StatusOK)
	guards := 0
	for _, f := range props(def)["contentFilters"].([]any) {
		f := f.(map[string]any)
		switch f["name"] {
		case "jailbreak", "profanity":
		case "guard_model":
			// the guard model rates both directions where one is
			// configured, and its failure lets the rules decide alone
			guards++
			if f["enabled"] != true || f["blocking"] != true || f["failureMode"] != "Open" {
				t.Fatalf("default policy's guard filter = %v", f)
			}
		default:
			if f["severityThreshold"] != "Medium" || f["blocking"] != true {
				t.Fatalf("default policy does not block medium and above: %s", def.raw)
			}
			if _, ok := f["failureMode"]; ok {
				t.Fatalf("a category filter has a failure mode: %v", f)
			}
		}
	}
	if guards != 2 {
		t.Fatalf("default policy has %d guard filters, want one per source: %s", guards, def.raw)
	}
	bl := a.op("PUT", "/mgmt/resources/acme/blocklists/competitors", map[string]any{"properties": map[string]any{
		"description": "names we do not discuss",
		"blocklistItems": []any{
			map[string]any{"pattern": "Initech"},
			map[string]any{"blocklistItemId": "codes", "pattern": `project-\d{4}`, "isRegex": true},
		}}}, http.StatusCreated)
	items := props(bl)["blocklistItems"].([]any)
	if len(items) != 2 || items[0].(map[string]any)["blocklistItemId"] != "item-1" || items[1].(map[string]any)["isRegex"] != true {
		t.Fatalf("blocklist = %s", bl.raw)
	}
	if got := a.op("GET", "/mgmt/resources/acme/blocklists/competitors", nil, http.StatusOK); !bytes.Equal(got.raw, bl.raw) {
		t.Fatalf("GET differs: %s", got.raw)
	}
	strict := map[string]any{"properties": map[string]any{
		"contentFilters": []any{
			map[string]any{"name": "Hate", "source": "Prompt", "severityThreshold": "Low", "blocking": true, "enabled": true},
			map[string]any{"name": "selfharm", "source": "Completion", "severityThreshold": "High"},
			map[string]any{"name": "violence", "source": "Completion", "enabled": false},
			map[string]any{"name": "jailbreak", "source": "Prompt", "blocking": false},
			map[string]any{"name": "profanity", "source": "Completion"},
			map[string]any{"name": "guard_model", "source": "Prompt", "failureMode": "closed"},
			map[string]any{"name": "Guard-Model", "source": "Completion", "enabled": false},
		},
		"customBlocklists": []any{map[string]any{"blocklistName": "competitors", "source": "Prompt"}},
	}}
	p := a.op("PUT", "/mgmt/resources/acme/contentFilterPolicies/strict", strict, http.StatusCreated)
	want := map[string]string{
		"hate/Prompt": "Low/true", "sexual/Prompt": "Medium/true", "self_harm/Completion": "High/true",
		"violence/Completion": "/false", "jailbreak/Prompt": "/false", "profanity/Completion": "/true", "profanity/Prompt": "/false",
		"guard_model/Prompt": "Closed/true", "guard_model/Completion": "Open/false",
	}
	for _, f := range props(p)["contentFilters"].([]any) {
		f := f.(map[string]any)
		k := fmt.Sprint(f["name"], "/", f["source"])
		threshold, _ := f["severityThreshold"].(string)
		if f["name"] == "guard_model" {
			threshold, _ = f["failureMode"].(string)
		}
		if w, ok := want[k]; ok && fmt.Sprint(threshold, "/", f["blocking"]) != w {
			t.Errorf("%s = %s/%v, want %s", k, threshold, f["blocking"], w)
		}
		delete(want, k)
	}
	for k := range want {
		if strings.HasPrefix(k, "guard_model/") {
			t.Errorf("the policy shows no %s filter", k)
		}
	}
	if bls := props(p)["customBlocklists"].([]any); len(bls) != 1 || bls[0].(map[string]any)["blocklistName"] != "competitors" {
		t.Fatalf("customBlocklists = %v", bls)
	}
	if v := a.op("GET", "/mgmt/resources/acme/contentFilterPolicies", nil, http.StatusOK).body["value"].([]any); len(v) != 2 || v[0].(map[string]any)["name"] != "default" {
		t.Fatalf("policies = %v", v)
	}
	dep := deploymentBody("terroir-ngram", "Standard")
	dep["properties"].(map[string]any)["raiPolicyName"] = "strict"
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", dep, http.StatusCreated)

	// What is in use cannot be deleted.
	if r := a.op("DELETE", "/mgmt/resources/acme/blocklists/competitors", nil, http.StatusConflict); !strings.Contains(r.errMessage(), "strict") {
		t.Fatalf("deleting a blocklist in use: %s", r.raw)
	}
	if r := a.op("DELETE", "/mgmt/resources/acme/contentFilterPolicies/strict", nil, http.StatusConflict); !strings.Contains(r.errMessage(), "chat") {
		t.Fatalf("deleting a policy in use: %s", r.raw)
	}
	a.op("DELETE", "/mgmt/resources/acme/contentFilterPolicies/default", nil, http.StatusBadRequest)
	a.op("DELETE", "/mgmt/resources/acme/deployments/chat", nil, http.StatusNoContent)
	a.op("DELETE", "/mgmt/resources/acme/contentFilterPolicies/strict", nil, http.StatusNoContent)
	a.op("DELETE", "/mgmt/resources/acme/blocklists/competitors", nil, http.StatusNoContent)
	a.op("GET", "/mgmt/resources/acme/blocklists/competitors", nil, http.StatusNotFound)
	if v := a.op("GET", "/mgmt/resources/acme/blocklists", nil, http.StatusOK).body["value"].([]any); len(v) != 0 {
		t.Fatalf("blocklists = %v", v)
	}
}

func TestAuditRecordsWhoWhatWhenNeverSecrets(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	before := time.Now().UTC().Add(-time.Second)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PATCH", "/mgmt/resources/acme", map[string]any{"properties": map[string]any{"contact": map[string]any{"email": "new@contoso.example"}}}, http.StatusOK)
	keys := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK)
	regen := a.op("POST", "/mgmt/resources/acme/regenerateKey", map[string]string{"keyName": "key2"}, http.StatusOK)
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
	a.op("PUT", "/mgmt/policies/all", map[string]any{"properties": map[string]any{"assignedTo": []string{"*"}}}, http.StatusCreated)
	a.op("PUT", "/mgmt/resources/other", resourceBody("us"), http.StatusCreated)

	trail := a.op("GET", "/mgmt/audit?resource=acme", nil, http.StatusOK)
	var got []string
	for _, e := range trail.body["value"].([]any) {
		e := e.(map[string]any)
		at, err := time.Parse(time.RFC3339Nano, e["at"].(string))
		if e["actor"] != "operator" || err != nil || at.Before(before) || e["requestId"] == "" || e["resource"] != "acme" {
			t.Errorf("audit entry lacks who or when: %v", e)
		}
		got = append(got, fmt.Sprint(e["action"], " ", e["kind"], " ", e["object"], " ", e["fields"]))
	}
	wantOrder := []string{
		"create deployment chat <nil>", "regenerate_key api_key key2 <nil>", "list_keys api_key key2 <nil>",
		"list_keys api_key key1 <nil>", "update resource acme [contact]", "create resource acme <nil>",
	}
	if fmt.Sprint(got) != fmt.Sprint(wantOrder) {
		t.Fatalf("audit trail of acme, newest first:\n got %q\nwant %q", got, wantOrder)
	}
	all := a.op("GET", "/mgmt/audit?limit=3", nil, http.StatusOK)
	if v := all.body["value"].([]any); len(v) != 3 || v[0].(map[string]any)["object"] != "other" || v[1].(map[string]any)["kind"] != "deployment_policy" {
		t.Fatalf("whole trail, limited: %s", all.raw)
	}
	for _, k := range []any{keys.body["key1"], keys.body["key2"], regen.body["key2"]} {
		if strings.Contains(string(trail.raw), k.(string)) {
			t.Fatal("an API key appears in the audit trail")
		}
	}
}

// waitFor polls cond until it holds or within passes, and returns how
// long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	return time.Since(start)
}

func drops(r reply) map[string]any { d, _ := props(r)["batchDrops"].(map[string]any); return d }

func TestBatchDropsLocation(t *testing.T) {
	t.Parallel()
	a, _ := startIngress(t)
	r := a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	if d := drops(r); d["enabled"] != true || d["location"] != "acme/" {
		t.Fatalf("default batchDrops = %s", r.raw)
	}
	withDrops := func(d map[string]any) map[string]any {
		b := resourceBody("us")
		b["properties"].(map[string]any)["batchDrops"] = d
		return b
	}
	for _, loc := range []any{"acme/sub", "ACME", "../acme", "/abs", "a/../b", "a//b", `a\b`, "", 7, "x/inbox"} {
		r := a.do("PUT", "/mgmt/resources/globex", operatorToken, withDrops(map[string]any{"enabled": true, "location": loc}))
		if r.status != http.StatusBadRequest || r.errParam() != "properties.batchDrops.location" {
			t.Errorf("location %q: %d %s", loc, r.status, r.raw)
		}
	}
	r = a.op("PUT", "/mgmt/resources/globex", withDrops(map[string]any{"enabled": false, "location": "teams/globex"}), http.StatusCreated)
	if d := drops(r); d["enabled"] != false || d["location"] != "teams/globex/" {
		t.Fatalf("batchDrops set = %s", r.raw)
	}
	got := a.op("GET", "/mgmt/resources/globex", nil, http.StatusOK)
	if !bytes.Equal(got.raw, r.raw) {
		t.Fatalf("GET after PUT differs:\n%s\n%s", got.raw, r.raw)
	}
	a.op("PUT", "/mgmt/resources/globex", string(got.raw), http.StatusOK) // sent back unchanged
	// PATCH changes one field and keeps the other.
	r = a.op("PATCH", "/mgmt/resources/globex", map[string]any{"properties": map[string]any{"batchDrops": map[string]any{"enabled": true}}}, http.StatusOK)
	if d := drops(r); d["enabled"] != true || d["location"] != "teams/globex/" {
		t.Fatalf("PATCH enabled: %s", r.raw)
	}
	// A location can be neither inside nor around another resource's,
	// nor can a new resource's default location be.
	if r := a.do("PATCH", "/mgmt/resources/acme", operatorToken, map[string]any{"properties": map[string]any{"batchDrops": map[string]any{"location": "teams/"}}}); r.status != http.StatusBadRequest || r.errParam() != "properties.batchDrops.location" {
		t.Fatalf("a location around another's: %d %s", r.status, r.raw)
	}
	if r := a.do("PUT", "/mgmt/resources/teams", operatorToken, resourceBody("eu")); r.status != http.StatusBadRequest || r.errParam() != "properties.batchDrops.location" {
		t.Fatalf("a default location around another's: %d %s", r.status, r.raw)
	}
	a.op("PATCH", "/mgmt/resources/acme", map[string]any{"properties": map[string]any{"batchDrops": map[string]any{"location": "teams/acme/"}}}, http.StatusOK)
	// Its own location again is no overlap.
	a.op("PUT", "/mgmt/resources/acme", string(a.op("GET", "/mgmt/resources/acme", nil, http.StatusOK).raw), http.StatusOK)
	// A deleted resource's location is free again.
	a.op("DELETE", "/mgmt/resources/globex", nil, http.StatusNoContent)
	a.op("PUT", "/mgmt/resources/other", withDrops(map[string]any{"enabled": true, "location": "teams/globex/"}), http.StatusCreated)
}
