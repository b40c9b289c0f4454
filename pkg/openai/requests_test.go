package openai_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/terroir-ai/terroir/pkg/openai"
)

func TestValidationNamesTheParameter(t *testing.T) {
	cases := []struct {
		name, kind, body, param string
	}{
		{"ok chat", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"stop":"x","n":2,"temperature":0.5,"top_p":1,"seed":3}`, ""},
		{"content parts", "chat", `{"model":"d","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, ""},
		{"no messages", "chat", `{"model":"d","messages":[]}`, "messages"},
		{"bad role", "chat", `{"model":"d","messages":[{"role":"robot","content":"hi"}]}`, "messages[0].role"},
		{"bad content", "chat", `{"model":"d","messages":[{"role":"user","content":7}]}`, "messages[0].content"},
		{"n range", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"n":0}`, "n"},
		{"too many stops", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"]}`, "stop"},
		{"temperature range", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"temperature":2.5}`, "temperature"},
		{"top_p range", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"top_p":0}`, "top_p"},
		{"max tokens", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, "max_tokens"},
		{"max completion tokens", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":-1}`, "max_completion_tokens"},
		{"both limits", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_completion_tokens":5}`, "max_tokens"},
		{"stream options without stream", "chat", `{"model":"d","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, "stream_options"},
		{"ok completion list", "completion", `{"model":"d","prompt":["a","b"],"max_tokens":5}`, ""},
		{"token prompt", "completion", `{"model":"d","prompt":[1,2,3]}`, "prompt"},
		{"bad prompt", "completion", `{"model":"d","prompt":{"x":1}}`, "prompt"},
		{"ok embedding", "embedding", `{"model":"d","input":["a","b"],"encoding_format":"base64","dimensions":256}`, ""},
		{"empty input", "embedding", `{"model":"d","input":""}`, "input"},
		{"empty input item", "embedding", `{"model":"d","input":["a",""]}`, "input[1]"},
		{"encoding", "embedding", `{"model":"d","input":"a","encoding_format":"hex"}`, "encoding_format"},
		{"dimensions", "embedding", `{"model":"d","input":"a","dimensions":5000}`, "dimensions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v interface{ Validate() error }
			switch c.kind {
			case "chat":
				v = &openai.ChatRequest{}
			case "completion":
				v = &openai.CompletionRequest{}
			default:
				v = &openai.EmbeddingRequest{}
			}
			if err := json.Unmarshal([]byte(c.body), v); err != nil {
				t.Fatal(err)
			}
			err := v.Validate()
			var fe *openai.FieldError
			switch {
			case c.param == "" && err != nil:
				t.Fatalf("valid request refused: %v", err)
			case c.param != "" && (!errors.As(err, &fe) || fe.Param != c.param):
				t.Fatalf("err = %v, want one about %q", err, c.param)
			}
		})
	}
}

func TestStopAcceptsStringOrList(t *testing.T) {
	var r openai.ChatRequest
	if err := json.Unmarshal([]byte(`{"stop":"END"}`), &r); err != nil || len(r.Stop) != 1 || r.Stop[0] != "END" {
		t.Fatalf("%v %v", r.Stop, err)
	}
	if err := json.Unmarshal([]byte(`{"stop":[1]}`), &r); err == nil {
		t.Fatal("numeric stop accepted")
	}
	m := openai.ChatMessage{Content: json.RawMessage(`[{"type":"text","text":"a"},{"type":"image_url","image_url":{}},{"type":"text","text":"b"}]`)}
	if s, err := m.Text(); err != nil || s != "a\nb" {
		t.Fatalf("Text = %q %v", s, err)
	}
}
