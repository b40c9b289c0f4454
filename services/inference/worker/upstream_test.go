package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// The fake upstream below is an OpenAI-compatible server in the test
// process, standing in for vLLM, llama.cpp server or Ollama, which cannot
// run here. It answers /chat/completions, /completions and /embeddings,
// streamed or not, checks the bearer key and the model name as a real
// server would, and misbehaves as each test scripts it.

const (
	upstreamName = "acme/Upstream-7B-Instruct" // the upstream's name for the model
	catalogID    = "upstream-7b"               // Terroir's catalog ID for it
	answerText   = "Hello from upstream"
)

// upstreamUsageAnswer is the usage the fake reports.
var upstreamUsageAnswer = events.Usage{PromptTokens: 11, CompletionTokens: 4, TotalTokens: 15}

// step scripts one call to the fake; calls past the script are answered
// normally.
type step struct {
	status int               // answer with this status and body
	header map[string]string // extra response headers
	body   string
	abort  bool // drop the connection before answering
	stall  bool // hold the call until the client gives up
	// For a normal streamed answer: after this many chunks, drop the
	// connection (cut), send streamError instead when set, or hold the
	// call (stallStream).
	cut, stallStream bool
	end              bool // end the stream cleanly, without [DONE]
	after            int
	streamError      string
}

// fakeOptions shape the fake's normal answers.
type fakeOptions struct {
	noUsage             bool // report no usage, ignore stream_options
	crlf                bool // end lines with \r\n
	noise               bool // comments, other fields, multi-line data
	noDone              bool // end streams without [DONE]
	rejectStreamOptions bool // answer 400 to a request with stream_options
}

type recorded struct {
	path string
	auth string
	body map[string]any
}

type fakeUpstream struct {
	t       *testing.T
	key     string // the bearer key it expects; "" expects none
	opts    fakeOptions
	release chan struct{}
	srv     *httptest.Server

	mu     sync.Mutex
	script []step
	calls  []recorded
}

func newFakeUpstream(t *testing.T, key string, opts fakeOptions, script ...step) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{t: t, key: key, opts: opts, script: script, release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.release) }) // runs first: frees stalled handlers
	return f
}

func (f *fakeUpstream) url() string { return f.srv.URL + "/v1" }

func (f *fakeUpstream) recorded() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.calls...)
}

func (f *fakeUpstream) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.release:
	}
}

