package builtin

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
)

// collect returns an emit function that records deltas per choice.
func collect() (func(int, string) error, map[int][]string) {
	got := map[int][]string{}
	return func(i int, d string) error {
		got[i] = append(got[i], d)
		return nil
	}, got
}

func TestParamsValidation(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	tests := []struct {
		name  string
		p     Params
		param string
	}{
		{"negative max_tokens", Params{MaxTokens: -1}, "max_tokens"},
		{"max_tokens too large", Params{MaxTokens: MaxMaxTokens + 1}, "max_tokens"},
		{"negative temperature", Params{Temperature: -0.1}, "temperature"},
		{"temperature too high", Params{Temperature: 2.01}, "temperature"},
		{"NaN temperature", Params{Temperature: math.NaN()}, "temperature"},
		{"negative top_p", Params{TopP: -0.5}, "top_p"},
		{"top_p above 1", Params{TopP: 1.5}, "top_p"},
		{"negative n", Params{N: -1}, "n"},
		{"n too large", Params{N: MaxChoices + 1}, "n"},
		{"too many stops", Params{Stop: []string{"a", "b", "c", "d", "e"}}, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := m.Generate(t.Context(), "The whale", tt.p, nil)
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param != tt.param {
				t.Fatalf("Generate error = %v, want a ParamError for %s", err, tt.param)
			}
			_, err = m.Chat(t.Context(), []Message{{Role: RoleUser, Content: "hi"}}, tt.p, nil)
			if !errors.As(err, &pe) || pe.Param != tt.param {
				t.Fatalf("Chat error = %v, want a ParamError for %s", err, tt.param)
			}
		})
	}
}

func TestParamsDefaults(t *testing.T) {
	t.Parallel()
	p, err := Params{Stop: []string{"", "x"}}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxTokens != DefaultMaxTokens || p.TopP != 1 || p.N != 1 || len(p.Stop) != 1 || p.Stop[0] != "x" {
		t.Errorf("normalized zero params = %+v", p)
	}
}

