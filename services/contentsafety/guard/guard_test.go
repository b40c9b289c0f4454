package guard_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
	"github.com/terroir-ai/terroir/services/contentsafety/guard/guardtest"
)

const (
	prompt     = events.DirectionPrompt
	completion = events.DirectionCompletion
	safe       = events.SeveritySafe
	medium     = events.SeverityMedium
	high       = events.SeverityHigh
)

// llamaGuardStandIn starts a stand-in for Llama Guard 3 served by vLLM or
// llama.cpp server (chat-completions wire shape, Llama Guard's answers)
// and returns its base URL.
func llamaGuardStandIn(t *testing.T, s *guardtest.Server) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

// newGuard builds a guard on base with its own registry.
func newGuard(t *testing.T, cfg guard.Config) (*guard.Guard, *prometheus.Registry) {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "meta-llama/Llama-Guard-3-8B"
	}
	reg := prometheus.NewRegistry()
	g, err := guard.New(cfg, zap.NewNop(), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(g.Close)
	return g, reg
}

// severities is a result's severities, every category present.
func severities(hate, sexual, violence, selfHarm events.Severity) map[string]events.Severity {
	return map[string]events.Severity{"hate": hate, "sexual": sexual, "violence": violence, "self_harm": selfHarm}
}

// counter sums the samples of a counter metric whose labels include want.
func counter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestCheckAgainstLlamaGuardStandIn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		dir       events.Direction
		texts     []string
		severity  map[string]events.Severity
		rules     []string
		roles     []string // of the call; nil when no call is made
		lastInMsg string   // the text the rated message carries
	}{
		{"safe prompt", prompt, []string{"What is the capital of France?"}, severities(safe, safe, safe, safe), nil,
			[]string{"user"}, "capital of France"},
		{"unsafe prompt, several categories", prompt, []string{"[S1] and [S10] in one sentence"}, severities(medium, safe, high, safe),
			[]string{"guard.S1", "guard.S10"}, []string{"user"}, "[S10]"},
		{"a conversation's texts are one user turn", prompt, []string{"system text", "", "user text [S11]"}, severities(safe, safe, safe, high),
			[]string{"guard.S11"}, []string{"user"}, "system text\n\nuser text [S11]"},
		{"sexual categories", prompt, []string{"[S12]", "[S4]"}, severities(safe, high, safe, safe),
			[]string{"guard.S12", "guard.S4"}, []string{"user"}, "[S4]"},
		{"a category Terroir does not rate is recorded", prompt, []string{"[S2] [S7]"}, severities(safe, safe, safe, safe),
			[]string{"guard.S2", "guard.S7"}, []string{"user"}, "[S2]"},
		{"output: the assistant's turn is rated, not the prompt's", completion, []string{"prompt [S1]", "a harmless answer"},
			severities(safe, safe, safe, safe), nil, []string{"user", "assistant"}, "a harmless answer"},
		{"unsafe output", completion, []string{"prompt", "answer [S9]"}, severities(safe, safe, high, safe),
			[]string{"guard.S9"}, []string{"user", "assistant"}, "answer [S9]"},
		{"an output alone follows an empty user turn", completion, []string{"answer [S3]"}, severities(safe, high, safe, safe),
			[]string{"guard.S3"}, []string{"user", "assistant"}, "answer [S3]"},
		{"nothing to rate makes no call", prompt, []string{"", "  "}, severities(safe, safe, safe, safe), nil, nil, ""},
		{"an empty output makes no call", completion, []string{"prompt [S1]", ""}, severities(safe, safe, safe, safe), nil, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &guardtest.Server{Record: true}
			g, reg := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, s) + "/v1/", Model: "llama-guard3", APIKey: "sk-guard"})
			r, err := g.Check(t.Context(), c.dir, c.texts)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !maps.Equal(r.Severity, c.severity) || !slices.Equal(r.Rules, c.rules) || r.Jailbreak || r.Profanity || r.Blocklists != nil {
				t.Fatalf("Check = %+v, want severities %v rules %v", r, c.severity, c.rules)
			}
			reqs := s.Requests()
			if c.roles == nil {
				if len(reqs) != 0 {
					t.Fatalf("%d calls for nothing to rate", len(reqs))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("%d calls, want 1", len(reqs))
			}
			q := reqs[0]
			var roles []string
			for _, m := range q.Messages {
				roles = append(roles, m.Role)
			}
			if !slices.Equal(roles, c.roles) || !strings.Contains(q.Messages[len(q.Messages)-1].Content, c.lastInMsg) {
				t.Fatalf("messages = %+v, want roles %v with %q last", q.Messages, c.roles, c.lastInMsg)
			}
			if q.Model != "llama-guard3" || q.Temperature == nil || *q.Temperature != 0 || q.MaxTokens != guard.DefaultMaxTokens || q.Stream ||
				q.Authorization != "Bearer sk-guard" {
				t.Fatalf("request = model %q temperature %v max_tokens %d stream %v auth %q", q.Model, q.Temperature, q.MaxTokens, q.Stream, q.Authorization)
			}
			verdict := "safe"
			if len(c.rules) > 0 {
				verdict = "unsafe"
			}
			if n := counter(t, reg, "terroir_guard_verdicts_total", map[string]string{"direction": string(c.dir), "verdict": verdict}); n != 1 {
				t.Fatalf("verdicts{%s,%s} = %v", c.dir, verdict, n)
			}
		})
	}
}

