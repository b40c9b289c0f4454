package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/inference/builtin"
	"github.com/terroir-ai/terroir/services/inference/worker"
)

var loadModel = sync.OnceValues(builtin.Load)

// completions collects what the worker publishes on eu.completions, per
// request ID.
type completions struct {
	mu     sync.Mutex
	byID   map[string][]*bus.Delivery
	usage  map[string]events.UsageRecord
	report []events.CapacityReport
}

func startWorker(t *testing.T) (*bus.Bus, *completions) {
	t.Helper()
	return startWorkerOn(t, nil)
}

// startWorkerOn starts a worker serving lanes (nil: both).
func startWorkerOn(t *testing.T, lanes []bus.Lane) (*bus.Bus, *completions) {
	t.Helper()
	m, err := loadModel()
	if err != nil {
		t.Fatal(err)
	}
	b := bustest.New(t).Bus(t, bustest.Options{Geos: []string{"eu"}})
	cat, err := catalog.Load(bustest.RepoFile(t, "deployments/catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bi := &worker.Builtin{Model: m}
	w, err := worker.New(worker.Config{Bus: b, Catalog: cat, Backends: map[string]worker.Backend{"terroir-ngram": bi, "terroir-embed": bi},
		Geos: []string{"eu"}, Instance: "w1", TokensPerMinute: 1000, ReportEvery: 100 * time.Millisecond, Lanes: lanes, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	got := &completions{byID: map[string][]*bus.Delivery{}, usage: map[string]events.UsageRecord{}}
	c, err := b.NewConsumer(bus.ConsumerConfig{Group: "observer", Streams: []string{bus.StreamCompletions, bus.LaneBatch.Stream(bus.StreamCompletions), bus.StreamUsage, bus.StreamCapacity}, Geos: []string{"eu"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			got.mu.Lock()
			defer got.mu.Unlock()
			switch d.Stream {
			case bus.StreamCompletions, bus.LaneBatch.Stream(bus.StreamCompletions):
				got.byID[d.Meta.RequestID] = append(got.byID[d.Meta.RequestID], d)
			case bus.StreamUsage:
				var u events.UsageRecord
				if err := d.Decode(ctx, &u); err != nil {
					return err
				}
				got.usage[u.RequestID] = u
			case bus.StreamCapacity:
				var r events.CapacityReport
				if err := d.Decode(ctx, &r); err != nil {
					return err
				}
				got.report = append(got.report, r)
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	wg.Go(func() { _ = c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return b, got
}

func (c *completions) wait(t *testing.T, id string) []*bus.Delivery {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		ds := c.byID[id]
		done := len(ds) > 0 && ds[len(ds)-1].Meta.Final
		c.mu.Unlock()
		if done {
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no final completion within 30 s (%d records)", id, len(ds))
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func send(t *testing.T, b *bus.Bus, id string, op events.Operation, stream bool, body string) {
	t.Helper()
	sendOn(t, b, bus.LaneRealtime, id, op, stream, body)
}

func sendOn(t *testing.T, b *bus.Bus, lane bus.Lane, id string, op events.Operation, stream bool, body string) {
	t.Helper()
	req := events.InferenceRequest{RequestID: id, Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", SKU: events.SKUStandard,
		Model: "terroir-ngram", Operation: op, Stream: stream, APIFlavor: events.APIFlavorOpenAI, Body: json.RawMessage(body), CreatedAt: time.Now()}
	if op == events.OperationEmbeddings {
		req.Model = "terroir-embed"
	}
	meta := bus.Meta{RequestID: id, Resource: "acme", HomeGeo: "eu", Deployment: "chat", ReplyTo: "somewhere/0/ingress-1"}
	if err := b.Publish(t.Context(), "eu", lane.Stream(bus.StreamInference), meta, req); err != nil {
		t.Fatal(err)
	}
}

// TestBatchLaneAnswersOnItsOwnStream: a request read from the batch
// lane's stream is answered on the batch lane's completions, chunks and
// result alike, and one from the real-time lane on the real-time one.
func TestBatchLaneAnswersOnItsOwnStream(t *testing.T) {
	t.Parallel()
	b, got := startWorker(t)
	body := `{"model":"chat","max_tokens":8,"messages":[{"role":"user","content":"Tell me about the sea."}]}`
	sendOn(t, b, bus.LaneBatch, "req-batch", events.OperationChatCompletions, true, body)
	send(t, b, "req-rt", events.OperationChatCompletions, false, body)
	for id, want := range map[string]string{"req-batch": bus.LaneBatch.Stream(bus.StreamCompletions), "req-rt": bus.StreamCompletions} {
		ds := got.wait(t, id)
		for _, d := range ds {
			if d.Stream != want {
				t.Errorf("%s: a record on %s, want %s", id, d.Stream, want)
			}
		}
		if r := result(t, ds[len(ds)-1]); r.Status != events.StatusOK {
			t.Errorf("%s: %+v", id, r)
		}
	}
}

func result(t *testing.T, d *bus.Delivery) events.InferenceResult {
	t.Helper()
	var r events.InferenceResult
	if err := d.Decode(t.Context(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestWorkerAnswersOnTheCompletionsTopic(t *testing.T) {
	t.Parallel()
	b, got := startWorker(t)
	send(t, b, "chat-1", events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":20,"seed":7,"n":2}`)
	send(t, b, "chat-2", events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":20,"seed":7,"n":2}`)
	send(t, b, "stream-1", events.OperationChatCompletions, true, `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":40,"stream":true,"seed":7}`)
	send(t, b, "embed-1", events.OperationEmbeddings, false, `{"model":"embed","input":["whale","sea"],"dimensions":8,"encoding_format":"base64"}`)
	send(t, b, "bad-1", events.OperationChatCompletions, false, `{"model":"chat","messages":[{"role":"user","content":"x"}],"max_tokens":100000}`)

	one := got.wait(t, "chat-1")
	if len(one) != 1 || one[0].Meta.ReplyTo != "somewhere/0/ingress-1" || one[0].Meta.Resource != "acme" {
		t.Fatalf("non-streamed answer: %d records, meta %+v", len(one), one[0].Meta)
	}
	r1, r2 := result(t, one[0]), result(t, got.wait(t, "chat-2")[0])
	var body struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Role, Content string } `json:"message"`
			Finish  string                         `json:"finish_reason"`
		} `json:"choices"`
		Usage events.Usage `json:"usage"`
	}
	if err := json.Unmarshal(r1.Body, &body); err != nil || body.Object != "chat.completion" || len(body.Choices) != 2 || body.Choices[0].Message.Role != "assistant" ||
		body.Choices[0].Message.Content == "" || body.Usage.CompletionTokens == 0 || *r1.Usage != body.Usage {
		t.Fatalf("chat answer = %s (%v)", r1.Body, err)
	}
	if string(r1.Body) == "" || !strings.Contains(string(r2.Body), body.Choices[0].Message.Content) {
		t.Fatalf("the same seed gave different output")
	}

	st := got.wait(t, "stream-1")
	var text strings.Builder
	for i, d := range st[:len(st)-1] {
		var c events.InferenceChunk
		if err := d.Decode(t.Context(), &c); err != nil || d.Meta.Seq != i {
			t.Fatalf("chunk %d: seq %d, %v", i, d.Meta.Seq, err)
		}
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(c.Body, &ch)
		if ch.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %d = %s", i, c.Body)
		}
		text.WriteString(ch.Choices[0].Delta.Content)
	}
	if fin := result(t, st[len(st)-1]); len(st) < 3 || fin.Status != events.StatusOK || fin.Usage == nil || text.Len() == 0 {
		t.Fatalf("stream: %d records, final %+v", len(st), fin)
	}

	emb := result(t, got.wait(t, "embed-1")[0])
	var list struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(emb.Body, &list); err != nil || len(list.Data) != 2 {
		t.Fatalf("embeddings = %s", emb.Body)
	}
	if raw, err := base64.StdEncoding.DecodeString(list.Data[0].Embedding); err != nil || len(raw) != 8*4 {
		t.Fatalf("base64 embedding of %d bytes (%v), want 32", len(raw), err)
	}

	bad := result(t, got.wait(t, "bad-1")[0])
	if bad.Status != events.StatusError || bad.Error == nil || bad.Error.Kind != events.ErrorInvalidRequest || bad.Error.Param != "max_tokens" {
		t.Fatalf("bad request = %+v %+v", bad, bad.Error)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		got.mu.Lock()
		u, ok := got.usage["chat-1"]
		var inUse int64
		for _, r := range got.report {
			if r.Model == "terroir-ngram" && r.TokensPerMinuteInUse > inUse {
				inUse = r.TokensPerMinuteInUse
			}
		}
		got.mu.Unlock()
		if ok && inUse > 0 {
			if u.Resource != "acme" || u.TotalTokens != r1.Usage.TotalTokens || u.SKU != events.SKUStandard {
				t.Fatalf("usage record = %+v", u)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %v or capacity in use %d missing", ok, inUse)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// TestEachRunNamesItsAttempt: the chunks and the result of one run of a
// request carry one attempt name, and running the same request again (a
// redelivery) names a new one, so content safety can tell the two
// answers apart.
func TestEachRunNamesItsAttempt(t *testing.T) {
	t.Parallel()
	b, got := startWorker(t)
	const body = `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":12,"stream":true,"seed":7}`
	send(t, b, "twice-1", events.OperationChatCompletions, true, body)
	first := len(got.wait(t, "twice-1"))
	send(t, b, "twice-1", events.OperationChatCompletions, true, body)
	var all []*bus.Delivery
	deadline := time.Now().Add(30 * time.Second)
	for {
		got.mu.Lock()
		all = append(all[:0], got.byID["twice-1"]...)
		got.mu.Unlock()
		if len(all) > first && all[len(all)-1].Meta.Final {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second run did not finish (%d records)", len(all))
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	attempts := make([]string, len(all))
	for i, d := range all {
		var ev struct {
			Attempt string `json:"attempt"`
		}
		if err := d.Decode(t.Context(), &ev); err != nil {
			t.Fatal(err)
		}
		attempts[i] = ev.Attempt
	}
	for i, a := range attempts {
		run := attempts[0]
		if i >= first {
			run = attempts[first]
		}
		if a == "" || a != run {
			t.Fatalf("record %d names attempt %q, its run %q (all: %v)", i, a, run, attempts)
		}
	}
	if attempts[0] == attempts[first] {
		t.Fatalf("both runs name attempt %q", attempts[0])
	}
}

// TestResultCarriesThePromptCheckBack: whatever the outcome, the final
// result carries back content safety's check of the prompt (and its
// filter results), and the prompt itself only when the check says it is
// logged, so the output stage can write the request's one record.
func TestResultCarriesThePromptCheckBack(t *testing.T) {
	t.Parallel()
	b, got := startWorker(t)
	check := func(log bool) *events.PromptCheck {
		return &events.PromptCheck{Log: log, Signal: events.Findings{ContentHash: strings.Repeat("ab", 32), At: time.Now().UTC()}}
	}
	const chat = `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":8}`
	cases := []struct {
		name, model, body string
		stream            bool
		check             *events.PromptCheck
		status            events.Status
	}{
		{"logged", "terroir-ngram", chat, false, check(true), events.StatusOK},
		{"not logged", "terroir-ngram", chat, false, check(false), events.StatusOK},
		{"streamed", "terroir-ngram", `{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}],"max_tokens":8,"stream":true}`, true, check(true), events.StatusOK},
		{"failed", "terroir-ngram", `{"model":"chat","messages":[{"role":"user","content":"x"}],"max_tokens":100000}`, false, check(true), events.StatusError},
		{"unknown model", "nope", chat, false, check(true), events.StatusError},
		{"no check", "terroir-ngram", chat, false, nil, events.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "check-" + strings.ReplaceAll(c.name, " ", "-")
			req := events.InferenceRequest{RequestID: id, Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", SKU: events.SKUStandard,
				Model: c.model, Operation: events.OperationChatCompletions, Stream: c.stream, APIFlavor: events.APIFlavorOpenAI, Body: json.RawMessage(c.body),
				PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{}}]`), PromptCheck: c.check, CreatedAt: time.Now()}
			if err := b.Publish(t.Context(), "eu", bus.StreamInference, bus.Meta{RequestID: id, Resource: "acme", HomeGeo: "eu", Deployment: "chat", ReplyTo: "somewhere/0/ingress-1"}, req); err != nil {
				t.Fatal(err)
			}
			ds := got.wait(t, id)
			r := result(t, ds[len(ds)-1])
			if r.Status != c.status {
				t.Fatalf("status %s, want %s (%+v)", r.Status, c.status, r.Error)
			}
			if string(r.PromptFilterResults) != string(req.PromptFilterResults) {
				t.Errorf("prompt_filter_results %s", r.PromptFilterResults)
			}
			if c.check == nil {
				if r.PromptCheck != nil || len(r.Prompt) > 0 {
					t.Errorf("result carries a check %+v or a prompt %s it was not given", r.PromptCheck, r.Prompt)
				}
				return
			}
			if r.PromptCheck == nil || r.PromptCheck.Signal.ContentHash != c.check.Signal.ContentHash || r.PromptCheck.Log != c.check.Log {
				t.Errorf("prompt check %+v, want %+v", r.PromptCheck, c.check)
			}
			if logged := len(r.Prompt) > 0; logged != c.check.Log || (logged && string(r.Prompt) != c.body) {
				t.Errorf("prompt %s, logged %v", r.Prompt, c.check.Log)
			}
			for _, d := range ds[:len(ds)-1] {
				if strings.Contains(string(d.Record.Value), "prompt_check") {
					t.Errorf("a chunk carries the check")
				}
			}
		})
	}
}

// TestBatchLaneInstanceReportsNoCapacity: an instance of the batch lane
// alone answers batch-lane requests but publishes no capacity reports
// (they are what real time uses); one serving real time does.
func TestBatchLaneInstanceReportsNoCapacity(t *testing.T) {
	t.Parallel()
	b, got := startWorkerOn(t, []bus.Lane{bus.LaneBatch})
	sendOn(t, b, bus.LaneBatch, "req-lane", events.OperationChatCompletions, false, `{"model":"chat","max_tokens":4,"messages":[{"role":"user","content":"Hello."}]}`)
	got.wait(t, "req-lane")
	time.Sleep(500 * time.Millisecond) // five report intervals
	got.mu.Lock()
	n := len(got.report)
	got.mu.Unlock()
	if n != 0 {
		t.Fatalf("a batch-lane instance published %d capacity reports", n)
	}
}

// TestARequestItsCallerStoppedWaitingForIsNotAnswered: a request read
// after its Meta.ReplyBy is not given to the model; its result says so
// (carrying content safety's check back, so the request is still
// recorded), and no usage is metered.
func TestARequestItsCallerStoppedWaitingForIsNotAnswered(t *testing.T) {
	t.Parallel()
	b, got := startWorker(t)
	req := events.InferenceRequest{RequestID: "late-1", Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat", SKU: events.SKUStandard,
		Model: "terroir-ngram", Operation: events.OperationChatCompletions, APIFlavor: events.APIFlavorOpenAI,
		Body: json.RawMessage(`{"model":"chat","messages":[{"role":"user","content":"Tell me about the sea."}]}`), CreatedAt: time.Now(),
		PromptCheck: &events.PromptCheck{Log: true}}
	meta := bus.Meta{RequestID: "late-1", Resource: "acme", HomeGeo: "eu", Deployment: "chat", ReplyTo: "somewhere/0/ingress-1", ReplyBy: time.Now().Add(-time.Second)}
	if err := b.Publish(t.Context(), "eu", bus.StreamInference, meta, req); err != nil {
		t.Fatal(err)
	}
	send(t, b, "awaited-1", events.OperationChatCompletions, false, `{"model":"chat","max_tokens":4,"messages":[{"role":"user","content":"Tell me about the sea."}]}`)
	ds := got.wait(t, "late-1")
	r := result(t, ds[len(ds)-1])
	if r.Status != events.StatusError || r.Error == nil || r.Error.Kind != events.ErrorTimeout || len(r.Body) > 0 || r.PromptCheck == nil {
		t.Fatalf("result of a request nobody waits for: %+v", r)
	}
	if r := result(t, got.wait(t, "awaited-1")[0]); r.Status != events.StatusOK {
		t.Fatalf("awaited request: %+v", r)
	}
	// the late request's usage would have gone out with the awaited one's
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got.mu.Lock()
		_, awaited := got.usage["awaited-1"]
		_, metered := got.usage["late-1"]
		got.mu.Unlock()
		if metered {
			t.Fatal("usage metered for a request the model was not asked")
		}
		if awaited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no usage of the awaited request")
		}
	}
}
