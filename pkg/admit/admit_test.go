package admit_test

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/route"
)

// refusal returns err as a *Refusal, failing the test when it is not one.
func refusal(t *testing.T, err error) *admit.Refusal {
	t.Helper()
	r, ok := errors.AsType[*admit.Refusal](err)
	if !ok {
		t.Fatalf("err = %T %v, want *admit.Refusal", err, err)
	}
	return r
}

// TestParse: a body is decoded strictly and validated; a refusal is a 400
// naming the parameter at fault; an accepted one carries what admission
// and the reply need.
func TestParse(t *testing.T) {
	t.Parallel()
	const chat = events.OperationChatCompletions
	cases := []struct {
		name  string
		op    events.Operation
		body  string
		want  admit.Request // when param is ""
		param string        // the refusal's param, "" for an accepted body
	}{
		{"chat", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"n":2,"max_tokens":10}`,
			admit.Request{Model: "d", Stream: true, Choices: 2, UsageTail: true, Limit: 10, LimitParam: "max_tokens", Estimate: 133/4 + 20}, ""},
		{"chat without a limit assumes 256", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}]}`,
			admit.Request{Model: "d", Choices: 1, Estimate: 56/4 + 256}, ""},
		{"max_completion_tokens", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5}`,
			admit.Request{Model: "d", Choices: 1, Limit: 5, LimitParam: "max_completion_tokens", Estimate: 83/4 + 5}, ""},
		{"completions best_of", events.OperationCompletions, `{"model":"d","prompt":"12345678","max_tokens":7,"best_of":3}`,
			admit.Request{Model: "d", Choices: 1, Limit: 7, LimitParam: "max_tokens", Estimate: 2 + 21}, ""},
		{"huge max_tokens saturates", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775807}`,
			admit.Request{Model: "d", Choices: 1, Limit: math.MaxInt, LimitParam: "max_tokens", Estimate: math.MaxInt}, ""},
		{"embeddings", events.OperationEmbeddings, `{"model":"e","input":"12345678"}`, admit.Request{Model: "e", Choices: 1, Estimate: 2}, ""},
		{"no model is not Parse's refusal", events.OperationEmbeddings, `{"input":"x"}`, admit.Request{Choices: 1}, ""},
		{"empty", chat, ` `, admit.Request{}, "body"},
		{"malformed", chat, `{"model":`, admit.Request{}, "body"},
		{"unknown field", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"temprature":1}`, admit.Request{}, "temprature"},
		{"unknown nested field", chat, `{"model":"d","messages":[{"role":"user","content":"hi","nam":"x"}]}`, admit.Request{}, "messages[0].nam"},
		{"wrong type", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"n":"two"}`, admit.Request{}, "n"},
		{"n over 128", chat, `{"model":"d","messages":[{"role":"user","content":"hi"}],"n":129}`, admit.Request{}, "n"},
		{"no messages", chat, `{"model":"d"}`, admit.Request{}, "messages"},
		{"not an operation of a model request", events.Operation("files"), `{}`, admit.Request{}, "url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := admit.Parse(c.op, []byte(c.body))
			if c.param == "" {
				if err != nil || got != c.want {
					t.Fatalf("Parse = %+v, %v; want %+v", got, err, c.want)
				}
				return
			}
			r := refusal(t, err)
			if r.Status != http.StatusBadRequest || r.Type != admit.TypeInvalidRequest || r.Code != "invalid_value" || r.Param != c.param || r.Message == "" {
				t.Fatalf("refusal %+v, want a 400 invalid_value about %s", r, c.param)
			}
		})
	}
}

// admitter serves eu and us, for resource acme homed in eu with a
// deployment of every SKU of the chat model "chat" (at most 100 output
// tokens) and one of the embeddings model "emb".
func admitter(t *testing.T) (*admit.Admitter, control.Resource) {
	t.Helper()
	cat, err := catalog.Parse([]byte(`models:
  - {id: chat, version: "1", publisher: T, license: MIT, capabilities: [chat, completions], max_output_tokens: 100, backend: builtin}
  - {id: emb, version: "1", publisher: T, license: MIT, capabilities: [embeddings], backend: builtin}
`))
	if err != nil {
		t.Fatal(err)
	}
	st := control.NewState(zaptest.NewLogger(t))
	res := control.Resource{Name: "acme", Location: "eu"}
	put := func(kind events.ControlKind, resource, id string, v any) {
		spec, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		st.ApplyChange(events.ControlChange{Kind: kind, Resource: resource, ID: id, Actor: "test", At: time.Now(), Spec: spec})
	}
	put(events.ControlResource, "", res.Name, res)
	for name, d := range map[string]control.Deployment{
		"std":    {Model: "chat", SKU: events.SKUStandard},
		"global": {Model: "chat", SKU: events.SKUGlobalStandard},
		"gbatch": {Model: "chat", SKU: events.SKUGlobalBatch},
		"dzb":    {Model: "chat", SKU: events.SKUDataZoneBatch},
		"emb":    {Model: "emb", SKU: events.SKUStandard},
		"gone":   {Model: "not-in-catalog", SKU: events.SKUStandard},
	} {
		d.Name, d.Resource, d.Capacity = name, res.Name, 10
		put(events.ControlDeployment, res.Name, name, d)
	}
	return &admit.Admitter{State: st, Catalog: cat, Capacity: route.NewCapacity(nil), Geos: []string{"eu", "us"}}, res
}

