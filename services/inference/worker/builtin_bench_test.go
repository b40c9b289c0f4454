package worker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/inference/worker"
)

// benchChat is a typical small chat request: about 32 prompt tokens,
// max_tokens 32, default temperature.
const benchChat = `{"model":"chat","messages":[{"role":"system","content":"You are a helpful assistant."},` +
	`{"role":"user","content":"Tell me about the whale, the sea and the ship that sailed from Nantucket in winter."}],"max_tokens":32%s}`

func benchBuiltin(b *testing.B) *worker.Builtin {
	b.Helper()
	m, err := loadModel()
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	return &worker.Builtin{Model: m, Now: func() time.Time { return now }}
}

func benchRequest(op events.Operation, stream bool, body string) events.InferenceRequest {
	model := "terroir-ngram"
	if op == events.OperationEmbeddings {
		model = "terroir-embed"
	}
	return events.InferenceRequest{RequestID: "req-0123456789abcdef", Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu", Deployment: "chat",
		SKU: events.SKUStandard, Model: model, Operation: op, Stream: stream, APIFlavor: events.APIFlavorOpenAI, Body: json.RawMessage(body)}
}

// benchServe answers req b.N times and reports the completion tokens per
// answer (tokens/op) and the chunks per answer (chunks/op).
func benchServe(b *testing.B, req events.InferenceRequest) {
	bi := benchBuiltin(b)
	b.ReportAllocs()
	tokens, chunks := 0, 0
	emit := func([]byte) error { chunks++; return nil }
	for b.Loop() {
		ans, err := bi.Serve(b.Context(), req, emit)
		if err != nil {
			b.Fatal(err)
		}
		tokens += ans.Usage.CompletionTokens
	}
	b.ReportMetric(float64(tokens)/float64(b.N), "tokens/op")
	b.ReportMetric(float64(chunks)/float64(b.N), "chunks/op")
}

// BenchmarkGenerate32 is the whole built-in answer to a ~32-token chat
// prompt with max_tokens 32: body parsed, prompt tokenised, tokens
// sampled, response JSON built.
func BenchmarkGenerate32(b *testing.B) {
	for _, c := range []struct{ name, extra string }{
		{"seeded", `,"seed":7`},
		{"unseeded", ``},
		{"greedy", `,"temperature":0`},
		{"topP", `,"temperature":0.8,"top_p":0.9,"seed":7`},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchServe(b, benchRequest(events.OperationChatCompletions, false, fmt.Sprintf(benchChat, c.extra)))
		})
	}
}

// BenchmarkGenerate32Stream is BenchmarkGenerate32 streamed: the same
// answer as chat.completion.chunk objects.
func BenchmarkGenerate32Stream(b *testing.B) {
	benchServe(b, benchRequest(events.OperationChatCompletions, true, fmt.Sprintf(benchChat, `,"stream":true,"seed":7`)))
}

// BenchmarkCompletions32 is a legacy completion of a ~32-token prompt with
// max_tokens 32.
func BenchmarkCompletions32(b *testing.B) {
	const body = `{"model":"chat","prompt":"The state of our Union is strong, and the whale that swam beneath the ship was white as the snow on the mountains.","max_tokens":32,"seed":7}`
	benchServe(b, benchRequest(events.OperationCompletions, false, body))
}

// BenchmarkEmbeddings embeds a ~32-token input at the full and a short
// dimension, as floats and as base64.
func BenchmarkEmbeddings(b *testing.B) {
	for _, c := range []struct{ name, extra string }{
		{"1536", ``},
		{"256-base64", `,"dimensions":256,"encoding_format":"base64"`},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := `{"model":"embed","input":"Tell me about the whale, the sea and the ship that sailed from Nantucket in winter, and of the men aboard her."` + c.extra + `}`
			benchServe(b, benchRequest(events.OperationEmbeddings, false, body))
		})
	}
}