func TestParseLlamaGuard(t *testing.T) {
	t.Parallel()
	cases := []struct {
		answer   string
		severity map[string]events.Severity
		rules    []string
		bad      bool
	}{
		{answer: "safe", severity: severities(safe, safe, safe, safe)},
		{answer: "\n\n SAFE \n", severity: severities(safe, safe, safe, safe)},
		{answer: "unsafe\nS1,S10", severity: severities(medium, safe, high, safe), rules: []string{"guard.S1", "guard.S10"}},
		{answer: "Unsafe\r\ns11, s12 ", severity: severities(safe, medium, safe, high), rules: []string{"guard.S11", "guard.S12"}},
		{answer: "unsafe S3", severity: severities(safe, high, safe, safe), rules: []string{"guard.S3"}},
		{answer: "unsafe\nS01,S1,S1", severity: severities(safe, safe, high, safe), rules: []string{"guard.S1"}},
		{answer: "unsafe\nS14,S13,S8,S6,S5", severity: severities(safe, safe, safe, safe), rules: []string{"guard.S13", "guard.S14", "guard.S5", "guard.S6", "guard.S8"}},
		{answer: "unsafe\nS15", severity: severities(safe, safe, safe, safe), rules: []string{"guard.S15"}},
		{answer: "", bad: true},
		{answer: "  \n", bad: true},
		{answer: "unsafe", bad: true},
		{answer: "unsafe\nviolence", bad: true},
		{answer: "unsafe\nS", bad: true},
		{answer: "I'm sorry, I cannot help with that.", bad: true},
		{answer: "safe, but the user seems upset", bad: true},
		{answer: "Yes", bad: true},
	}
	for _, c := range cases {
		r, err := guard.ParseLlamaGuard(c.answer)
		if c.bad {
			if err == nil {
				t.Errorf("ParseLlamaGuard(%q) = %+v, want an error", c.answer, r)
			} else if len(c.answer) > 10 && strings.Contains(err.Error(), strings.TrimSpace(c.answer)) {
				t.Errorf("ParseLlamaGuard(%q): the error quotes the answer: %v", c.answer, err)
			}
			continue
		}
		if err != nil || !maps.Equal(r.Severity, c.severity) || !slices.Equal(r.Rules, c.rules) {
			t.Errorf("ParseLlamaGuard(%q) = %+v, %v; want %v %v", c.answer, r, err, c.severity, c.rules)
		}
	}
}