func TestGenerateSeedDeterminism(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	ctx := t.Context()
	prompt := "The whale"
	p := Params{MaxTokens: 40, Temperature: 1, Seed: ptr(int64(11)), N: 3}
	a, err := m.Generate(ctx, prompt, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Generate(ctx, prompt, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("choice %d differs between identical seeded requests:\n%q\n%q", i, a[i].Text, b[i].Text)
		}
		if a[i].Index != i {
			t.Errorf("choice %d has index %d", i, a[i].Index)
		}
	}
	if a[0].Text == a[1].Text && a[1].Text == a[2].Text {
		t.Errorf("the three choices are identical: each choice should draw its own stream")
	}
	// A choice depends on its seed and index only, not on how many choices
	// were asked for.
	one, err := m.Generate(ctx, prompt, Params{MaxTokens: 40, Temperature: 1, Seed: ptr(int64(11))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if one[0] != a[0] {
		t.Errorf("choice 0 of n=1 differs from choice 0 of n=3:\n%q\n%q", one[0].Text, a[0].Text)
	}
	// Other seeds give other texts.
	distinct := map[string]bool{a[0].Text: true}
	for seed := int64(1); seed <= 4; seed++ {
		c, err := m.Generate(ctx, prompt, Params{MaxTokens: 40, Temperature: 1, Seed: &seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		distinct[c[0].Text] = true
	}
	if len(distinct) < 4 {
		t.Errorf("5 seeds gave only %d distinct texts", len(distinct))
	}
}

func TestGreedyIgnoresSeed(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	var first string
	for i, seed := range []*int64{nil, ptr(int64(1)), ptr(int64(2))} {
		c, err := m.Generate(t.Context(), "It is the duty of the Congress", Params{MaxTokens: 30, Seed: seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = c[0].Text
		} else if c[0].Text != first {
			t.Errorf("greedy output changed with the seed: %q vs %q", c[0].Text, first)
		}
	}
}

func TestTopPTinyIsGreedy(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	ctx := t.Context()
	prompt := "Call me Ishmael."
	greedy, err := m.Generate(ctx, prompt, Params{MaxTokens: 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for seed := int64(1); seed <= 3; seed++ {
		c, err := m.Generate(ctx, prompt, Params{MaxTokens: 30, Temperature: 1.5, TopP: 1e-9, Seed: &seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c[0].Text != greedy[0].Text {
			t.Errorf("seed %d: top_p near 0 gave %q, greedy gave %q", seed, c[0].Text, greedy[0].Text)
		}
	}
}

// Higher temperatures draw less probable tokens: the model finds the text
// it generated hotter less likely.
func TestTemperatureSpreadsChoices(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	ppl := func(temp, topP float64) float64 {
		var sum float64
		cs, err := m.Generate(t.Context(), "The Congress", Params{MaxTokens: 40, Temperature: temp, TopP: topP, Seed: ptr(int64(5)), N: 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			sum += math.Log(m.Perplexity("The Congress" + c.Text))
		}
		return math.Exp(sum / float64(len(cs)))
	}
	cold, warm, hot := ppl(0.3, 1), ppl(1, 1), ppl(1.8, 1)
	if !(cold < warm && warm < hot) {
		t.Errorf("perplexity of generated text at temperature 0.3, 1, 1.8 = %.1f, %.1f, %.1f; want increasing", cold, warm, hot)
	}
	if nucleus := ppl(1.8, 0.5); nucleus >= hot {
		t.Errorf("top_p 0.5 at temperature 1.8 gave perplexity %.1f, not below %.1f without it", nucleus, hot)
	}
}

func TestMaxTokens(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	for _, limit := range []int{1, 2, 5, 9} {
		cs, err := m.Generate(t.Context(), "We must", Params{MaxTokens: limit, Temperature: 1, Seed: ptr(int64(3)), N: 4}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.CompletionTokens > limit || c.CompletionTokens < 1 {
				t.Errorf("max_tokens %d: choice %d used %d tokens", limit, c.Index, c.CompletionTokens)
			}
			if c.FinishReason == FinishLength && c.CompletionTokens != limit {
				t.Errorf("max_tokens %d: finish length after %d tokens", limit, c.CompletionTokens)
			}
			if c.FinishReason == FinishLength && CountTokens(c.Text) > limit+1 {
				t.Errorf("max_tokens %d: text %q is longer than the limit", limit, c.Text)
			}
		}
		if limit <= 2 && cs[0].FinishReason != FinishLength {
			t.Errorf("max_tokens %d: finish %q, want length", limit, cs[0].FinishReason)
		}
	}
}

// Without a limit in sight, texts end at a sentence end by themselves.
func TestNaturalEnd(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	prompts := []string{"The state of our Union is", "Call me Ishmael.", "The whale", "Our economy"}
	for _, prompt := range prompts {
		for _, p := range []Params{{}, {Temperature: 0.9, Seed: ptr(int64(8)), N: 4}} {
			cs, err := m.Generate(t.Context(), prompt, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				if c.FinishReason != FinishStop {
					t.Errorf("%q: finish %q after %d tokens, want stop", prompt, c.FinishReason, c.CompletionTokens)
				}
				if c.CompletionTokens > 2*maxSoftTarget {
					t.Errorf("%q: %d tokens before the text ended", prompt, c.CompletionTokens)
				}
				if text := strings.TrimRight(c.Text, "\"')]”’ \n"); !strings.ContainsAny(text[max(0, len(text)-1):], ".!?") {
					t.Errorf("%q: text does not end a sentence: %q", prompt, c.Text)
				}
			}
		}
	}
}

func TestStopSequences(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	ctx := t.Context()
	base := Params{MaxTokens: 60, Temperature: 0.7, Seed: ptr(int64(21)), N: 2}
	free, err := m.Generate(ctx, "The whale", base, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := free[0].Text
	words := strings.Fields(text)
	if len(words) < 8 {
		t.Fatalf("unconstrained text too short to pick stops from: %q", text)
	}
	t.Logf("unconstrained: %q", text)
	// A stop spanning the boundary of two words spans two tokens.
	span := words[3][max(0, len(words[3])-2):] + " " + words[4][:min(2, len(words[4]))]
	tests := []struct {
		name string
		stop []string
		want string
	}{
		{"spanning tokens", []string{span}, text[:strings.Index(text, span)]},
		{"a word", []string{words[5]}, text[:strings.Index(text, words[5])]},
		{"earliest of several", []string{words[6], words[2], "zzzq"}, text[:min(strings.Index(text, words[6]), strings.Index(text, words[2]))]},
		{"absent", []string{"zzzq"}, text},
		{"at the start", []string{text[:3]}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			p.Stop = tt.stop
			emit, deltas := collect()
			cs, err := m.Generate(ctx, "The whale", p, emit)
			if err != nil {
				t.Fatal(err)
			}
			c := cs[0]
			if c.Text != tt.want {
				t.Errorf("text = %q, want %q", c.Text, tt.want)
			}
			wantFinish := FinishStop
			if tt.want == text {
				wantFinish = free[0].FinishReason
			}
			if c.FinishReason != wantFinish {
				t.Errorf("finish = %q, want %q", c.FinishReason, wantFinish)
			}
			for i, c := range cs {
				if got := strings.Join(deltas[i], ""); got != c.Text {
					t.Errorf("choice %d: deltas join to %q, text is %q", i, got, c.Text)
				}
				for _, s := range tt.stop {
					if strings.Contains(c.Text, s) {
						t.Errorf("choice %d contains stop %q: %q", i, s, c.Text)
					}
				}
			}
		})
	}
}

func TestStreamingMatchesText(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	emit, deltas := collect()
	cs, err := m.Generate(t.Context(), "Ahab", Params{MaxTokens: 80, Temperature: 1, Seed: ptr(int64(9)), N: 3, Stop: []string{"the Congress", "whale-"}}, emit)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if len(deltas[i]) < 2 {
			t.Errorf("choice %d streamed in %d deltas; want token by token", i, len(deltas[i]))
		}
		if got := strings.Join(deltas[i], ""); got != c.Text {
			t.Errorf("choice %d: deltas join to %q, text is %q", i, got, c.Text)
		}
	}
}

func TestGenerateCancel(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := m.Generate(ctx, "The whale", Params{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Generate with a cancelled context: %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	_, err := m.Generate(ctx, "The whale", Params{MaxTokens: 200, Temperature: 1, Seed: ptr(int64(1))}, func(int, string) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Generate cancelled mid-stream: %v, want context.Canceled", err)
	}
	if calls != 1 {
		t.Errorf("emit called %d times after cancellation, want 1", calls)
	}
}

func TestEmitErrorStops(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	boom := errors.New("client went away")
	calls := 0
	_, err := m.Generate(t.Context(), "The whale", Params{N: 2}, func(int, string) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Errorf("Generate = %v after %d emits, want the emit error after 1", err, calls)
	}
}

// Generation reads the model and nothing else: the model's predictions are
// the same after any number of requests, and concurrent requests give what
// sequential ones give.
func TestGenerateLeavesModelUnchanged(t *testing.T) {
	t.Parallel()
	m := loadModel(t)
	probe := "It is the duty of the Congress to provide for the common defense."
	before, stats := m.Perplexity(probe), m.Stats()
	p := Params{MaxTokens: 30, Temperature: 1, Seed: ptr(int64(4)), N: 2}
	want, err := m.Generate(t.Context(), probe, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][]Choice, 6)
	for i := range results {
		wg.Go(func() {
			results[i], _ = m.Generate(t.Context(), probe, p, nil)
			_, _ = m.Chat(t.Context(), []Message{{Role: RoleUser, Content: probe}}, p, nil)
		})
	}
	wg.Wait()
	for i, r := range results {
		if len(r) != 2 || r[0] != want[0] || r[1] != want[1] {
			t.Errorf("concurrent request %d gave %+v, want %+v", i, r, want)
		}
	}
	if after := m.Perplexity(probe); after != before {
		t.Errorf("perplexity changed from %v to %v after generating", before, after)
	}
	if m.Stats() != stats {
		t.Errorf("model stats changed after generating: %+v, then %+v", stats, m.Stats())
	}
}