func writeError(w http.ResponseWriter, status int, errType, param, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{"message": msg, "type": errType, "param": nil, "code": nil}
	if param != "" {
		body["param"] = param
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	f.calls = append(f.calls, recorded{path: r.URL.Path, auth: r.Header.Get("Authorization"), body: body})
	var s step
	if len(f.script) > 0 {
		s, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()

	switch {
	case s.abort:
		panic(http.ErrAbortHandler)
	case s.stall:
		f.stall(r)
		return
	case s.status != 0:
		for k, v := range s.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		_, _ = io.WriteString(w, s.body)
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", "POST only")
		return
	}
	want := ""
	if f.key != "" {
		want = "Bearer " + f.key
	}
	if r.Header.Get("Authorization") != want {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Incorrect API key provided.")
		return
	}
	if body["model"] != upstreamName {
		writeError(w, http.StatusNotFound, "NotFoundError", "model", fmt.Sprintf("The model `%v` does not exist.", body["model"]))
		return
	}
	if _, ok := body["stream_options"]; ok && f.opts.rejectStreamOptions {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "stream_options", "stream_options: extra fields not permitted")
		return
	}
	stream, _ := body["stream"].(bool)
	var chunks []map[string]any
	var full map[string]any
	head := func(object string) map[string]any {
		return map[string]any{"id": "up-1", "object": object, "created": 1700000000, "model": upstreamName}
	}
	usage := map[string]any{"prompt_tokens": upstreamUsageAnswer.PromptTokens, "completion_tokens": upstreamUsageAnswer.CompletionTokens,
		"total_tokens": upstreamUsageAnswer.TotalTokens}
	pieces := []string{"Hello", " from", " upstream"}
	switch r.URL.Path {
	case "/v1/chat/completions":
		if stream {
			c := head("chat.completion.chunk")
			c["choices"] = []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil}}
			chunks = append(chunks, c)
			for _, p := range pieces {
				c := head("chat.completion.chunk")
				c["choices"] = []any{map[string]any{"index": 0, "delta": map[string]any{"content": p}, "finish_reason": nil}}
				chunks = append(chunks, c)
			}
			c = head("chat.completion.chunk")
			c["choices"] = []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}
			chunks = append(chunks, c)
		} else {
			full = head("chat.completion")
			full["choices"] = []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": answerText}, "finish_reason": "stop"}}
		}
	case "/v1/completions":
		if stream {
			for i, p := range pieces {
				c := head("text_completion")
				var finish any
				if i == len(pieces)-1 {
					finish = "stop"
				}
				c["choices"] = []any{map[string]any{"index": 0, "text": p, "finish_reason": finish}}
				chunks = append(chunks, c)
			}
		} else {
			full = head("text_completion")
			full["choices"] = []any{map[string]any{"index": 0, "text": answerText, "finish_reason": "stop"}}
		}
	case "/v1/embeddings":
		full = map[string]any{"object": "list", "model": upstreamName,
			"data": []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.25, -0.5}}}}
		usage = map[string]any{"prompt_tokens": upstreamUsageAnswer.PromptTokens, "total_tokens": upstreamUsageAnswer.PromptTokens}
	default:
		writeError(w, http.StatusNotFound, "NotFoundError", "", "no such path")
		return
	}
	if full != nil {
		if !f.opts.noUsage {
			full["usage"] = usage
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(full)
		return
	}
	opts, _ := body["stream_options"].(map[string]any)
	if opts["include_usage"] == true && !f.opts.noUsage {
		for _, c := range chunks {
			c["usage"] = nil
		}
		c := head(chunks[0]["object"].(string))
		c["choices"], c["usage"] = []any{}, usage
		chunks = append(chunks, c)
	}
	f.writeStream(w, r, s, chunks)
}

func (f *fakeUpstream) writeStream(w http.ResponseWriter, r *http.Request, s step, chunks []map[string]any) {
	nl := "\n"
	if f.opts.crlf {
		nl = "\r\n"
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(data string) {
		_, _ = io.WriteString(w, "data: "+data+nl+nl)
		_ = rc.Flush()
	}
	if f.opts.noise {
		_, _ = io.WriteString(w, ": keep-alive"+nl+nl+"retry: 1000"+nl)
	}
	for i, c := range chunks {
		if i == s.after {
			switch {
			case s.cut && s.streamError != "":
				send(s.streamError)
				return
			case s.cut:
				panic(http.ErrAbortHandler)
			case s.stallStream:
				f.stall(r)
				return
			case s.end:
				return
			}
		}
		raw, _ := json.Marshal(c)
		if f.opts.noise {
			// The same event as an id, an event name and two data lines.
			text := string(raw)
			cut := strings.Index(text, `,"`) + 1
			_, _ = io.WriteString(w, "id: "+fmt.Sprint(i)+nl+"event: message"+nl+"data: "+text[:cut]+nl+"data:"+text[cut:]+nl+nl)
			_ = rc.Flush()
			continue
		}
		send(string(raw))
	}
	if !f.opts.noDone {
		send("[DONE]")
	}
}

// waits records the retry waits of an Upstream instead of sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

func newTestUpstream(t *testing.T, f *fakeUpstream, timeout time.Duration, log *zap.Logger) (*Upstream, *waits) {
	t.Helper()
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel+1))
	}
	u, err := NewUpstream(catalog.Backend{BaseURL: f.url(), Model: upstreamName, Timeout: timeout}, f.key, f.srv.Client(), log)
	if err != nil {
		t.Fatal(err)
	}
	w := &waits{}
	u.wait = w.wait
	return u, w
}