// TestEveryLlamaGuardCategoryIsMapped: S1–S14 each have an entry, rated
// in one of Terroir's categories or deliberately left unrated.
func TestEveryLlamaGuardCategoryIsMapped(t *testing.T) {
	t.Parallel()
	rated := map[string]bool{"S1": true, "S3": true, "S4": true, "S9": true, "S10": true, "S11": true, "S12": true}
	for i := 1; i <= 14; i++ {
		code := "S" + strconv.Itoa(i)
		m, ok := guard.LlamaGuardCategories[code]
		if !ok || m.Name == "" {
			t.Fatalf("%s has no mapping", code)
		}
		if (m.Category != "") != rated[code] || m.Category != "" && !slices.Contains(control.Categories, m.Category) {
			t.Errorf("%s (%s) maps to %q", code, m.Name, m.Category)
		}
		if m.Category != "" && m.Severity != medium && m.Severity != high {
			t.Errorf("%s is rated %q; a guard finding blocks under the default policy", code, m.Severity)
		}
	}
	if len(guard.LlamaGuardCategories) != 14 {
		t.Fatalf("%d categories, want 14", len(guard.LlamaGuardCategories))
	}
}

// TestUnavailable: every way the guard model can fail is an
// *UnavailableError with its reason, counted, and never carries text.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	const canary = "canary-7f3a violent [S1] text"
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	cases := []struct {
		name   string
		server *guardtest.Server
		url    string
		reason guard.Reason
		status int
	}{
		{"malformed verdict", &guardtest.Server{Verdict: func([]guardtest.Message) string { return "I think this is fine" }}, "", guard.ReasonMalformed, 0},
		{"unsafe without category", &guardtest.Server{Verdict: func([]guardtest.Message) string { return "unsafe" }}, "", guard.ReasonMalformed, 0},
		{"HTTP 500", &guardtest.Server{Status: http.StatusInternalServerError}, "", guard.ReasonStatus, 500},
		{"HTTP 429", &guardtest.Server{Status: http.StatusTooManyRequests}, "", guard.ReasonStatus, 429},
		{"slower than the timeout", &guardtest.Server{Delay: time.Minute}, "", guard.ReasonTimeout, 0},
		{"nothing listening", nil, closed.URL, guard.ReasonTransport, 0},
		{"not a chat completion", nil, "", guard.ReasonMalformed, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			url := c.url
			switch {
			case c.server != nil:
				url = llamaGuardStandIn(t, c.server)
			case url == "":
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Write([]byte(`{"object":"list","data":[]}`))
				}))
				t.Cleanup(srv.Close)
				url = srv.URL
			}
			g, reg := newGuard(t, guard.Config{URL: url, Timeout: 100 * time.Millisecond})
			r, err := g.Check(t.Context(), completion, []string{canary, canary})
			var u *guard.UnavailableError
			if !errors.As(err, &u) || !errors.Is(err, guard.ErrUnavailable) || !guard.IsUnavailable(err) {
				t.Fatalf("Check = %+v, %v; want an UnavailableError", r, err)
			}
			if u.Reason != c.reason || u.Status != c.status {
				t.Fatalf("reason %s status %d, want %s %d (%v)", u.Reason, u.Status, c.reason, c.status, err)
			}
			if strings.Contains(err.Error(), "canary") || strings.Contains(err.Error(), "violent") {
				t.Fatalf("the error carries text: %v", err)
			}
			if n := counter(t, reg, "terroir_guard_failures_total", map[string]string{"direction": "completion", "reason": string(c.reason)}); n != 1 {
				t.Fatalf("failures{completion,%s} = %v", c.reason, n)
			}
			if n := counter(t, reg, "terroir_guard_calls_total", nil); n != 1 {
				t.Fatalf("calls = %v", n)
			}
		})
	}
}

