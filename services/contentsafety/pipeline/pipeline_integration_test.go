package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// harness runs the pipeline on kfake with a scripted model behind it:
// the test plays ingress (requests, replies) and the inference worker
// (whatever each request's script says it answers).
type harness struct {
	t       *testing.T
	cluster *bustest.Cluster
	ns      string
	cfg     Config // of every pipeline instance, but for its bus
	bus     *bus.Bus
	req     *bus.Requester
	seq     atomic.Int64
	mu      sync.Mutex
	script  map[string]func(emit func(ev events.Event, final bool)) // by request ID
	// lane is the lane send sends on (the real-time one unless set);
	// modelSaw is the stream the model read each request from
	lane     bus.Lane
	modelSaw map[string]string
	// stop stops the pipeline instance newHarness started.
	stop func()
}

// harnessOption adjusts the pipeline's configuration or control state.
type harnessOption func(*Config, *control.State)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	cluster := bustest.New(t)
	ns := bustest.Namespace()
	b := cluster.Bus(t, bustest.Options{Geos: []string{"eu"}, Namespace: ns})
	st := control.NewState(zap.NewNop())
	spec, err := json.Marshal(control.Resource{Name: "acme", Location: "eu", OptOutApproved: true, ContentLogging: false})
	if err != nil {
		t.Fatal(err)
	}
	st.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: "acme", Actor: "test", At: time.Now(), Spec: spec})
	c, err := classifier.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Bus: b, State: st, Classifier: c, Geos: []string{"eu"}, Log: zaptest.NewLogger(t),
		Stream: classifier.StreamOptions{Window: 64, Overlap: 32}}
	for _, o := range opts {
		o(&cfg, st)
	}
	h := &harness{t: t, cluster: cluster, ns: ns, cfg: cfg, bus: b, script: map[string]func(func(events.Event, bool)){}, lane: bus.LaneRealtime, modelSaw: map[string]string{}}
	h.stop = h.start(b)
	ctx, cancel := context.WithCancel(context.Background())
	model, err := b.NewConsumer(bus.ConsumerConfig{Group: "scripted-model", Streams: []string{bus.StreamInference, bus.LaneBatch.Stream(bus.StreamInference)}, Geos: []string{"eu"}, Handler: h.model})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = model.Run(ctx) })
	h.req, err = b.NewRequester(ctx, "eu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.req.Close()
		cancel()
		wg.Wait()
	})
	return h
}

