package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/respjson"
)

// TestGoSDKAzure drives a running stack with the official Go SDK
// (github.com/openai/openai-go/v3) configured for Azure: chat, streaming
// chat, embeddings as base64 and as floats, a blocked prompt and a filtered
// output.
func TestGoSDKAzure(t *testing.T) {
	s, key := sdkStack(t)
	wire := &wireLog{}
	client := openai.NewClient(
		azure.WithEndpoint(s.base, sdkAPIVersion),
		azure.WithAPIKey(key),
		azure.WithUnsafeAllowHTTP(), // plain HTTP on loopback
		// A retried failure would hide what the stack answered first.
		option.WithMaxRetries(0),
		option.WithRequestTimeout(60*time.Second),
		option.WithMiddleware(wire.record),
	)
	// Each subtest prints, when it fails, the HTTP exchanges of its last
	// step: what the SDK sent and what it got back.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("HTTP exchanges:\n%s", wire)
				}
			})
			f(t)
		})
	}

	run("chat", func(t *testing.T) {
		wire.reset()
		var hr *http.Response
		c, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
			Model:     "chat",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(sdkPrompt)},
			Seed:      openai.Int(sdkSeed),
			MaxTokens: openai.Int(30),
		}, option.WithResponseInto(&hr))
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
		wire.only(t, "chat", "chat/completions")
		if hr.Header.Get("x-request-id") == "" || hr.Header.Get("apim-request-id") == "" {
			t.Errorf("response headers lack x-request-id or apim-request-id: %v", hr.Header)
		}
		if c.JSON.Object.Raw() != `"chat.completion"` || c.ID == "" || len(c.Choices) != 1 {
			t.Fatalf("completion: object %s, id %q, %d choices: %s", c.JSON.Object.Raw(), c.ID, len(c.Choices), c.RawJSON())
		}
		ch := c.Choices[0]
		if ch.Message.Role != "assistant" || strings.TrimSpace(ch.Message.Content) == "" {
			t.Errorf("message: role %q, content %q", ch.Message.Role, ch.Message.Content)
		}
		if ch.FinishReason != "stop" && ch.FinishReason != "length" {
			t.Errorf("finish_reason = %q", ch.FinishReason)
		}
		u := c.Usage
		if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage = %s", u.RawJSON())
		}
		checkPromptFilterResults(t, c.JSON.ExtraFields, "completion")
		checkAnnotations(t, decodeExtra[annotations](t, ch.JSON.ExtraFields, "content_filter_results"), "choice")
	})

	run("streaming chat", func(t *testing.T) {
		wire.reset()
		stream := client.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
			Model:         "chat",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(sdkPrompt)},
			Seed:          openai.Int(sdkSeed),
			MaxTokens:     openai.Int(40),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		defer stream.Close()
		var chunks []openai.ChatCompletionChunk
		acc := openai.ChatCompletionAccumulator{}
		for stream.Next() {
			chunk := stream.Current()
			chunks = append(chunks, chunk)
			if !acc.AddChunk(chunk) {
				t.Errorf("the SDK's accumulator refused chunk %d: %s", len(chunks)-1, chunk.RawJSON())
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if ex := wire.only(t, "chat", "chat/completions"); !strings.HasPrefix(ex.contentType, "text/event-stream") {
			t.Errorf("content type %q", ex.contentType)
		}
		if len(chunks) < 3 {
			t.Fatalf("only %d chunks", len(chunks))
		}
		// Azure announces the prompt's annotations first, in a chunk with
		// no choices and empty id, model and object.
		first := chunks[0]
		if len(first.Choices) != 0 {
			t.Errorf("first chunk has choices: %s", first.RawJSON())
		}
		checkPromptFilterResults(t, first.JSON.ExtraFields, "first chunk")
		var text strings.Builder
		var finishes []string
		for i, c := range chunks[1:] {
			if c.ID != chunks[1].ID || c.ID == "" || c.JSON.Object.Raw() != `"chat.completion.chunk"` {
				t.Errorf("chunk %d: id %q (first %q), object %s", i+1, c.ID, chunks[1].ID, c.JSON.Object.Raw())
			}
			for _, ch := range c.Choices {
				text.WriteString(ch.Delta.Content)
				if ch.FinishReason != "" {
					finishes = append(finishes, ch.FinishReason)
				}
			}
		}
		if strings.TrimSpace(text.String()) == "" {
			t.Errorf("streamed no text")
		}
		if len(finishes) != 1 || (finishes[0] != "stop" && finishes[0] != "length") {
			t.Errorf("finish_reasons = %q", finishes)
		}
		last := chunks[len(chunks)-1]
		if len(last.Choices) != 0 || last.Usage.CompletionTokens <= 0 {
			t.Errorf("last chunk is not the usage chunk: %s", last.RawJSON())
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != text.String() || acc.Usage.CompletionTokens != last.Usage.CompletionTokens {
			t.Errorf("accumulated %d choices, usage %d; want the streamed text %q and usage %d", len(acc.Choices), acc.Usage.CompletionTokens, text.String(), last.Usage.CompletionTokens)
		}
	})

	run("embeddings", func(t *testing.T) {
		inputs := []string{"whale", "sea"}
		embed := func(t *testing.T, format openai.EmbeddingNewParamsEncodingFormat) *openai.CreateEmbeddingResponse {
			t.Helper()
			wire.reset()
			e, err := client.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
				Model:          "embed",
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
				EncodingFormat: format,
			})
			if err != nil {
				t.Fatalf("embeddings (%s): %v", format, err)
			}
			if ex := wire.only(t, "embed", "embeddings"); !strings.Contains(ex.body, `"encoding_format":"`+string(format)+`"`) {
				t.Fatalf("request body %s does not ask for %s", ex.body, format)
			}
			if e.JSON.Object.Raw() != `"list"` || len(e.Data) != len(inputs) || e.Usage.PromptTokens <= 0 || e.Usage.TotalTokens != e.Usage.PromptTokens {
				t.Fatalf("embeddings (%s): %s", format, e.RawJSON())
			}
			for i, d := range e.Data {
				if d.Index != int64(i) || d.JSON.Object.Raw() != `"embedding"` || len(d.Embedding) == 0 {
					t.Fatalf("embeddings (%s) data[%d]: index %d, object %s, %d dimensions", format, i, d.Index, d.JSON.Object.Raw(), len(d.Embedding))
				}
			}
			return e
		}
		b64 := embed(t, openai.EmbeddingNewParamsEncodingFormatBase64)
		flt := embed(t, openai.EmbeddingNewParamsEncodingFormatFloat)
		for i := range inputs {
			raw := b64.Data[i].JSON.Embedding.Raw()
			var s string
			if err := json.Unmarshal([]byte(raw), &s); err != nil {
				t.Fatalf("base64 embedding %d is not a JSON string: %.80s", i, raw)
			}
			if _, err := base64.StdEncoding.DecodeString(s); err != nil {
				t.Fatalf("base64 embedding %d: %v", i, err)
			}
			f, b := flt.Data[i].Embedding, b64.Data[i].Embedding
			if len(b) != len(f) {
				t.Fatalf("%s: base64 decodes to %d dimensions, float has %d", inputs[i], len(b), len(f))
			}
			// base64 carries little-endian float32: the same vector at
			// float32 precision.
			nonzero := false
			for j := range f {
				if b[j] != float64(float32(f[j])) {
					t.Fatalf("%s[%d]: base64 %v, float %v", inputs[i], j, b[j], f[j])
				}
				nonzero = nonzero || f[j] != 0
			}
			if !nonzero {
				t.Errorf("%s: all-zero embedding", inputs[i])
			}
		}
		if slices.Equal(flt.Data[0].Embedding, flt.Data[1].Embedding) {
			t.Errorf("different inputs, same vector")
		}
		// The decoding above is the SDK's; check the bytes independently.
		var s string
		_ = json.Unmarshal([]byte(b64.Data[0].JSON.Embedding.Raw()), &s)
		raw, _ := base64.StdEncoding.DecodeString(s)
		if len(raw) != 4*len(flt.Data[0].Embedding) || math.Float32frombits(binary.LittleEndian.Uint32(raw)) != float32(flt.Data[0].Embedding[0]) {
			t.Errorf("base64 bytes are not little-endian float32 of the float embedding")
		}
	})

	run("blocked prompt", func(t *testing.T) {
		blocked := func(t *testing.T, err error) {
			t.Helper()
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
			}
			if apiErr.StatusCode != http.StatusBadRequest || apiErr.Code != "content_filter" || apiErr.Param != "prompt" {
				t.Fatalf("error: status %d, code %q, param %q: %s", apiErr.StatusCode, apiErr.Code, apiErr.Param, apiErr.RawJSON())
			}
			var inner struct {
				Code                string `json:"code"`
				ContentFilterResult struct {
					Jailbreak struct{ Filtered, Detected bool } `json:"jailbreak"`
				} `json:"content_filter_result"`
			}
			if f, ok := apiErr.JSON.ExtraFields["innererror"]; !ok || json.Unmarshal([]byte(f.Raw()), &inner) != nil {
				t.Fatalf("error has no innererror: %s", apiErr.RawJSON())
			}
			if inner.Code != "ResponsibleAIPolicyViolation" || !inner.ContentFilterResult.Jailbreak.Filtered || !inner.ContentFilterResult.Jailbreak.Detected {
				t.Errorf("innererror = %+v: %s", inner, apiErr.RawJSON())
			}
		}
		params := openai.ChatCompletionNewParams{
			Model:    "chat",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(sdkJailbreak)},
		}
		wire.reset()
		c, err := client.Chat.Completions.New(t.Context(), params)
		if err == nil {
			t.Fatalf("a jailbreak prompt was answered: %s", c.RawJSON())
		}
		blocked(t, err)
		wire.only(t, "chat", "chat/completions")

		// Streamed, the prompt is refused before any stream starts.
		wire.reset()
		stream := client.Chat.Completions.NewStreaming(t.Context(), params)
		defer stream.Close()
		if stream.Next() {
			t.Fatalf("a jailbreak prompt was streamed: %s", stream.Current().RawJSON())
		}
		blocked(t, stream.Err())
		wire.only(t, "chat", "chat/completions")
	})

	run("filtered output", func(t *testing.T) {
		blockedWords := regexp.MustCompile(`(?i)\b(the|and)\b`)
		params := openai.ChatCompletionNewParams{
			Model:     "filtered",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(sdkPrompt)},
			Seed:      openai.Int(sdkSeed),
			MaxTokens: openai.Int(80),
		}
		wire.reset()
		c, err := client.Chat.Completions.New(t.Context(), params)
		if err != nil {
			t.Fatalf("filtered chat: %v", err)
		}
		if ex := wire.only(t, "filtered", "chat/completions"); ex.status != http.StatusOK {
			t.Fatalf("status %d", ex.status)
		}
		if len(c.Choices) != 1 || c.Choices[0].FinishReason != "content_filter" {
			t.Fatalf("filtered answer: %s", c.RawJSON())
		}
		if blockedWords.MatchString(c.Choices[0].Message.Content) {
			t.Errorf("blocked words reached the app: %q", c.Choices[0].Message.Content)
		}
		if a := decodeExtra[annotations](t, c.Choices[0].JSON.ExtraFields, "content_filter_results"); !a.CustomBlocklists.Filtered {
			t.Errorf("custom_blocklists not marked filtered: %s", c.Choices[0].RawJSON())
		}
		checkPromptFilterResults(t, c.JSON.ExtraFields, "filtered completion")

		wire.reset()
		stream := client.Chat.Completions.NewStreaming(t.Context(), params)
		defer stream.Close()
		var text strings.Builder
		var finishes []string
		for stream.Next() {
			for _, ch := range stream.Current().Choices {
				text.WriteString(ch.Delta.Content)
				if ch.FinishReason != "" {
					finishes = append(finishes, ch.FinishReason)
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("filtered stream: %v", err)
		}
		if ex := wire.only(t, "filtered", "chat/completions"); ex.status != http.StatusOK {
			t.Fatalf("status %d", ex.status)
		}
		if !slices.Equal(finishes, []string{"content_filter"}) {
			t.Errorf("streamed finish_reasons = %q", finishes)
		}
		if blockedWords.MatchString(text.String()) {
			t.Errorf("blocked words reached the app in the stream: %q", text.String())
		}
	})
}

