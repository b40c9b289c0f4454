package worker

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// tricky texts: every escape encoding/json makes.
var tricky = []string{"", "plain text.", "quote \" and \\ backslash", "tab\tnew\nline\rcr\f\b", "ctrl \x00\x01\x1f\x7f",
	"<script>&amp;</script>", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xe2\x82", "café ☕ 𝄞", "{\"json\": [1, 2]}"}

// TestEncodersWriteWhatEncodingJSONWrites: the append-based encoders give
// byte for byte the objects encoding/json gives for the same maps, so the
// wire shapes of built-in answers did not change.
func TestEncodersWriteWhatEncodingJSONWrites(t *testing.T) {
	t.Parallel()
	h := &head{id: "chatcmpl-req<1>", model: "terroir-ngram", fingerprint: "terroir-terroir-ngram", created: 1700000000}
	marshal := func(v any) string {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	headMap := func(object string) map[string]any {
		return map[string]any{"id": h.id, "object": object, "created": h.created, "model": h.model, "system_fingerprint": h.fingerprint}
	}
	u := events.Usage{PromptTokens: 26, CompletionTokens: 31, TotalTokens: 57}
	for _, text := range tricky {
		choices := []builtin.Choice{{Index: 0, Text: text, FinishReason: "stop"}, {Index: 1, Text: text + "!", FinishReason: "length"}}
		want := headMap("chat.completion")
		want["usage"] = u
		var out []any
		for _, c := range choices {
			out = append(out, map[string]any{"index": c.Index, "message": map[string]any{"role": "assistant", "content": c.Text, "refusal": nil},
				"logprobs": nil, "finish_reason": c.FinishReason})
		}
		want["choices"] = out
		if got := string(chatBody(h, choices, u)); got != marshal(want) {
			t.Errorf("chat body\n got %s\nwant %s", got, marshal(want))
		}

		cc := []completionChoice{{index: 0, finish: "stop", text: text}, {index: 3, finish: "length", prefix: "Echo <", text: text}}
		want = headMap("text_completion")
		want["usage"] = u
		out = nil
		for _, c := range cc {
			out = append(out, map[string]any{"index": c.index, "text": c.prefix + c.text, "logprobs": nil, "finish_reason": c.finish})
		}
		want["choices"] = out
		if got := string(completionBody(h, cc, u)); got != marshal(want) {
			t.Errorf("completion body\n got %s\nwant %s", got, marshal(want))
		}

		for _, chat := range []bool{true, false} {
			for _, first := range []bool{true, false} {
				for _, finish := range []string{"", "stop"} {
					object, ch := "text_completion", map[string]any{"index": 2, "logprobs": nil, "finish_reason": any(nil)}
					if finish != "" {
						ch["finish_reason"] = finish
					}
					if chat {
						object = "chat.completion.chunk"
						d := map[string]any{"content": text}
						if first {
							d["role"] = "assistant"
						}
						ch["delta"] = d
					} else {
						ch["text"] = text
					}
					want := headMap(object)
					want["choices"] = []any{ch}
					if got := string(chunkBody(h, chat, 2, text, first, finish)); got != marshal(want) {
						t.Errorf("chunk (chat %v, first %v, finish %q)\n got %s\nwant %s", chat, first, finish, got, marshal(want))
					}
				}
			}
		}
	}

	vecs := [][]float32{{0, 1, -1, 0.5, 1e-7, -3.25e-9, 1.0000001, float32(math.Pi), 123456.79, 2e21}, {0.1, 0.2}}
	eu := events.Usage{PromptTokens: 9, TotalTokens: 9}
	for _, b64 := range []bool{false, true} {
		var data []any
		for i, v := range vecs {
			var emb any = v
			if b64 {
				buf := make([]byte, 4*len(v))
				for j, f := range v {
					binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(f))
				}
				emb = base64.StdEncoding.EncodeToString(buf)
			}
			data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": emb})
		}
		want := map[string]any{"object": "list", "data": data, "model": "terroir-embed",
			"usage": map[string]int{"prompt_tokens": eu.PromptTokens, "total_tokens": eu.TotalTokens}}
		if got := string(embeddingsBody("terroir-embed", vecs, b64, eu)); got != marshal(want) {
			t.Errorf("embeddings (base64 %v)\n got %s\nwant %s", b64, got, marshal(want))
		}
	}
}
