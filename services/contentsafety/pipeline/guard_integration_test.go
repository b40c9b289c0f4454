package pipeline

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
	"github.com/terroir-ai/terroir/services/contentsafety/guard/guardtest"
)

// withGuard runs the pipeline with a guard model served by srv (the
// stand-in for Llama Guard 3 behind an OpenAI-compatible server) and the
// deployment "chat" under a policy whose guard fails as onFailure says.
func withGuard(t *testing.T, srv http.Handler, onFailure control.GuardFailure) harnessOption {
	return withGuardIn(t, "eu", srv, onFailure)
}

// withGuardIn is withGuard with the guard model serving geography geo
// only.
func withGuardIn(t *testing.T, geo string, srv http.Handler, onFailure control.GuardFailure) harnessOption {
	return func(cfg *Config, st *control.State) {
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		g, err := guard.New(guard.Config{URL: hs.URL, Model: "llama-guard-3", Timeout: 500 * time.Millisecond}, zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Guards = map[string]*guard.Guard{geo: g}
		pol := control.DefaultFilterPolicy("acme")
		pol.Name = "guarded"
		pol.Prompt.Guard.OnFailure = onFailure
		pol.Completion.Guard.OnFailure = onFailure
		for kind, v := range map[events.ControlKind]any{
			events.ControlFilterPolicy: pol,
			events.ControlDeployment:   control.Deployment{Name: "chat", Resource: "acme", Model: "scripted", SKU: "Standard", Capacity: 10, FilterPolicy: "guarded"},
		} {
			spec, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			id := "guarded"
			if kind == events.ControlDeployment {
				id = "chat"
			}
			st.ApplyChange(events.ControlChange{Kind: kind, Resource: "acme", ID: id, Actor: "test", At: time.Now(), Spec: spec})
		}
	}
}

// TestGuardModelStage: the guard model's verdict merges with the rules'
// (the stricter wins) on prompts, answers and streams, and an
// unavailable guard model lets the rules decide or blocks, as the policy
// says.
func TestGuardModelStage(t *testing.T) {
	const chat = events.OperationChatCompletions
	prompt := func(text string) string { return `{"messages":[{"role":"user","content":"` + text + `"}]}` }
	t.Run("prompt the rules pass, the guard blocks", func(t *testing.T) {
		h := newHarness(t, withGuard(t, &guardtest.Server{}, control.GuardFailOpen))
		out := h.call(chat, false, prompt("Tell me about the apples in my garden [S1]"), answer(chat, benignAnswer))
		r := out[0].(events.InferenceResult)
		if r.Status != events.StatusFiltered || !strings.Contains(string(r.Body), `"violence":{"filtered":true,"severity":"high"}`) {
			t.Fatalf("reply %+v %s", r, r.Body)
		}
		out = h.call(chat, false, prompt("Tell me about the apples in my garden"), answer(chat, benignAnswer))
		if r := out[0].(events.InferenceResult); r.Status != events.StatusOK {
			t.Fatalf("safe prompt %+v", r)
		}
	})
	t.Run("answer the guard blocks", func(t *testing.T) {
		h := newHarness(t, withGuard(t, &guardtest.Server{}, control.GuardFailOpen))
		body := strings.Replace(benignAnswer, "The sea is calm today.", "The sea is calm today. [S11]", 1)
		out := h.call(chat, false, prompt("hello"), answer(chat, body))
		b := string(out[0].(events.InferenceResult).Body)
		if strings.Contains(b, "calm") || !strings.Contains(b, `"self_harm":{"filtered":true,"severity":"high"}`) {
			t.Fatalf("answer %s", b)
		}
	})
	t.Run("stream the guard blocks", func(t *testing.T) {
		h := newHarness(t, withGuard(t, &guardtest.Server{}, control.GuardFailOpen))
		c := func(delta string) string {
			return `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}`
		}
		out := h.call(chat, true, prompt("hello"), chunks(chat, c(`{"role":"assistant","content":"The sea is calm today, "}`),
			c(`{"content":"the boats are out and the gulls are loud. [S9] "}`), c(`{"content":"More of the same follows here."}`)))
		var all strings.Builder
		for _, ev := range out {
			if ch, ok := ev.(events.InferenceChunk); ok {
				all.Write(ch.Body)
			}
		}
		if strings.Contains(all.String(), "gulls") || !strings.Contains(all.String(), `"finish_reason":"content_filter"`) {
			t.Fatalf("stream %s", all.String())
		}
	})
	for _, c := range []struct {
		name      string
		onFailure control.GuardFailure
		want      events.Status
	}{
		{"unavailable guard fails open", control.GuardFailOpen, events.StatusOK},
		{"unavailable guard fails closed", control.GuardFailClosed, events.StatusFiltered},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, withGuard(t, &guardtest.Server{Status: http.StatusInternalServerError}, c.onFailure))
			out := h.call(chat, false, prompt("Tell me about the apples in my garden"), answer(chat, benignAnswer))
			if r := out[0].(events.InferenceResult); r.Status != c.want {
				t.Fatalf("status %s, want %s", r.Status, c.want)
			}
		})
	}
}

// TestGuardModelStaysInItsGeography: text processed in a geography is
// never sent to another geography's guard model (residency); where its
// own geography has none, the classifier decides alone.
func TestGuardModelStaysInItsGeography(t *testing.T) {
	srv := &guardtest.Server{Record: true}
	h := newHarness(t, withGuardIn(t, "us", srv, control.GuardFailClosed))
	out := h.call(events.OperationChatCompletions, false, `{"messages":[{"role":"user","content":"Tell me about the apples in my garden [S1]"}]}`,
		answer(events.OperationChatCompletions, benignAnswer))
	if r := out[0].(events.InferenceResult); r.Status != events.StatusOK {
		t.Fatalf("eu request = %+v, want it rated by the classifier alone", r)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("the us guard model received %d requests of text processed in eu", n)
	}
}