// severity is one harm category's annotation.
type severity struct {
	Filtered *bool  `json:"filtered"`
	Severity string `json:"severity"`
}

// annotations is the part of Azure's content_filter_results the tests read.
type annotations struct {
	Hate      severity `json:"hate"`
	SelfHarm  severity `json:"self_harm"`
	Sexual    severity `json:"sexual"`
	Violence  severity `json:"violence"`
	Jailbreak *struct {
		Filtered, Detected bool
	} `json:"jailbreak"`
	CustomBlocklists struct {
		Filtered bool `json:"filtered"`
	} `json:"custom_blocklists"`
}

func checkAnnotations(t *testing.T, a annotations, where string) {
	t.Helper()
	for name, s := range map[string]severity{"hate": a.Hate, "self_harm": a.SelfHarm, "sexual": a.Sexual, "violence": a.Violence} {
		if s.Filtered == nil || s.Severity == "" {
			t.Errorf("%s: %s annotation lacks filtered or severity", where, name)
		}
	}
}

// checkPromptFilterResults checks the Azure prompt annotations the SDK
// keeps among a response's extra fields.
func checkPromptFilterResults(t *testing.T, extra map[string]respjson.Field, where string) {
	t.Helper()
	pfr := decodeExtra[[]struct {
		PromptIndex          *int        `json:"prompt_index"`
		ContentFilterResults annotations `json:"content_filter_results"`
	}](t, extra, "prompt_filter_results")
	if len(pfr) != 1 || pfr[0].PromptIndex == nil || *pfr[0].PromptIndex != 0 {
		t.Fatalf("%s: prompt_filter_results = %s", where, extra["prompt_filter_results"].Raw())
	}
	checkAnnotations(t, pfr[0].ContentFilterResults, where+" prompt_filter_results[0]")
	if jb := pfr[0].ContentFilterResults.Jailbreak; jb == nil || jb.Filtered || jb.Detected {
		t.Errorf("%s: jailbreak annotation of an ordinary prompt: %s", where, extra["prompt_filter_results"].Raw())
	}
}

