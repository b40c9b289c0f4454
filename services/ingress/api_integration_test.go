package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/daemon/daemontest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// responder answers requests the way the filtered path does (a stream's
// prompt verdict, then output; a non-streamed answer in one reply), so the REST edge can be tested on its own: it is
// a participant on the real bus, not a stand-in for ingress's own parts.
type responder struct {
	bus  *bus.Bus
	mu   sync.Mutex
	seen map[string]events.InferenceRequest
}

func (rp *responder) request(id string) (events.InferenceRequest, bool) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	r, ok := rp.seen[id]
	return r, ok
}

const verdict = `{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}`

const blockedBody = `{"error":{"message":"The response was filtered due to the prompt triggering the content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"sexual":{"filtered":true,"severity":"medium"}}}}}`

// startResponder consumes the requests topics of s's namespace.
func startResponder(t *testing.T, s *daemontest.Service) *responder {
	t.Helper()
	rp := &responder{seen: map[string]events.InferenceRequest{}}
	b := busOf(t, s, "responder")
	rp.bus = b
	c, err := b.NewConsumer(bus.ConsumerConfig{Group: "responder", Streams: []string{bus.StreamRequests}, Geos: []string{"eu", "us"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			var req events.InferenceRequest
			if err := d.Decode(ctx, &req); err != nil {
				return err
			}
			rp.mu.Lock()
			rp.seen[req.RequestID] = req
			rp.mu.Unlock()
			if strings.Contains(string(req.Body), "SILENCE") {
				return nil
			}
			if strings.Contains(string(req.Body), "DELAY") { // a model slower than the write timeout
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if strings.Contains(string(req.Body), "FLOOD") && req.Stream { // more output than a stalled client's buffers hold
				if err := b.Reply(ctx, d, 0, false, events.InferenceChunk{RequestID: req.RequestID, Body: json.RawMessage(verdict), CreatedAt: time.Now()}); err != nil {
					return err
				}
				word := strings.Repeat("x", 200<<10)
				const chunks = 48
				for i := 1; i <= chunks; i++ {
					chunk := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"chat","choices":[{"index":0,"delta":{"content":"` + word + `"},"finish_reason":null}]}`
					if err := b.Reply(ctx, d, i, false, events.InferenceChunk{RequestID: req.RequestID, Seq: i, Body: json.RawMessage(chunk), CreatedAt: time.Now()}); err != nil {
						return err
					}
				}
				return b.Reply(ctx, d, chunks+1, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, CreatedAt: time.Now()})
			}
			if strings.Contains(string(req.Body), "BLOCKME") {
				return b.Reply(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusFiltered,
					Body: json.RawMessage(blockedBody), CreatedAt: time.Now()})
			}
			usage := &events.Usage{PromptTokens: 5, CompletionTokens: 2, TotalTokens: 7}
			if req.Stream {
				if err := b.Reply(ctx, d, 0, false, events.InferenceChunk{RequestID: req.RequestID, Body: json.RawMessage(verdict), CreatedAt: time.Now()}); err != nil {
					return err
				}
				for i, word := range []string{"Hello", " there"} {
					chunk := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"chat","choices":[{"index":0,"delta":{"content":"` + word + `"},"finish_reason":null}]}`
					if err := b.Reply(ctx, d, i+1, false, events.InferenceChunk{RequestID: req.RequestID, Seq: i + 1, Body: json.RawMessage(chunk), CreatedAt: time.Now()}); err != nil {
						return err
					}
				}
				return b.Reply(ctx, d, 3, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Usage: usage, CreatedAt: time.Now()})
			}
			// A non-streamed answer is one reply that carries the verdict.
			body := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"chat","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7},"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}`
			if req.Operation == events.OperationEmbeddings { // embeddings carry no prompt_filter_results
				body = `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"model":"embed","usage":{"prompt_tokens":1,"total_tokens":1}}`
			}
			return b.Reply(ctx, d, 0, true, events.InferenceResult{RequestID: req.RequestID, Status: events.StatusOK, Body: json.RawMessage(body), Usage: usage, CreatedAt: time.Now()})
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rp
}

// busOf joins the bus of s as another participant named instance.
func busOf(t *testing.T, s *daemontest.Service, instance string) *bus.Bus {
	t.Helper()
	w, err := keys.LoadKeyFile(s.Env["TERROIR_KEY_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	defs, err := bus.LoadTopicDefs(s.Env["TERROIR_TOPICS_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	brokers := strings.Split(s.Env["TERROIR_KAFKA_BROKERS"], ",")
	b, err := bus.New(t.Context(), bus.Config{Namespace: s.Env["TERROIR_KAFKA_NAMESPACE"], InstanceID: instance,
		Brokers: map[string][]string{"eu": brokers, "us": brokers}, Topics: defs, KeyWrapper: w})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// appSetup starts ingress with a responder, a resource in eu and its
// deployments, and returns the app's key.
func appSetup(t *testing.T, extra map[string]string) (client, *daemontest.Service, *responder, string) {
	t.Helper()
	env := map[string]string{"TERROIR_OPERATOR_TOKEN": operatorToken, "TERROIR_MAX_BODY_BYTES": "2048"}
	for k, v := range extra {
		env[k] = v
	}
	s := daemontest.Start(t, run, env)
	a := client{t: t, base: "http://" + s.Env["TERROIR_HTTP_ADDR"]}
	rp := startResponder(t, s)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
	small := deploymentBody("terroir-ngram", "Standard")
	small["sku"].(map[string]any)["capacity"] = 1
	a.op("PUT", "/mgmt/resources/acme/deployments/small", small, http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/deployments/embed", deploymentBody("terroir-embed", "Standard"), http.StatusCreated)
	key := a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK).body["key1"].(string)
	return a, s, rp, key
}

func chatBody(model, text string, extra string) string {
	b := `{"model":"` + model + `","messages":[{"role":"user","content":"` + text + `"}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

func TestAppRequestsTravelTheBusAndComeBack(t *testing.T) {
	t.Parallel()
	a, _, rp, key := appSetup(t, nil)

	r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "hi", ""))
	if r.status != http.StatusOK || r.body["object"] != "chat.completion" || r.body["prompt_filter_results"] == nil {
		t.Fatalf("chat = %d %s", r.status, r.raw)
	}
	id := r.header.Get("x-request-id")
	req, ok := rp.request(id)
	if !ok || req.Resource != "acme" || req.HomeGeo != "eu" || req.ProcessingGeo != "eu" || req.Deployment != "chat" ||
		req.Operation != events.OperationChatCompletions || req.APIFlavor != events.APIFlavorOpenAI || req.Model != "terroir-ngram" {
		t.Fatalf("request on the bus under the response's x-request-id %s: %+v", id, req)
	}
	if r.header.Get("x-ratelimit-remaining-requests") == "" || r.header.Get("x-ratelimit-remaining-tokens") == "" {
		t.Fatalf("rate-limit headers missing: %v", r.header)
	}

	// Azure paths.
	r = a.do("POST", "/openai/deployments/chat/chat/completions?api-version=2024-10-21", key, `{"messages":[{"role":"user","content":"hi"}]}`)
	if r.status != http.StatusOK {
		t.Fatalf("azure chat = %d %s", r.status, r.raw)
	}
	if req, _ := rp.request(r.header.Get("x-request-id")); req.APIFlavor != events.APIFlavorAzure || req.Deployment != "chat" {
		t.Fatalf("azure request = %+v", req)
	}
	if models := a.do("GET", "/v1/models", key, nil); len(models.body["data"].([]any)) != 3 {
		t.Fatalf("models = %s", models.raw)
	}
	r = a.do("POST", "/openai/v1/chat/completions", key, chatBody("chat", "hi", ""))
	if r.status != http.StatusOK {
		t.Fatalf("azure v1 chat = %d %s", r.status, r.raw)
	}
	r = a.do("POST", "/openai/deployments/embed/embeddings?api-version=2024-10-21", key, `{"input":"hi"}`)
	if r.status != http.StatusOK || r.body["prompt_filter_results"] != nil {
		t.Fatalf("embeddings = %d %s", r.status, r.raw)
	}

	// Refusals before the bus.
	cases := []struct {
		name, path, body   string
		status             int
		param, code, match string
	}{
		{"missing api-version", "/openai/deployments/chat/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "api-version", "invalid_value", "2024-10-21"},
		{"unsupported api-version", "/openai/deployments/chat/chat/completions?api-version=1999-01-01", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "api-version", "invalid_value", "not supported"},
		{"unknown deployment", "/openai/deployments/nope/chat/completions?api-version=2024-10-21", `{"messages":[{"role":"user","content":"hi"}]}`, 404, "", "DeploymentNotFound", "nope"},
		{"unknown model", "/v1/chat/completions", chatBody("gpt-9", "hi", ""), 404, "", "DeploymentNotFound", "gpt-9"},
		{"missing model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "model", "invalid_value", "model"},
		{"wrong operation", "/v1/embeddings", `{"model":"chat","input":"hi"}`, 400, "model", "OperationNotSupported", "embeddings"},
		{"malformed", "/v1/chat/completions", `{"model":`, 400, "body", "invalid_value", "JSON"},
		{"wrong type", "/v1/chat/completions", `{"model":"chat","messages":"hi"}`, 400, "messages", "invalid_value", "array"},
		{"unknown field", "/v1/chat/completions", chatBody("chat", "hi", `"temprature":1`), 400, "temprature", "invalid_value", "unknown"},
		{"range", "/v1/chat/completions", chatBody("chat", "hi", `"temperature":3`), 400, "temperature", "invalid_value", "0 to 2"},
		{"too large", "/v1/chat/completions", chatBody("chat", strings.Repeat("x", 3000), ""), 413, "body", "request_too_large", "limit"},
		{"content part the filter cannot read", "/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"hidden_text","hidden_text":"hi"}]}]}`, 400, "messages[0].content[1].type", "invalid_value", "content safety"},
		{"text part without text", "/v1/chat/completions", `{"model":"chat","messages":[{"role":"user","content":[{"type":"text"}]}]}`, 400, "messages[0].content[0].text", "invalid_value", "required"},
		{"malformed tool call", "/v1/chat/completions", `{"model":"chat","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":"x"}]}]}`, 400, "", "invalid_value", ""},
	}
	for _, c := range cases {
		r := a.do("POST", c.path, key, c.body)
		if r.status != c.status || (c.param != "" && r.errParam() != c.param) || r.errCode() != c.code || !strings.Contains(r.errMessage(), c.match) {
			t.Errorf("%s: %d %s", c.name, r.status, r.raw)
		}
	}
	if r := a.do("POST", "/v1/chat/completions", "0123456789abcdef0123456789abcdef", chatBody("chat", "hi", "")); r.status != http.StatusUnauthorized {
		t.Errorf("bad key = %d", r.status)
	}

	// A suspension decided in abuse review reaches ingress through the
	// control topic.
	spec, _ := json.Marshal(control.Enforcement{Resource: "acme", Action: "suspend", At: time.Now().UTC()})
	if err := rp.bus.Publish(t.Context(), "eu", bus.StreamControl, bus.Meta{Key: control.Key(events.ControlEnforcement, "acme", "acme")},
		events.ControlChange{Kind: events.ControlEnforcement, ID: "acme", Resource: "acme", Actor: "review", At: time.Now().UTC(), Spec: spec}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "suspension applied", func() bool {
		r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "hi", ""))
		return r.status == http.StatusForbidden && r.errCode() == "ResourceSuspended"
	})
	if models := a.do("GET", "/v1/models", key, nil); models.status != http.StatusForbidden {
		t.Fatalf("models of a suspended resource = %d", models.status)
	}
}

func TestBlockedPromptStreamingTimeoutAndRateLimit(t *testing.T) {
	t.Parallel()
	a, _, _, key := appSetup(t, map[string]string{"TERROIR_REQUEST_TIMEOUT": "1s"})

	r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "BLOCKME", ""))
	inner, _ := r.errField("innererror").(map[string]any)
	if r.status != http.StatusBadRequest || r.errCode() != "content_filter" || r.errParam() != "prompt" || inner["code"] != "ResponsibleAIPolicyViolation" {
		t.Fatalf("blocked prompt = %d %s", r.status, r.raw)
	}

	req, _ := http.NewRequest("POST", a.base+"/v1/chat/completions", strings.NewReader(chatBody("chat", "hi", `"stream":true,"stream_options":{"include_usage":true}`)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, line)
		}
	}
	if len(events) != 5 || !strings.Contains(events[0], "prompt_filter_results") || !strings.Contains(events[1], "Hello") ||
		!strings.Contains(events[3], `"usage"`) || events[4] != "[DONE]" {
		t.Fatalf("SSE events = %q", events)
	}

	if r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "SILENCE", "")); r.status != http.StatusGatewayTimeout || r.errCode() != "timeout" {
		t.Fatalf("unanswered request = %d %s", r.status, r.raw)
	}

	// Capacity 1: 6 requests and 1,000 tokens per minute.
	var limited reply
	for i := range 10 {
		r := a.do("POST", "/v1/chat/completions", key, chatBody("small", "hi", `"max_tokens":100`))
		if r.status == http.StatusTooManyRequests {
			limited = r
			if i < 6 {
				t.Fatalf("limited after %d requests", i)
			}
			break
		}
	}
	if limited.status != http.StatusTooManyRequests || limited.header.Get("Retry-After") == "" || limited.header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Fatalf("rate limit = %d %v %s", limited.status, limited.header, limited.raw)
	}
}