// requestFor builds the request an app sends for op.
func requestFor(op events.Operation, stream, appUsage bool) events.InferenceRequest {
	body := map[string]any{"model": "my-deployment"}
	switch op {
	case events.OperationChatCompletions:
		body["messages"] = []any{map[string]any{"role": "system", "content": "Be brief."}, map[string]any{"role": "user", "content": "Say hello."}}
	case events.OperationCompletions:
		body["prompt"] = "Say hello."
	case events.OperationEmbeddings:
		body["input"] = "Say hello."
	}
	if stream {
		body["stream"] = true
		if appUsage {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
	}
	raw, _ := json.Marshal(body)
	return events.InferenceRequest{RequestID: "req-1", Model: catalogID, Deployment: "my-deployment", Operation: op, Stream: stream, Body: raw}
}

// countedFor is the usage Terroir counts itself for requestFor(op) when
// the upstream reports none.
func countedFor(op events.Operation) events.Usage {
	var u events.Usage
	switch op {
	case events.OperationChatCompletions:
		u.PromptTokens = builtin.CountChatTokens([]builtin.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Say hello."}})
		u.CompletionTokens = builtin.CountTokens(answerText)
	case events.OperationCompletions:
		u.PromptTokens = builtin.CountTokens("Say hello.")
		u.CompletionTokens = builtin.CountTokens(answerText)
	case events.OperationEmbeddings:
		u.PromptTokens = builtin.CountTokens("Say hello.")
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// collected gathers emitted chunks.
type collected struct{ chunks []map[string]json.RawMessage }

func (c *collected) emit(t *testing.T) func([]byte) error {
	return func(b []byte) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("emitted chunk is not a JSON object: %v", err)
		}
		c.chunks = append(c.chunks, m)
		return nil
	}
}

// text joins the streamed output of choice 0.
func (c *collected) text(t *testing.T) string {
	var b strings.Builder
	for _, m := range c.chunks {
		var choices []choiceOutput
		if err := json.Unmarshal(m["choices"], &choices); err != nil {
			t.Fatalf("chunk choices: %v", err)
		}
		for _, ch := range choices {
			ch.writeText(&b)
		}
	}
	return b.String()
}

func TestUpstreamServes(t *testing.T) {
	t.Parallel()
	ops := []events.Operation{events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings}
	type tc struct {
		name     string
		op       events.Operation
		stream   bool
		appUsage bool
		opts     fakeOptions
		key      string
		calls    int
	}
	var cases []tc
	for _, op := range ops {
		cases = append(cases,
			tc{name: string(op), op: op, key: "sk-upstream"},
			tc{name: string(op) + " without upstream usage", op: op, opts: fakeOptions{noUsage: true}},
		)
		if op == events.OperationEmbeddings {
			continue
		}
		cases = append(cases,
			tc{name: string(op) + " stream", op: op, stream: true, key: "sk-upstream"},
			tc{name: string(op) + " stream, app asks for usage", op: op, stream: true, appUsage: true},
			tc{name: string(op) + " stream without upstream usage", op: op, stream: true, opts: fakeOptions{noUsage: true}},
			tc{name: string(op) + " stream with CRLF, comments, fields, multi-line data", op: op, stream: true, opts: fakeOptions{crlf: true, noise: true}},
			tc{name: string(op) + " stream without [DONE]", op: op, stream: true, opts: fakeOptions{noDone: true}},
			tc{name: string(op) + " stream to a server refusing stream_options", op: op, stream: true, opts: fakeOptions{rejectStreamOptions: true}, calls: 2},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeUpstream(t, c.key, c.opts)
			u, w := newTestUpstream(t, f, 5*time.Second, nil)
			var got collected
			ans, err := u.Serve(t.Context(), requestFor(c.op, c.stream, c.appUsage), got.emit(t))
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
			wantUsage := upstreamUsageAnswer
			if c.op == events.OperationEmbeddings {
				wantUsage = events.Usage{PromptTokens: upstreamUsageAnswer.PromptTokens, TotalTokens: upstreamUsageAnswer.PromptTokens}
			}
			if c.opts.noUsage || c.opts.rejectStreamOptions {
				wantUsage = countedFor(c.op)
			}
			if ans.Usage != wantUsage {
				t.Errorf("usage = %+v, want %+v", ans.Usage, wantUsage)
			}
			calls := f.recorded()
			if want := max(c.calls, 1); len(calls) != want {
				t.Fatalf("upstream saw %d calls, want %d", len(calls), want)
			}
			if len(w.all()) != 0 {
				t.Errorf("waited %v, want no retry waits", w.all())
			}
			sent := calls[len(calls)-1]
			if want := "/v1" + upstreamPaths[c.op]; sent.path != want {
				t.Errorf("path = %s, want %s", sent.path, want)
			}
			if sent.body["model"] != upstreamName {
				t.Errorf("upstream got model %v, want %s", sent.body["model"], upstreamName)
			}
			if c.op != events.OperationEmbeddings && sent.body["stream"] != c.stream {
				t.Errorf("upstream got stream %v, want %v", sent.body["stream"], c.stream)
			}
			if c.stream && !c.opts.rejectStreamOptions {
				opts, _ := sent.body["stream_options"].(map[string]any)
				if opts["include_usage"] != true {
					t.Errorf("upstream got stream_options %v, want include_usage true", sent.body["stream_options"])
				}
			}
			if !c.stream {
				if len(got.chunks) != 0 {
					t.Errorf("emitted %d chunks for a non-stream", len(got.chunks))
				}
				var body map[string]json.RawMessage
				if err := json.Unmarshal(ans.Body, &body); err != nil {
					t.Fatalf("answer body: %v", err)
				}
				if string(body["model"]) != `"`+catalogID+`"` {
					t.Errorf("answer model = %s, want %q", body["model"], catalogID)
				}
				if u, ok := usageOf(body["usage"]); !ok || u != wantUsage {
					t.Errorf("answer usage = %s, want %+v", body["usage"], wantUsage)
				}
				if strings.Contains(string(ans.Body), upstreamName) {
					t.Errorf("answer leaks the upstream's model name: %s", ans.Body)
				}
				return
			}
			if len(ans.Body) != 0 {
				t.Errorf("stream answer has a body: %s", ans.Body)
			}
			if len(got.chunks) == 0 {
				t.Fatal("no chunks emitted")
			}
			if txt := got.text(t); txt != answerText {
				t.Errorf("streamed text = %q, want %q", txt, answerText)
			}
			for i, ch := range got.chunks {
				if string(ch["model"]) != `"`+catalogID+`"` {
					t.Errorf("chunk %d model = %s, want %q", i, ch["model"], catalogID)
				}
				if string(ch["choices"]) == "[]" {
					t.Errorf("chunk %d has no choices: the usage chunk must not be emitted", i)
				}
				usage, ok := ch["usage"]
				switch {
				case c.appUsage && (!ok || !isNull(usage)):
					t.Errorf("chunk %d usage = %s, want null", i, usage)
				case !c.appUsage && ok:
					t.Errorf("chunk %d has usage %s the app did not ask for", i, usage)
				}
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	const badParam = `{"error":{"message":"temperature must be at most 2","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`
	chat, comp, emb := events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings
	s503 := step{status: 503, body: `{"error":{"message":"CUDA out of memory on node gpu-7","type":"server_error"}}`}
	s429 := step{status: 429, body: `{"error":{"message":"slow down","type":"rate_limit_error"}}`}
	cases := []struct {
		name    string
		op      events.Operation
		stream  bool
		timeout time.Duration
		script  []step
		// wantKind is "" for success.
		wantKind  events.ErrorKind
		wantCode  string
		wantParam string
		wantMsg   string // a substring of the message
		calls     int
		// waitsIn bounds each retry wait; nil means there are none.
		waitsIn [][2]time.Duration
		chunks  int // emitted chunks, when the stream failed
	}{
		{name: "503 twice, then an answer", op: chat, stream: true, script: []step{s503, s503}, calls: 3,
			waitsIn: [][2]time.Duration{{time.Millisecond / 2, time.Millisecond}, {time.Millisecond, 2 * time.Millisecond}}},
		{name: "503 three times", op: chat, script: []step{s503, s503, s503}, calls: 3, wantKind: events.ErrorUpstreamFailed, wantCode: "upstream_error",
			wantMsg: "status 503", waitsIn: [][2]time.Duration{{0, time.Millisecond}, {0, 2 * time.Millisecond}}},
		{name: "500 on embeddings, then an answer", op: emb, script: []step{{status: 500}}, calls: 2, waitsIn: [][2]time.Duration{{0, time.Millisecond}}},
		{name: "429 with Retry-After, then an answer", op: comp, script: []step{{status: 429, header: map[string]string{"Retry-After": "2"}}}, calls: 2,
			waitsIn: [][2]time.Duration{{2 * time.Second, 2 * time.Second}}},
		{name: "429 with retry-after-ms", op: comp, stream: true, script: []step{{status: 429, header: map[string]string{"Retry-After-Ms": "1500"}}}, calls: 2,
			waitsIn: [][2]time.Duration{{1500 * time.Millisecond, 1500 * time.Millisecond}}},
		{name: "Retry-After past the cap waits the cap", op: chat, timeout: time.Minute, script: []step{{status: 429, header: map[string]string{"Retry-After": "3600"}}}, calls: 2,
			waitsIn: [][2]time.Duration{{defaultRetryAfterCap, defaultRetryAfterCap}}},
		{name: "Retry-After past the deadline is not waited for", op: chat, timeout: 3 * time.Second,
			script: []step{{status: 503, header: map[string]string{"Retry-After": "5"}}}, calls: 1, wantKind: events.ErrorUpstreamFailed},
		{name: "429 every time", op: chat, stream: true, script: []step{s429, s429, s429}, calls: 3, wantKind: events.ErrorRateLimited,
			wantCode: "rate_limit_exceeded", waitsIn: [][2]time.Duration{{0, time.Millisecond}, {0, 2 * time.Millisecond}}},
		{name: "400 names the parameter", op: chat, script: []step{{status: 400, body: badParam}}, calls: 1, wantKind: events.ErrorInvalidRequest,
			wantCode: "invalid_value", wantParam: "temperature", wantMsg: "temperature must be at most 2"},
		{name: "400 in vLLM's shape", op: comp, stream: true, calls: 1,
			script:   []step{{status: 400, body: `{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":"max_tokens","code":400}`}},
			wantKind: events.ErrorInvalidRequest, wantCode: "invalid_value", wantParam: "max_tokens", wantMsg: "max_tokens is too large"},
		{name: "400 in Ollama's shape", op: chat, script: []step{{status: 400, body: `{"error":"invalid options"}`}}, calls: 1,
			wantKind: events.ErrorInvalidRequest, wantMsg: "invalid options"},
		{name: "400 without a body", op: chat, script: []step{{status: 400}}, calls: 1, wantKind: events.ErrorInvalidRequest, wantMsg: "rejected the request"},
		{name: "401: the upstream refused Terroir's key", op: chat, script: []step{{status: 401, body: `{"error":{"message":"Incorrect API key provided: sk-abc"}}`}},
			calls: 1, wantKind: events.ErrorUpstreamFailed, wantCode: "upstream_auth_failed", wantMsg: "refused the key this service is configured with"},
		{name: "403: the upstream refused Terroir's key", op: emb, script: []step{{status: 403}}, calls: 1, wantKind: events.ErrorUpstreamFailed,
			wantCode: "upstream_auth_failed", wantMsg: "your own API key is fine"},
		{name: "404: model not found upstream", op: chat, script: []step{{status: 404}}, calls: 1, wantKind: events.ErrorUpstreamFailed,
			wantCode: "upstream_model_not_found", wantMsg: "model not found upstream"},
		{name: "connection dropped, then an answer", op: chat, stream: true, script: []step{{abort: true}}, calls: 2,
			waitsIn: [][2]time.Duration{{0, time.Millisecond}}},
		{name: "stream dies before its first chunk: retried", op: chat, stream: true, script: []step{{cut: true}}, calls: 2,
			waitsIn: [][2]time.Duration{{0, time.Millisecond}}},
		{name: "stream dies after a chunk: not retried", op: chat, stream: true, script: []step{{cut: true, after: 1}}, calls: 1,
			wantKind: events.ErrorUpstreamFailed, wantCode: "upstream_stream_broken", chunks: 1},
		{name: "error event after chunks: not retried", op: comp, stream: true,
			script: []step{{cut: true, after: 2, streamError: `{"error":{"message":"engine died","type":"server_error","code":500}}`}}, calls: 1,
			wantKind: events.ErrorUpstreamFailed, wantCode: "upstream_error", chunks: 2},
		{name: "error event before any chunk: retried", op: chat, stream: true,
			script: []step{{cut: true, streamError: `{"error":{"message":"engine busy","code":503}}`}}, calls: 2,
			waitsIn: [][2]time.Duration{{0, time.Millisecond}}},
		{name: "stream ends early without an error", op: comp, stream: true, script: []step{{end: true, after: 1}}, calls: 1,
			wantKind: events.ErrorUpstreamFailed, wantCode: "upstream_stream_broken", chunks: 1},
		{name: "no answer in time", op: chat, timeout: 150 * time.Millisecond, script: []step{{stall: true}}, calls: 1,
			wantKind: events.ErrorTimeout, wantCode: "timeout"},
		{name: "stream stalls after a chunk", op: chat, stream: true, timeout: 150 * time.Millisecond, script: []step{{stallStream: true, after: 2}}, calls: 1,
			wantKind: events.ErrorTimeout, wantCode: "timeout", chunks: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeUpstream(t, "", fakeOptions{}, c.script...)
			timeout := c.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			u, w := newTestUpstream(t, f, timeout, nil)
			u.retryBase = time.Millisecond
			var got collected
			ans, err := u.Serve(t.Context(), requestFor(c.op, c.stream, false), got.emit(t))
			if n := len(f.recorded()); n != c.calls {
				t.Errorf("upstream saw %d calls, want %d", n, c.calls)
			}
			waited := w.all()
			if len(waited) != len(c.waitsIn) {
				t.Errorf("waited %v, want %d waits", waited, len(c.waitsIn))
			} else {
				for i, d := range waited {
					if d < c.waitsIn[i][0] || d > c.waitsIn[i][1] {
						t.Errorf("wait %d = %v, want within %v", i, d, c.waitsIn[i])
					}
				}
			}
			if c.wantKind == "" {
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
				if ans.Usage.TotalTokens == 0 {
					t.Errorf("no usage")
				}
				if c.stream && got.text(t) != answerText {
					t.Errorf("streamed text = %q, want %q (nothing duplicated)", got.text(t), answerText)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Serve error = %v, want a *worker.Error", err)
			}
			if e.Kind != c.wantKind || (c.wantCode != "" && e.Code != c.wantCode) || e.Param != c.wantParam || !strings.Contains(e.Message, c.wantMsg) {
				t.Errorf("error = %+v, want kind %s, code %q, param %q, message containing %q", *e, c.wantKind, c.wantCode, c.wantParam, c.wantMsg)
			}
			for _, leak := range []string{"CUDA", "gpu-7", "sk-abc", "slow down", "engine"} {
				if strings.Contains(e.Message, leak) {
					t.Errorf("error message passes on upstream internals (%q): %s", leak, e.Message)
				}
			}
			if len(got.chunks) != c.chunks {
				t.Errorf("emitted %d chunks, want %d", len(got.chunks), c.chunks)
			}
		})
	}
}

func TestUpstreamKeyFromTheCatalogsVariable(t *testing.T) {
	t.Parallel()
	withKey := newFakeUpstream(t, "sk-from-env", fakeOptions{})
	withoutKey := newFakeUpstream(t, "", fakeOptions{})
	unset := newFakeUpstream(t, "", fakeOptions{})
	cat, err := catalog.Parse([]byte(fmt.Sprintf(`
models:
  - {id: builtin-model, version: "1", publisher: Terroir, license: Apache-2.0, capabilities: [chat], backend: builtin}
  - id: with-key
    version: "1"
    publisher: Acme
    license: MIT
    capabilities: [chat]
    backend: {base_url: %q, api_key_env: TERROIR_TEST_UPSTREAM_KEY, model: %q, timeout: 5s}
  - id: without-key
    version: "1"
    publisher: Acme
    license: MIT
    capabilities: [chat]
    backend: {base_url: %q, model: %q}
  - id: unset-key
    version: "1"
    publisher: Acme
    license: MIT
    capabilities: [chat]
    backend: {base_url: %q, api_key_env: TERROIR_TEST_UNSET_KEY, model: %q}
`, withKey.url(), upstreamName, withoutKey.url(), upstreamName, unset.url(), upstreamName)))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TERROIR_TEST_UPSTREAM_KEY": "sk-from-env"}
	core, logs := observer.New(zapcore.DebugLevel)
	ups, err := NewUpstreams(cat, func(k string) string { return env[k] }, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 3 || ups["builtin-model"] != nil {
		t.Fatalf("upstreams = %v, want with-key, without-key and unset-key", ups)
	}
	for _, c := range []struct {
		model    string
		fake     *fakeUpstream
		wantAuth string
	}{
		{"with-key", withKey, "Bearer sk-from-env"},
		{"without-key", withoutKey, ""},
		{"unset-key", unset, ""},
	} {
		t.Run(c.model, func(t *testing.T) {
			req := requestFor(events.OperationChatCompletions, false, false)
			req.Model = c.model
			ans, err := ups[c.model].Serve(t.Context(), req, nil)
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
			calls := c.fake.recorded()
			if len(calls) != 1 || calls[0].auth != c.wantAuth {
				t.Fatalf("upstream calls = %+v, want one with Authorization %q", calls, c.wantAuth)
			}
			var body struct{ Model string }
			if err := json.Unmarshal(ans.Body, &body); err != nil || body.Model != c.model {
				t.Errorf("answer model = %q (%v), want %q", body.Model, err, c.model)
			}
		})
	}
	if logs.FilterMessageSnippet("key variable is empty").FilterField(zap.String("variable", "TERROIR_TEST_UNSET_KEY")).Len() != 1 {
		t.Errorf("the empty key variable was not reported by name")
	}
	for _, e := range logs.All() {
		if raw, _ := json.Marshal(e.ContextMap()); strings.Contains(string(raw)+e.Message, "sk-from-env") {
			t.Errorf("a log line carries the key: %s %s", e.Message, raw)
		}
	}
}

func TestUpstreamLogsNoContent(t *testing.T) {
	t.Parallel()
	const canary = "canary-7f3a9c prompt text"
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	f := newFakeUpstream(t, "sk-secret-canary", fakeOptions{},
		step{status: 503, body: `{"error":{"message":"` + canary + `"}}`},
		step{status: 400, body: `{"error":{"message":"bad","param":"messages"}}`},
		step{cut: true, after: 1})
	u, _ := newTestUpstream(t, f, 5*time.Second, log)
	u.retryBase = time.Millisecond
	req := requestFor(events.OperationChatCompletions, true, false)
	req.Body = json.RawMessage(`{"model":"d","stream":true,"messages":[{"role":"user","content":"` + canary + `"}]}`)
	for range 3 {
		_, _ = u.Serve(t.Context(), req, func([]byte) error { return nil })
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged; the test proves nothing")
	}
	for _, e := range logs.All() {
		raw, _ := json.Marshal(e.ContextMap())
		line := e.Message + " " + string(raw)
		for _, secret := range []string{"canary-7f3a9c", "sk-secret-canary", upstreamName} {
			if strings.Contains(line, secret) {
				t.Errorf("log line carries %q: %s", secret, line)
			}
		}
		if e.ContextMap()["request_id"] != "req-1" {
			t.Errorf("log line without the request ID: %s", line)
		}
	}
}

func TestNewUpstreamChecksItsBackend(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	for _, c := range []struct {
		name string
		b    catalog.Backend
		log  *zap.Logger
	}{
		{"built-in backend", catalog.Backend{Builtin: true}, log},
		{"no base URL", catalog.Backend{Model: "m"}, log},
		{"not http", catalog.Backend{BaseURL: "ftp://host/v1", Model: "m"}, log},
		{"no upstream model", catalog.Backend{BaseURL: "http://host/v1"}, log},
		{"no logger", catalog.Backend{BaseURL: "http://host/v1", Model: "m"}, nil},
	} {
		if _, err := NewUpstream(c.b, "", nil, c.log); err == nil {
			t.Errorf("%s: NewUpstream accepted it", c.name)
		}
	}
	u, err := NewUpstream(catalog.Backend{BaseURL: "http://host/v1/", Model: "m"}, "", nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if u.endpoint != "http://host/v1" || u.timeout != defaultUpstreamTimeout {
		t.Errorf("endpoint %q, timeout %v; want the base URL without its slash and the default timeout", u.endpoint, u.timeout)
	}
	_, err = u.Serve(t.Context(), events.InferenceRequest{Operation: events.OperationResponses, Body: json.RawMessage(`{}`)}, nil)
	var e *Error
	if !errors.As(err, &e) || e.Kind != events.ErrorInvalidRequest {
		t.Errorf("responses operation: %v, want an invalid-request error", err)
	}
	_, err = u.Serve(t.Context(), events.InferenceRequest{Operation: events.OperationChatCompletions, Body: json.RawMessage(`[1]`)}, nil)
	if !errors.As(err, &e) || e.Kind != events.ErrorInvalidRequest {
		t.Errorf("unreadable body: %v, want an invalid-request error", err)
	}
}

func TestSSEReader(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		want     []string
		broken   bool
	}{
		{"LF", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{`{"a":1}`, "[DONE]"}, false},
		{"CRLF", "data: one\r\n\r\ndata: two\r\n\r\n", []string{"one", "two"}, false},
		{"CR", "data: one\r\rdata: two\r\r", []string{"one", "two"}, false},
		{"comments and other fields", ": ping\n\nevent: delta\nid: 7\nretry: 10\ndata: x\n\n", []string{"x"}, false},
		{"multi-line data", "data: {\"a\":\ndata:1}\n\n", []string{"{\"a\":\n1}"}, false},
		{"no space after the colon", "data:x\n\n", []string{"x"}, false},
		{"only the first space is dropped", "data:  x\n\n", []string{" x"}, false},
		{"a field without a colon", "data\n\n", []string{""}, false},
		{"last event without a blank line", "data: a\n\ndata: b", []string{"a", "b"}, false},
		{"empty lines between events", "\n\n\ndata: a\n\n\n", []string{"a"}, false},
		{"too long", "data: " + strings.Repeat("x", maxUpstreamEvent+1) + "\n\n", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newSSEReader(strings.NewReader(c.in))
			var got []string
			for {
				data, err := r.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					if !c.broken {
						t.Fatalf("next: %v", err)
					}
					return
				}
				got = append(got, string(data))
			}
			if c.broken {
				t.Fatal("an oversized event was accepted")
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
				t.Errorf("events = %q, want %q", got, c.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		header map[string]string
		want   time.Duration
	}{
		{nil, 0},
		{map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"Retry-After": "-1"}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{"Retry-After": now.Add(7 * time.Second).Format(http.TimeFormat)}, 7 * time.Second},
		{map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{map[string]string{"Retry-After-Ms": "250", "Retry-After": "9"}, 250 * time.Millisecond},
	} {
		h := http.Header{}
		for k, v := range c.header {
			h.Set(k, v)
		}
		if got := retryAfter(h, now); got != c.want {
			t.Errorf("retryAfter(%v) = %v, want %v", c.header, got, c.want)
		}
	}
}

func TestUpstreamErrorMessagesAreCapped(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 1000)
	f := newFakeUpstream(t, "", fakeOptions{}, step{status: 400, body: `{"error":{"message":"` + long + `\nmore","param":"messages"}}`})
	u, _ := newTestUpstream(t, f, 5*time.Second, nil)
	_, err := u.Serve(t.Context(), requestFor(events.OperationChatCompletions, false, false), nil)
	var e *Error
	if !errors.As(err, &e) || e.Kind != events.ErrorInvalidRequest {
		t.Fatalf("error = %v, want invalid request", err)
	}
	if n := len([]rune(e.Message)); n > maxUpstreamMessage {
		t.Errorf("message has %d characters, want at most %d", n, maxUpstreamMessage)
	}
}