// decodeExtra decodes a field the SDK does not model (Azure's annotations)
// from a response's extra fields. The SDK keeps such fields raw and marks
// them not Valid, as it has no type for them; presence is a raw value.
func decodeExtra[T any](t *testing.T, extra map[string]respjson.Field, name string) T {
	t.Helper()
	var v T
	f, ok := extra[name]
	if !ok || f.Raw() == "" || f.Raw() == "null" {
		t.Fatalf("response has no %s", name)
	}
	if err := json.Unmarshal([]byte(f.Raw()), &v); err != nil {
		t.Fatalf("%s: %v: %s", name, err, f.Raw())
	}
	return v
}

// exchange is one HTTP request the SDK made and what it got back.
type exchange struct {
	method, url      string
	apiKey, bearer   bool
	body             string
	status           int
	contentType, rid string
	err              error
}

// wireLog records the SDK's HTTP exchanges through its middleware hook,
// which runs after the azure options have rewritten the request.
type wireLog struct {
	mu        sync.Mutex
	exchanges []exchange
}

func (w *wireLog) record(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	ex := exchange{method: req.Method, url: req.URL.String(), apiKey: req.Header.Get("Api-Key") != "", bearer: req.Header.Get("Authorization") != ""}
	if req.Body != nil {
		raw, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(raw))
		ex.body = string(raw)
	}
	resp, err := next(req)
	ex.err = err
	if resp != nil {
		ex.status, ex.contentType, ex.rid = resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("x-request-id")
	}
	w.mu.Lock()
	w.exchanges = append(w.exchanges, ex)
	w.mu.Unlock()
	return resp, err
}

func (w *wireLog) reset() {
	w.mu.Lock()
	w.exchanges = nil
	w.mu.Unlock()
}

// only asserts that the SDK made exactly one request since the last reset,
// to the Azure path of deployment and operation with the api-key header.
func (w *wireLog) only(t *testing.T, deployment, op string) exchange {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.exchanges) != 1 {
		t.Fatalf("the SDK made %d requests, want 1", len(w.exchanges))
	}
	ex := w.exchanges[0]
	want := fmt.Sprintf("/openai/deployments/%s/%s?api-version=%s", deployment, op, sdkAPIVersion)
	if !strings.HasSuffix(ex.url, want) || !ex.apiKey || ex.bearer {
		t.Fatalf("request %s %s (api-key header %v, Authorization header %v); want %s with api-key only", ex.method, ex.url, ex.apiKey, ex.bearer, want)
	}
	return ex
}

func (w *wireLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, ex := range w.exchanges {
		fmt.Fprintf(&b, "  %s %s api-key=%v → %d %s x-request-id=%s err=%v\n    body: %.300s\n", ex.method, ex.url, ex.apiKey, ex.status, ex.contentType, ex.rid, ex.err, ex.body)
	}
	return b.String()
}