// TestCallerEndingIsNotAnOutage: when the caller's context ends (the
// service is shutting down), Check says so instead of reporting the guard
// model unavailable, and Decide leaves the decision to a retry.
func TestCallerEndingIsNotAnOutage(t *testing.T) {
	t.Parallel()
	g, _ := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, &guardtest.Server{Delay: time.Minute}), Timeout: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := g.Check(ctx, prompt, []string{"[S1]"})
	if err == nil || guard.IsUnavailable(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Check after the caller ended = %v", err)
	}
	for _, rules := range []control.GuardRules{{}, {OnFailure: control.GuardFailClosed}} {
		if d := g.Evaluate(ctx, rules, prompt, []string{"[S1]"}); d.Outcome != guard.OutcomeError || d.Blocked || !errors.Is(d.Err, context.Canceled) {
			t.Fatalf("Evaluate(%+v) after the caller ended = %+v", rules, d)
		}
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	rated, err := guard.ParseLlamaGuard("unsafe\nS1")
	if err != nil {
		t.Fatal(err)
	}
	down := &guard.UnavailableError{Reason: guard.ReasonTimeout}
	open := control.GuardRules{}
	openExplicit := control.GuardRules{OnFailure: control.GuardFailOpen}
	closed := control.GuardRules{OnFailure: control.GuardFailClosed}
	off := control.GuardRules{Off: true, OnFailure: control.GuardFailClosed}
	cases := []struct {
		name    string
		rules   control.GuardRules
		res     classifier.Result
		err     error
		outcome guard.Outcome
		blocked bool
	}{
		{"rated", open, rated, nil, guard.OutcomeRated, false},
		{"rated under fail closed", closed, rated, nil, guard.OutcomeRated, false},
		{"unavailable, fail open by default", open, classifier.Result{}, down, guard.OutcomeFailedOpen, false},
		{"unavailable, fail open", openExplicit, classifier.Result{}, down, guard.OutcomeFailedOpen, false},
		{"unavailable, fail closed", closed, classifier.Result{}, down, guard.OutcomeFailedClosed, true},
		{"wrapped unavailable, fail closed", closed, classifier.Result{}, errors.Join(errors.New("x"), down), guard.OutcomeFailedClosed, true},
		{"policy turns the guard off", off, rated, down, guard.OutcomeSkipped, false},
		{"caller ended", closed, classifier.Result{}, context.Canceled, guard.OutcomeError, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := guard.Decide(c.rules, c.res, c.err)
			if d.Outcome != c.outcome || d.Blocked != c.blocked {
				t.Fatalf("Decide = %+v, want %s blocked=%v", d, c.outcome, c.blocked)
			}
			if (d.Err != nil) != (c.outcome == guard.OutcomeFailedOpen || c.outcome == guard.OutcomeFailedClosed || c.outcome == guard.OutcomeError) {
				t.Fatalf("Err = %v for %s", d.Err, d.Outcome)
			}
			// what the pipeline merges: the guard's verdict only when it rated
			merged := classifier.Merge(classifier.Result{Severity: severities(safe, safe, events.SeverityLow, safe)}, d.Result)
			want := events.SeverityLow
			if c.outcome == guard.OutcomeRated {
				want = high
			}
			if merged.Severity["violence"] != want {
				t.Fatalf("merged violence = %s, want %s", merged.Severity["violence"], want)
			}
		})
	}
}

// TestEvaluateFailsOpenOrClosedByPolicy runs the stage as the pipeline
// will, against a stand-in that fails, and counts what was decided.
func TestEvaluateFailsOpenOrClosedByPolicy(t *testing.T) {
	t.Parallel()
	g, reg := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, &guardtest.Server{Status: http.StatusBadGateway})})
	cases := []struct {
		rules   control.GuardRules
		outcome guard.Outcome
		blocked bool
	}{
		{control.GuardRules{}, guard.OutcomeFailedOpen, false},
		{control.GuardRules{OnFailure: control.GuardFailClosed}, guard.OutcomeFailedClosed, true},
		{control.GuardRules{Off: true, OnFailure: control.GuardFailClosed}, guard.OutcomeSkipped, false},
	}
	for _, c := range cases {
		d := g.Evaluate(t.Context(), c.rules, prompt, []string{"[S1]"})
		if d.Outcome != c.outcome || d.Blocked != c.blocked {
			t.Fatalf("Evaluate(%+v) = %+v", c.rules, d)
		}
		if n := counter(t, reg, "terroir_guard_decisions_total", map[string]string{"direction": "prompt", "outcome": string(c.outcome)}); n != 1 {
			t.Fatalf("decisions{prompt,%s} = %v", c.outcome, n)
		}
	}
	if n := counter(t, reg, "terroir_guard_calls_total", nil); n != 2 {
		t.Fatalf("calls = %v: a policy that turns the guard off must not call it", n)
	}
	// no guard configured: the rules decide alone, whatever the policy
	var none *guard.Guard
	if d := none.Evaluate(t.Context(), control.GuardRules{OnFailure: control.GuardFailClosed}, prompt, []string{"[S1]"}); d.Outcome != guard.OutcomeSkipped || d.Blocked {
		t.Fatalf("Evaluate without a guard = %+v", d)
	}
	// and a healthy guard rates
	ok, _ := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, &guardtest.Server{})})
	d := ok.Evaluate(t.Context(), control.GuardRules{OnFailure: control.GuardFailClosed}, completion, []string{"q", "[S11]"})
	if d.Outcome != guard.OutcomeRated || d.Blocked || d.Result.Severity["self_harm"] != high {
		t.Fatalf("Evaluate on a healthy guard = %+v", d)
	}
}