// TestTokenLimits: max_tokens and max_completion_tokens are capped by the
// model's limit in the catalog (terroir-ngram: 4096), n by 1..128, each
// refused with 400 naming the parameter; a request that could never fit
// the deployment's whole token budget gets 429 at once, saying so, and
// takes nothing from the budget of the requests that fit.
func TestTokenLimits(t *testing.T) {
	t.Parallel()
	a, _, _, key := appSetup(t, nil)
	cases := []struct {
		name, path, body string
		status           int
		param, match     string
	}{
		{"max_tokens over the model's limit", "/v1/chat/completions", chatBody("chat", "hi", `"max_tokens":4097`), 400, "max_tokens", "4096"},
		{"max_completion_tokens over the model's limit", "/v1/chat/completions", chatBody("chat", "hi", `"max_completion_tokens":5000`), 400, "max_completion_tokens", "4096"},
		{"completions max_tokens over the model's limit", "/v1/completions", `{"model":"chat","prompt":"hi","max_tokens":100000}`, 400, "max_tokens", "4096"},
		{"azure max_tokens over the model's limit", "/openai/deployments/chat/chat/completions?api-version=2024-10-21", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4097}`, 400, "max_tokens", "4096"},
		{"largest int max_tokens", "/v1/chat/completions", chatBody("chat", "hi", `"max_tokens":9223372036854775807`), 400, "max_tokens", "4096"},
		{"max_tokens beyond int64", "/v1/chat/completions", chatBody("chat", "hi", `"max_tokens":92233720368547758070`), 400, "max_tokens", "integer"},
		{"n too large", "/v1/chat/completions", chatBody("chat", "hi", `"n":129`), 400, "n", "128"},
		{"n zero", "/v1/chat/completions", chatBody("chat", "hi", `"n":0`), 400, "n", "128"},
		{"largest int n", "/v1/completions", `{"model":"chat","prompt":"hi","n":9223372036854775807,"max_tokens":4096}`, 400, "n", "128"},
		// capacity 10: 10,000 tokens per minute; 128 choices of 4,096
		{"every choice at the model's limit", "/v1/chat/completions", chatBody("chat", "hi", `"n":128,"max_tokens":4096`), 429, "", "10000 tokens per minute"},
		{"completions best_of at the model's limit", "/v1/completions", `{"model":"chat","prompt":"hi","best_of":20,"max_tokens":4000}`, 429, "", "10000 tokens per minute"},
		// capacity 1: 1,000 tokens per minute
		{"one answer over the whole budget", "/v1/chat/completions", chatBody("small", "hi", `"max_tokens":2000`), 429, "", "1000 tokens per minute"},
	}
	for _, c := range cases {
		r := a.do("POST", c.path, key, c.body)
		if r.status != c.status || (c.param != "" && r.errParam() != c.param) || !strings.Contains(r.errMessage(), c.match) {
			t.Errorf("%s: %d %s", c.name, r.status, r.raw)
		}
		if c.status == http.StatusTooManyRequests && (r.header.Get("Retry-After") != "" || !strings.Contains(r.errMessage(), "never")) {
			t.Errorf("%s: a request that can never fit says to retry: %v %s", c.name, r.header, r.raw)
		}
	}
	// The refused requests took nothing: the small deployment still has
	// its 6 requests and nearly all of its 1,000 tokens.
	for i := range 6 {
		r := a.do("POST", "/v1/chat/completions", key, chatBody("small", "hi", `"max_tokens":10`))
		if r.status != http.StatusOK {
			t.Fatalf("request %d within the budget after refusals = %d %s", i+1, r.status, r.raw)
		}
		if i == 0 {
			if left, _ := strconv.Atoi(r.header.Get("x-ratelimit-remaining-tokens")); left < 900 {
				t.Fatalf("tokens left after the refusals and one small request = %d", left)
			}
		}
	}
}

// TestRequestsOfADeletedResourceFailClosed: while a resource is being
// deleted (its keys shredded on another instance, its control records
// not yet gone here), a request for it is answered 410 with an
// OpenAI-shaped error and nothing reaches the bus; a resource created
// anew under the name works at once.
func TestRequestsOfADeletedResourceFailClosed(t *testing.T) {
	t.Parallel()
	a, s, _, key := appSetup(t, nil)
	if r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "hi", "")); r.status != http.StatusOK {
		t.Fatalf("before deletion = %d %s", r.status, r.raw)
	}
	deleting := busOf(t, s, "ingress-deleting")
	for _, g := range []string{"eu", "us"} {
		if err := deleting.Keys().Shred(t.Context(), g, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	// This instance learns of the shredding from the keys topic.
	waitFor(t, 5*time.Second, "the shredding reaches this instance", func() bool {
		return a.do("POST", "/v1/chat/completions", key, chatBody("chat", "in flight", "")).status == http.StatusGone
	})
	r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "in flight", ""))
	if r.status != http.StatusGone || r.errCode() != "ResourceDeleted" || r.errField("type") != "not_found_error" || strings.Contains(string(r.raw), "in flight") {
		t.Fatalf("request of a deleted resource = %d %s", r.status, r.raw)
	}
	refused := r.header.Get("x-request-id")
	brokers := strings.Split(s.Env["TERROIR_KAFKA_BROKERS"], ",")
	for _, g := range []string{"eu", "us"} {
		for _, rec := range readTopic(t, brokers, bus.TopicName(s.Env["TERROIR_KAFKA_NAMESPACE"], g, bus.StreamRequests)) {
			if string(rec.Key) == refused {
				t.Fatalf("the refused request reached %s", rec.Topic)
			}
		}
	}
	a.op("DELETE", "/mgmt/resources/acme", nil, http.StatusNoContent)
	a.op("PUT", "/mgmt/resources/acme", resourceBody("eu"), http.StatusCreated)
	a.op("PUT", "/mgmt/resources/acme/deployments/chat", deploymentBody("terroir-ngram", "Standard"), http.StatusCreated)
	key = a.op("POST", "/mgmt/resources/acme/listKeys", nil, http.StatusOK).body["key1"].(string)
	if r := a.do("POST", "/v1/chat/completions", key, chatBody("chat", "hi again", "")); r.status != http.StatusOK {
		t.Fatalf("the resource created anew = %d %s", r.status, r.raw)
	}
}