// TestResolve: the deployment is found in the caller's resource only,
// must serve the operation and the output limit, and Batch deployments
// take batch lines only, while batch lines take every SKU.
func TestResolve(t *testing.T) {
	t.Parallel()
	a, res := admitter(t)
	const chat = events.OperationChatCompletions
	req := admit.Request{Choices: 1}
	limited := func(n int, param string) admit.Request { return admit.Request{Choices: 1, Limit: n, LimitParam: param} }
	cases := []struct {
		name       string
		res        control.Resource
		op         events.Operation
		deployment string
		req        admit.Request
		batch      bool
		status     int // 0: resolved
		code       string
		param      string
	}{
		{"standard", res, chat, "std", req, false, 0, "", ""},
		{"standard in a batch", res, chat, "std", req, true, 0, "", ""},
		{"global batch in a batch", res, chat, "gbatch", req, true, 0, "", ""},
		{"data zone batch in a batch", res, chat, "dzb", req, true, 0, "", ""},
		{"global batch in real time", res, chat, "gbatch", req, false, 400, "OperationNotSupported", "model"},
		{"data zone batch in real time", res, chat, "dzb", req, false, 400, "OperationNotSupported", "model"},
		{"no model", res, chat, "", req, false, 400, "invalid_value", "model"},
		{"unknown deployment", res, chat, "nope", req, false, 404, "DeploymentNotFound", ""},
		{"another resource's deployment", control.Resource{Name: "other", Location: "eu"}, chat, "std", req, false, 404, "DeploymentNotFound", ""},
		{"model lacks the capability", res, chat, "emb", req, false, 400, "OperationNotSupported", "model"},
		{"model not in the catalog", res, chat, "gone", req, true, 400, "OperationNotSupported", "model"},
		{"embeddings", res, events.OperationEmbeddings, "emb", req, false, 0, "", ""},
		{"max_tokens at the model's bound", res, chat, "std", limited(100, "max_tokens"), false, 0, "", ""},
		{"max_tokens over the model's bound", res, chat, "std", limited(101, "max_tokens"), false, 400, "invalid_value", "max_tokens"},
		{"max_completion_tokens over the bound in a batch", res, chat, "gbatch", limited(101, "max_completion_tokens"), true, 400, "invalid_value", "max_completion_tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := a.Resolve(c.res, c.op, c.deployment, c.req, c.batch)
			if c.status == 0 {
				if err != nil || got.Deployment.Name != c.deployment || got.Deployment.Resource != c.res.Name || got.Model.ID != got.Deployment.Model ||
					got.Operation != c.op || got.Request != c.req {
					t.Fatalf("Resolve = %+v, %v", got, err)
				}
				return
			}
			r := refusal(t, err)
			if r.Status != c.status || r.Code != c.code || r.Param != c.param || r.Message == "" {
				t.Fatalf("refusal %+v, want %d %s about %q", r, c.status, c.code, c.param)
			}
		})
	}
}

// TestRoute: the processing geography keeps residency; when no
// geography served here may process, the refusal is a 503 NoCapacity
// whose cause is kept for the log.
func TestRoute(t *testing.T) {
	t.Parallel()
	a, res := admitter(t)
	a.Capacity.Add(events.CapacityReport{Geo: "eu", Instance: "a", Model: "chat", TokensPerMinuteCapacity: 100, TokensPerMinuteInUse: 100, At: time.Now()})
	a.Capacity.Add(events.CapacityReport{Geo: "us", Instance: "b", Model: "chat", TokensPerMinuteCapacity: 100, At: time.Now()})
	cases := []struct {
		name       string
		res        control.Resource
		deployment string
		want       string // "" for the NoCapacity refusal
	}{
		{"standard stays home though busy", res, "std", "eu"},
		{"global goes where capacity is", res, "global", "us"},
		{"global batch goes where capacity is", res, "gbatch", "us"},
		{"data zone batch stays in the zone", res, "dzb", "eu"},
		{"home not served here", control.Resource{Name: "acme", Location: "jp"}, "std", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rv, err := a.Resolve(res, events.OperationChatCompletions, c.deployment, admit.Request{Choices: 1}, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Route(c.res, rv)
			if c.want != "" {
				if err != nil || got != c.want {
					t.Fatalf("Route = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			r := refusal(t, err)
			if r.Status != http.StatusServiceUnavailable || r.Type != admit.TypeServer || r.Code != "NoCapacity" || r.Err == nil || errors.Unwrap(err) == nil {
				t.Fatalf("refusal %+v, want a 503 NoCapacity with its cause", r)
			}
		})
	}
}