// start runs a pipeline instance on b until the returned function (or
// the end of the test) stops it.
func (h *harness) start(b *bus.Bus) (stop func()) {
	h.t.Helper()
	cfg := h.cfg
	cfg.Bus = b
	p, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// instance starts a pipeline instance of its own, as another process
// would be, on a bus of its own with opts on its clients.
func (h *harness) instance(opts ...kgo.Opt) (stop func()) {
	h.t.Helper()
	b := h.cluster.Bus(h.t, bustest.Options{Geos: []string{"eu"}, Namespace: h.ns, ClientOpts: opts})
	return h.start(b)
}

// model answers an approved request as its script says.
func (h *harness) model(ctx context.Context, d *bus.Delivery) error {
	var req events.InferenceRequest
	if err := d.Decode(ctx, &req); err != nil {
		return bus.Permanent(err)
	}
	h.mu.Lock()
	script := h.script[req.RequestID]
	h.modelSaw[req.RequestID] = d.Stream
	h.mu.Unlock()
	if script == nil {
		return nil
	}
	meta := d.Meta
	meta.Key = ""
	seq := 0
	var err error
	script(func(ev events.Event, final bool) {
		if r, ok := ev.(events.InferenceResult); ok {
			// as a worker does: the verdict and the prompt's check come
			// back on the answer
			r.Echo(req)
			ev = r
		}
		meta.Seq, meta.Final = seq, final
		seq++
		if err == nil {
			err = h.bus.Publish(ctx, d.Geo, bus.LaneOf(d.Stream).Stream(bus.StreamCompletions), meta, ev)
		}
	})
	return err
}

// call sends a request whose model answers with script, and returns the
// replies' bodies in order.
func (h *harness) call(op events.Operation, stream bool, body string, script func(id string, emit func(events.Event, bool))) []events.Event {
	h.t.Helper()
	_, rs := h.send(op, stream, body, script)
	out, err := h.collect(rs, 30*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// send sends a request whose model answers with script, and returns its
// ID and its replies; the replies are closed when the test ends.
func (h *harness) send(op events.Operation, stream bool, body string, script func(id string, emit func(events.Event, bool))) (string, *bus.ReplyStream) {
	h.t.Helper()
	id := fmt.Sprintf("req_%d_%d", time.Now().UnixNano(), h.seq.Add(1))
	if script != nil {
		h.mu.Lock()
		h.script[id] = func(emit func(events.Event, bool)) { script(id, emit) }
		h.mu.Unlock()
	}
	req := events.InferenceRequest{RequestID: id, Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", SKU: "Standard",
		Model: "scripted", Operation: op, Stream: stream, APIFlavor: "openai", Body: json.RawMessage(body), CreatedAt: time.Now().UTC()}
	rs, err := h.req.Request(h.t.Context(), "eu", h.lane.Stream(bus.StreamRequests), bus.Meta{RequestID: id, Resource: "acme", HomeGeo: "eu", Deployment: "chat"}, req)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(rs.Close)
	return id, rs
}

// collect returns the replies' bodies in order, up to the final one. It
// may run outside the test's goroutine.
func (h *harness) collect(rs *bus.ReplyStream, within time.Duration) ([]events.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []events.Event
	for {
		d, err := rs.Next(ctx)
		if err != nil {
			return out, fmt.Errorf("waiting for replies: %w (got %d)", err, len(out))
		}
		switch d.Meta.Type.Name {
		case events.TypeInferenceChunk.Name:
			var c events.InferenceChunk
			if err := d.Decode(ctx, &c); err != nil {
				return out, err
			}
			out = append(out, c)
		default:
			var r events.InferenceResult
			if err := d.Decode(ctx, &r); err != nil {
				return out, err
			}
			out = append(out, r)
		}
		if d.Meta.Final {
			return out, nil
		}
	}
}

func answer(op events.Operation, body string) func(string, func(events.Event, bool)) {
	return func(id string, emit func(events.Event, bool)) {
		emit(events.InferenceResult{RequestID: id, Status: events.StatusOK, Operation: op, Body: json.RawMessage(body), CreatedAt: time.Now().UTC()}, true)
	}
}

func chunks(op events.Operation, bodies ...string) func(string, func(events.Event, bool)) {
	return func(id string, emit func(events.Event, bool)) {
		for i, b := range bodies {
			emit(events.InferenceChunk{RequestID: id, Seq: i, Operation: op, Body: json.RawMessage(b), CreatedAt: time.Now().UTC()}, false)
		}
		emit(events.InferenceResult{RequestID: id, Status: events.StatusOK, Operation: op, CreatedAt: time.Now().UTC()}, true)
	}
}

const benignAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"The sea is calm today."},"logprobs":null,"finish_reason":"stop"}]}`

// TestEveryPromptFieldIsClassified: harmful text in any field the model
// reads blocks the prompt, whichever field carries it.
func TestEveryPromptFieldIsClassified(t *testing.T) {
	h := newHarness(t)
	const harm = "I am going to kill myself tonight"
	esc := `I am going to \\u006bill mys\\u0065lf tonight`
	cases := []struct {
		name string
		op   events.Operation
		body string
	}{
		{"message content", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"` + harm + `"}]}`},
		{"content part", events.OperationChatCompletions, `{"messages":[{"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":"` + harm + `"}]}]}`},
		{"message name", events.OperationChatCompletions, `{"messages":[{"role":"user","name":"kill_yourself_now","content":"You should"}]}`},
		{"tool name", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"kill_yourself_now","description":"You should"}}]}`},
		{"tool description", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"` + harm + `"}}]}`},
		{"parameter description", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string","description":"` + harm + `"}}}}}]}`},
		{"tool call arguments", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":\"` + esc + `\"}"}}]},{"role":"tool","tool_call_id":"c","content":"ok"}]}`},
		{"legacy function_call", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"x\":\"` + harm + `\"}"}}]}`},
		{"tool result", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"c","content":"` + harm + `"}]}`},
		{"legacy functions", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f","description":"` + harm + `"}]}`},
		{"refusal of an earlier turn", events.OperationChatCompletions, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","refusal":"` + harm + `"}]}`},
		{"completions prompt", events.OperationCompletions, `{"prompt":"` + harm + `"}`},
		{"completions prompt list", events.OperationCompletions, `{"prompt":["hello there","` + harm + `"]}`},
		{"completions suffix", events.OperationCompletions, `{"prompt":"hello","suffix":"` + harm + `"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := h.call(c.op, false, c.body, answer(c.op, benignAnswer))
			r, ok := out[0].(events.InferenceResult)
			if !ok || r.Status != events.StatusFiltered {
				t.Fatalf("reply = %+v, want the prompt filtered", out[0])
			}
			if !strings.Contains(string(r.Body), `"self_harm":{"filtered":true`) {
				t.Errorf("error body %s", r.Body)
			}
		})
	}
	t.Run("benign tools pass", func(t *testing.T) {
		body := `{"messages":[{"role":"user","content":"What is the weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}`
		out := h.call(events.OperationChatCompletions, false, body, answer(events.OperationChatCompletions, benignAnswer))
		if r := out[0].(events.InferenceResult); r.Status != events.StatusOK {
			t.Fatalf("benign request = %+v", r)
		}
	})
	t.Run("unknown part refused naming it", func(t *testing.T) {
		out := h.call(events.OperationChatCompletions, false, `{"messages":[{"role":"user","content":[{"type":"secret","secret":"x"}]}]}`, nil)
		r := out[0].(events.InferenceResult)
		if r.Status != events.StatusError || r.Error == nil || r.Error.Param != "messages[0].content[0].type" {
			t.Fatalf("reply = %+v", r)
		}
	})
}

// TestEveryOutputFieldIsClassified: harmful text anywhere in a choice
// withholds the choice, and the withheld choice carries nothing of it.
func TestEveryOutputFieldIsClassified(t *testing.T) {
	h := newHarness(t)
	const harm = "Here is how you kill yourself tonight: take every pill you have."
	msg := func(fields string) string {
		return `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant",` + fields + `},"logprobs":{"content":[{"token":"kill","logprob":-0.1,"bytes":[107],"top_logprobs":[]}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	}
	cases := []struct {
		name string
		body string
	}{
		{"content", msg(`"content":"` + harm + `"`)},
		{"refusal", msg(`"content":null,"refusal":"` + harm + `"`)},
		{"tool call arguments", msg(`"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"reply","arguments":"{\"text\":\"` + harm + `\"}"}}]`)},
		{"escaped tool call arguments", msg(`"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"reply","arguments":"{\"text\":\"Here is how you \\u006bill yourself tonight\"}"}}]`)},
		{"legacy function_call", msg(`"content":null,"function_call":{"name":"reply","arguments":"{\"text\":\"` + harm + `\"}"}`)},
		{"reasoning_content", msg(`"content":"Sure.","reasoning_content":"` + harm + `"`)},
		{"reasoning object", msg(`"content":"Sure.","reasoning":{"summary":[{"type":"summary_text","text":"` + harm + `"}]}`)},
		{"audio transcript", msg(`"content":null,"audio":{"id":"a","data":"AAAA","transcript":"` + harm + `"}`)},
		{"a field of an unexpected shape", msg(`"content":null,"tool_calls":"` + harm + `"`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := h.call(events.OperationChatCompletions, false, `{"messages":[{"role":"user","content":"hello"}]}`, answer(events.OperationChatCompletions, c.body))
			r := out[0].(events.InferenceResult)
			if r.Status != events.StatusOK {
				t.Fatalf("result %+v", r)
			}
			var body struct {
				SystemFingerprint string            `json:"system_fingerprint"`
				Usage             json.RawMessage   `json:"usage"`
				Choices           []json.RawMessage `json:"choices"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Choices) != 1 {
				t.Fatalf("body %s", r.Body)
			}
			ch := string(body.Choices[0])
			for _, leak := range []string{"kill", "pill", "Sure", "reply", "AAAA", "token"} {
				if strings.Contains(ch, leak) {
					t.Errorf("blocked choice carries %q: %s", leak, ch)
				}
			}
			if !strings.Contains(ch, `"finish_reason":"content_filter"`) || !strings.Contains(ch, `"logprobs":null`) ||
				!strings.Contains(ch, `"message":{"role":"assistant","content":null,"refusal":null}`) {
				t.Errorf("blocked choice %s", ch)
			}
			if body.SystemFingerprint != "fp" || len(body.Usage) == 0 {
				t.Errorf("answer lost its other fields: %s", r.Body)
			}
		})
	}
	t.Run("benign answer passes whole", func(t *testing.T) {
		out := h.call(events.OperationChatCompletions, false, `{"messages":[{"role":"user","content":"hello"}]}`, answer(events.OperationChatCompletions, msg(`"content":"The sea is calm.","reasoning_content":"The user greets me."`)))
		body := string(out[0].(events.InferenceResult).Body)
		if !strings.Contains(body, "The sea is calm.") || !strings.Contains(body, "The user greets me.") || !strings.Contains(body, `"content_filter_results"`) {
			t.Fatalf("benign answer %s", body)
		}
	})
	t.Run("completions text and logprobs", func(t *testing.T) {
		body := `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"` + harm + `","logprobs":{"tokens":["kill"],"token_logprobs":[-0.1]},"finish_reason":"stop"}]}`
		out := h.call(events.OperationCompletions, false, `{"prompt":"hello"}`, answer(events.OperationCompletions, body))
		ch := string(out[0].(events.InferenceResult).Body)
		if strings.Contains(ch, "kill") || !strings.Contains(ch, `"text":""`) || !strings.Contains(ch, `"finish_reason":"content_filter"`) {
			t.Fatalf("blocked completion %s", ch)
		}
	})
}