// TestNoTextInLogsOrMetrics: the text a check rates reaches neither a log
// line nor a metric, whatever happens (promise 7).
func TestNoTextInLogsOrMetrics(t *testing.T) {
	t.Parallel()
	const canary = "canary-91bd"
	core, logs := observer.New(zap.DebugLevel)
	for _, s := range []*guardtest.Server{{}, {Status: 500}, {Verdict: func([]guardtest.Message) string { return canary }}, {Delay: time.Minute}} {
		reg := prometheus.NewRegistry()
		g, err := guard.New(guard.Config{URL: llamaGuardStandIn(t, s), Model: "m", Timeout: 100 * time.Millisecond}, zap.New(core), reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []events.Direction{prompt, completion} {
			_, err := g.Check(t.Context(), dir, []string{canary + " [S1]", canary + " [S10]"})
			if err != nil && strings.Contains(err.Error(), canary) {
				t.Fatalf("error carries text: %v", err)
			}
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if strings.Contains(mf.String(), canary) {
				t.Fatalf("metric carries text: %s", mf)
			}
		}
		g.Close()
	}
	if logs.Len() == 0 {
		t.Fatal("no failure was logged")
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, canary) {
			t.Fatalf("log line carries text: %s", line)
		}
	}
}

func TestNewChecksItsConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  guard.Config
		want string
	}{
		{"no URL", guard.Config{Model: "m"}, "URL"},
		{"not http", guard.Config{URL: "ftp://h/", Model: "m"}, "URL"},
		{"no host", guard.Config{URL: "http:///v1", Model: "m"}, "URL"},
		{"query", guard.Config{URL: "http://h/?x=1", Model: "m"}, "URL"},
		{"no model", guard.Config{URL: "http://h"}, "model"},
		{"unknown format", guard.Config{URL: "http://h", Model: "m", Format: "llamaguard4"}, "format"},
		{"negative timeout", guard.Config{URL: "http://h", Model: "m", Timeout: -time.Second}, "negative"},
	}
	for _, c := range cases {
		if _, err := guard.New(c.cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error about %s", c.name, err, c.want)
		}
	}
	g, err := guard.New(guard.Config{URL: "https://guard.internal:8443/", Model: "m"}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := g.Config(); c.Timeout != guard.DefaultTimeout || c.Concurrency != guard.DefaultConcurrency || c.Format != guard.FormatLlamaGuard || c.MaxTokens != guard.DefaultMaxTokens {
		t.Fatalf("defaults = %+v", c)
	}
	g.Close()
	g.Close()
	reg := prometheus.NewRegistry()
	if _, err := guard.New(guard.Config{URL: "http://h", Model: "m"}, zap.NewNop(), reg); err != nil {
		t.Fatal(err)
	}
	if _, err := guard.New(guard.Config{URL: "http://h", Model: "m"}, zap.NewNop(), reg); err == nil {
		t.Fatal("two guards registered the same metrics")
	}
}

func TestEndpoint(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"http://127.0.0.1:8000":         "http://127.0.0.1:8000/v1/chat/completions",
		"http://127.0.0.1:8000/":        "http://127.0.0.1:8000/v1/chat/completions",
		"http://127.0.0.1:8000/v1":      "http://127.0.0.1:8000/v1/chat/completions",
		"http://127.0.0.1:11434/v1/":    "http://127.0.0.1:11434/v1/chat/completions",
		"https://gpu.example/guard":     "https://gpu.example/guard/v1/chat/completions",
		"https://gpu.example/guard/v1/": "https://gpu.example/guard/v1/chat/completions",
	}
	for in, want := range cases {
		if got, err := guard.Endpoint(in); err != nil || got != want {
			t.Errorf("Endpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
