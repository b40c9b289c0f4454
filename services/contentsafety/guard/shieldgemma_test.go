package guard_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/guard"
	"github.com/terroir-ai/terroir/services/contentsafety/guard/guardtest"
)

// shieldGemmaStandIn answers as ShieldGemma would if the texts were what
// their markers say: "Yes" when the rated text (the chatbot response when
// there is one, else the human question) carries "[<policy ID>]" for the
// policy asked about.
func shieldGemmaStandIn(messages []guardtest.Message) string {
	p := messages[len(messages)-1].Content
	rated := p
	for _, label := range []string{"Chatbot Response: ", "Human Question: "} {
		if _, after, ok := strings.Cut(p, label); ok {
			rated, _, _ = strings.Cut(after, "<end_of_turn>")
			break
		}
	}
	for _, pol := range guard.ShieldGemmaPolicies {
		if strings.Contains(p, `"No `+strings.TrimPrefix(pol.Mapping.Name, "No ")+`"`) {
			if strings.Contains(rated, "["+pol.ID+"]") {
				return "Yes. The text violates the policy."
			}
			return "No"
		}
	}
	return "which policy?"
}

func TestShieldGemmaFormat(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		dir      events.Direction
		texts    []string
		severity map[string]events.Severity
		rules    []string
	}{
		{"safe prompt", prompt, []string{"How do plants grow?"}, severities(safe, safe, safe, safe), nil},
		{"two policies violated", prompt, []string{"[hate_speech] and [sexually_explicit]"}, severities(medium, medium, safe, safe),
			[]string{"guard.hate_speech", "guard.sexually_explicit"}},
		{"output rated, not the prompt", completion, []string{"[dangerous_content]", "a harmless answer"}, severities(safe, safe, safe, safe), nil},
		{"unsafe output", completion, []string{"question", "[dangerous_content] [harassment]"}, severities(medium, safe, medium, safe),
			[]string{"guard.dangerous_content", "guard.harassment"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &guardtest.Server{Verdict: shieldGemmaStandIn, Record: true}
			g, _ := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, s), Model: "google/shieldgemma-2b", Format: guard.FormatShieldGemma})
			r, err := g.Check(t.Context(), c.dir, c.texts)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !maps.Equal(r.Severity, c.severity) || !slices.Equal(r.Rules, c.rules) {
				t.Fatalf("Check = %+v, want %v %v", r, c.severity, c.rules)
			}
			reqs := s.Requests()
			if len(reqs) != len(guard.ShieldGemmaPolicies) {
				t.Fatalf("%d calls, want one per policy", len(reqs))
			}
			for _, q := range reqs {
				if len(q.Messages) != 1 || q.Messages[0].Role != "user" {
					t.Fatalf("messages = %+v, want one user message", q.Messages)
				}
				if asksAboutResponse := strings.Contains(q.Messages[0].Content, "Chatbot Response:"); asksAboutResponse != (c.dir == completion) {
					t.Fatalf("a %s check asks: %q", c.dir, q.Messages[0].Content)
				}
			}
		})
	}
	// one policy's answer is not a verdict: the check is unavailable
	g, _ := newGuard(t, guard.Config{URL: llamaGuardStandIn(t, &guardtest.Server{Verdict: func(m []guardtest.Message) string {
		if strings.Contains(m[0].Content, `"No Harassment"`) {
			return "Perhaps"
		}
		return "No"
	}}), Format: guard.FormatShieldGemma})
	if _, err := g.Check(t.Context(), prompt, []string{"text"}); !guard.IsUnavailable(err) {
		t.Fatalf("Check with one malformed answer = %v", err)
	}
}

func TestParseShieldGemma(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{"Yes": true, "yes.": true, " YES, because": true, "Yes\nThe prompt": true, "No": false, "no.": false, "No\n": false}
	for answer, want := range cases {
		if got, err := guard.ParseShieldGemma(answer); err != nil || got != want {
			t.Errorf("ParseShieldGemma(%q) = %v, %v; want %v", answer, got, err, want)
		}
	}
	for _, bad := range []string{"", "Maybe", "safe", "Yesterday"} {
		if _, err := guard.ParseShieldGemma(bad); err == nil {
			t.Errorf("ParseShieldGemma(%q) is not an error", bad)
		}
	}
}