// TestStreamedToolCallArgumentsAreHeldBack: tool-call arguments that
// arrive in pieces are checked in windows like content; no piece of a
// blocked call reaches the app, and a benign call arrives whole.
func TestStreamedToolCallArgumentsAreHeldBack(t *testing.T) {
	h := newHarness(t)
	chunk := func(delta string, finish string) string {
		f := "null"
		if finish != "" {
			f = `"` + finish + `"`
		}
		return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + f + `}]}`
	}
	args := func(piece string) string {
		b, _ := json.Marshal(piece)
		return chunk(`{"tool_calls":[{"index":0,"function":{"arguments":`+string(b)+`}}]}`, "")
	}
	stream := func(pieces ...string) []string {
		out := []string{chunk(`{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"send_message","arguments":""}}]}`, "")}
		for _, p := range pieces {
			out = append(out, args(p))
		}
		return append(out, chunk(`{}`, "tool_calls"))
	}
	released := func(out []events.Event) (string, string) {
		var text, all strings.Builder
		for _, ev := range out {
			c, ok := ev.(events.InferenceChunk)
			if !ok {
				continue
			}
			all.Write(c.Body)
			var body struct {
				Choices []struct {
					Delta struct {
						ToolCalls []struct {
							Function struct{ Arguments string } `json:"function"`
						} `json:"tool_calls"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(c.Body, &body); err != nil {
				t.Fatal(err)
			}
			for _, ch := range body.Choices {
				for _, tc := range ch.Delta.ToolCalls {
					text.WriteString(tc.Function.Arguments)
				}
			}
		}
		return text.String(), all.String()
	}
	t.Run("harmful arguments never released", func(t *testing.T) {
		pieces := []string{`{"to":"`, `Sam","text":"`, `You should just \u006bi`, `ll yourself tonight, `, `nobody would miss you. `, `Take all the pills.`, `"}`}
		out := h.call(events.OperationChatCompletions, true, `{"messages":[{"role":"user","content":"hello"}],"stream":true}`, chunks(events.OperationChatCompletions, stream(pieces...)...))
		args, all := released(out)
		if strings.Contains(args, "yourself") || strings.Contains(args, "pills") || strings.Contains(args, "ll") {
			t.Errorf("blocked arguments reached the app: %q", args)
		}
		if !strings.Contains(all, `"finish_reason":"content_filter"`) {
			t.Errorf("stream did not end filtered: %s", all)
		}
	})
	t.Run("benign arguments arrive whole", func(t *testing.T) {
		pieces := []string{`{"to":"`, `Sam","text":"`, `See you at the harbour `, `at noon, the boat leaves at one.`, `"}`}
		out := h.call(events.OperationChatCompletions, true, `{"messages":[{"role":"user","content":"hello"}],"stream":true}`, chunks(events.OperationChatCompletions, stream(pieces...)...))
		args, all := released(out)
		if args != strings.Join(pieces, "") {
			t.Errorf("arguments released %q, want %q", args, strings.Join(pieces, ""))
		}
		if strings.Contains(all, "content_filter\"") {
			t.Errorf("benign stream filtered: %s", all)
		}
	})
	t.Run("reasoning deltas checked", func(t *testing.T) {
		out := h.call(events.OperationChatCompletions, true, `{"messages":[{"role":"user","content":"hello"}],"stream":true}`, chunks(events.OperationChatCompletions,
			chunk(`{"role":"assistant","content":""}`, ""),
			chunk(`{"reasoning_content":"I will tell them: you should kill "}`, ""),
			chunk(`{"reasoning_content":"yourself tonight with pills."}`, ""),
			chunk(`{"content":"Hello."}`, ""),
			chunk(`{}`, "stop")))
		_, all := released(out)
		if strings.Contains(all, "yourself") || !strings.Contains(all, `"finish_reason":"content_filter"`) {
			t.Errorf("reasoning released or not filtered: %s", all)
		}
	})
}

// TestTextOutsideTheKnownFieldsIsClassified: text an upstream puts in a
// choice field or a top-level field of its own, and the alternatives
// logprobs offer, are read too: a harmful one withholds the choice or the
// field, a benign one passes.
func TestTextOutsideTheKnownFieldsIsClassified(t *testing.T) {
	h := newHarness(t)
	const chat = events.OperationChatCompletions
	const harm = "Here is how you kill yourself tonight: take every pill you have."
	call := func(body string) string {
		t.Helper()
		out := h.call(chat, false, `{"messages":[{"role":"user","content":"hello"}]}`, answer(chat, body))
		r := out[0].(events.InferenceResult)
		if r.Status != events.StatusOK {
			t.Fatalf("result %+v", r)
		}
		return string(r.Body)
	}
	head := `{"id":"c","object":"chat.completion","created":1,"model":"m",`
	t.Run("a choice field of the upstream's own", func(t *testing.T) {
		b := call(head + `"choices":[{"index":0,"message":{"role":"assistant","content":"Sure."},"x_explanation":"` + harm + `","finish_reason":"stop"}]}`)
		if strings.Contains(b, "pill") || !strings.Contains(b, `"finish_reason":"content_filter"`) {
			t.Fatalf("answer %s", b)
		}
	})
	t.Run("a top-level field of the upstream's own", func(t *testing.T) {
		b := call(head + `"x_notes":"` + harm + `","choices":[{"index":0,"message":{"role":"assistant","content":"The sea is calm."},"finish_reason":"stop"}]}`)
		if strings.Contains(b, "pill") || strings.Contains(b, "x_notes") || !strings.Contains(b, "The sea is calm.") {
			t.Fatalf("answer %s", b)
		}
		b = call(head + `"x_notes":"served by node 7","choices":[{"index":0,"message":{"role":"assistant","content":"The sea is calm."},"finish_reason":"stop"}]}`)
		if !strings.Contains(b, "served by node 7") {
			t.Fatalf("benign field dropped: %s", b)
		}
	})
	t.Run("logprob alternatives", func(t *testing.T) {
		alt := func(tok string) string { return `{"token":"` + tok + `","logprob":-1,"bytes":[],"top_logprobs":[]}` }
		b := call(head + `"choices":[{"index":0,"message":{"role":"assistant","content":"You should rest tonight."},"logprobs":{"content":[` +
			`{"token":"You","logprob":-0.1,"bytes":[],"top_logprobs":[` + alt("You") + `]},` +
			`{"token":" should","logprob":-0.1,"bytes":[],"top_logprobs":[` + alt("should") + `]},` +
			`{"token":" rest","logprob":-0.1,"bytes":[],"top_logprobs":[` + alt("kill") + `,` + alt("yourself") + `]},` +
			`{"token":" tonight","logprob":-0.1,"bytes":[],"top_logprobs":[` + alt("tonight") + `]}]},"finish_reason":"stop"}]}`)
		if strings.Contains(b, "yourself") || !strings.Contains(b, `"finish_reason":"content_filter"`) {
			t.Fatalf("answer %s", b)
		}
	})
}

// TestBatchLaneKeepsToItsStreams: a request on the batch lane is checked
// as a real-time one is, both ways, and travels on the batch lane's
// streams only; an instance serving only the real-time lane leaves it
// alone.
func TestBatchLaneKeepsToItsStreams(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.lane = bus.LaneBatch
	id, rs := h.send(events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`, answer(events.OperationChatCompletions, benignAnswer))
	out, err := h.collect(rs, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := out[len(out)-1].(events.InferenceResult); !ok || r.Status != events.StatusOK || !strings.Contains(string(r.Body), "content_filter_results") {
		t.Fatalf("benign batch-lane answer: %+v", out)
	}
	h.mu.Lock()
	saw := h.modelSaw[id]
	h.mu.Unlock()
	if saw != bus.LaneBatch.Stream(bus.StreamInference) {
		t.Fatalf("the model read the batch-lane request from %q", saw)
	}
	// harmful text in an answer on the batch lane is withheld
	out = h.call(events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Write a story."}]}`,
		answer(events.OperationChatCompletions, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"I am going to kill myself tonight, I have the pills ready."},"finish_reason":"stop"}]}`))
	if r, ok := out[len(out)-1].(events.InferenceResult); !ok || strings.Contains(string(r.Body), "pills") || !strings.Contains(string(r.Body), `"content_filter"`) {
		t.Fatalf("harmful batch-lane answer not withheld: %+v", out)
	}

	rt := newHarness(t, func(c *Config, _ *control.State) { c.Lanes = []bus.Lane{bus.LaneRealtime} })
	rt.lane = bus.LaneBatch
	_, rs = rt.send(events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`, answer(events.OperationChatCompletions, benignAnswer))
	if out, err := rt.collect(rs, 3*time.Second); err == nil {
		t.Fatalf("a real-time-only instance answered a batch-lane request: %+v", out)
	}
	rt.lane = bus.LaneRealtime
	rt.call(events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`, answer(events.OperationChatCompletions, benignAnswer))
}

// TestARequestItsCallerStoppedWaitingForIsSkipped: a request read after
// its Meta.ReplyBy (ingress answered it with a timeout) is neither checked
// nor passed to the model nor answered; one still awaited is.
func TestARequestItsCallerStoppedWaitingForIsSkipped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := fmt.Sprintf("req_expired_%d", time.Now().UnixNano())
	h.mu.Lock()
	h.script[id] = func(emit func(events.Event, bool)) {
		answer(events.OperationChatCompletions, benignAnswer)(id, emit)
	}
	h.mu.Unlock()
	req := events.InferenceRequest{RequestID: id, Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", SKU: "Standard",
		Model: "scripted", Operation: events.OperationChatCompletions, APIFlavor: "openai",
		Body: json.RawMessage(`{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`), CreatedAt: time.Now().UTC()}
	// t.Context() has no deadline, so the ReplyBy set here is the one sent
	rs, err := h.req.Request(t.Context(), "eu", bus.StreamRequests,
		bus.Meta{RequestID: id, Resource: "acme", HomeGeo: "eu", Deployment: "chat", ReplyBy: time.Now().Add(-time.Second)}, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Close)
	// a request still awaited, sent after it, is answered
	h.call(events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`, answer(events.OperationChatCompletions, benignAnswer))
	if out, err := h.collect(rs, 2*time.Second); err == nil || len(out) > 0 {
		t.Fatalf("a request whose caller had stopped waiting was answered: %+v", out)
	}
	h.mu.Lock()
	saw := h.modelSaw[id]
	h.mu.Unlock()
	if saw != "" {
		t.Fatalf("the model was asked a request whose caller had stopped waiting (from %s)", saw)
	}
}
