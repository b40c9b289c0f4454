package openai_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/pkg/openai/openaitest"
)

// The fuzz targets below decode arbitrary bodies into each request type
// and check what the REST edge relies on: nothing panics, Validate either
// accepts the request or names a parameter, and an error never carries
// the body's text (prompt text must not reach an error message).

// maxMessage bounds an error message whatever the request holds.
const maxMessage = 256

// canary is sent as prompt text by the seeds; no error may repeat it.
const canary = "CANARY prompt text that must never reach an error message"

func FuzzChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"d","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"d","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}]}`,
		`{"model":"d","messages":[{"role":"system","content":null},{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]}`,
		`{"model":"d","messages":[{"role":"` + canary + `","content":"hi"}]}`,
		`{"model":"d","messages":[{"role":"user","content":{"text":"` + canary + `"}}]}`,
		`{"model":"d","messages":[{"role":"user","content":"` + canary + `"}],"n":0,"stop":["` + canary + `"]}`,
		`{"model":"d","messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"],"temperature":3,"top_p":0}`,
		`{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"max_completion_tokens":1}`,
		`{"model":"d","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`,
		`{"model":"d","messages":[{"role":"user","content":"hi"}],"presence_penalty":-2.5,"frequency_penalty":1e308}`,
		`{"model":"d","messages":[{"role":"user","content":"hi"}],"data_sources":[{"type":"azure_search"}]}`,
		`{"model":"d","messages":[]}`,
		`{"messages":[{"role":"user","content":"\ud800"}],"stop":"x"}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}`,
		`{"messages":[{"role":"user","content":  "x" }]}`,
		`null`, `[]`, `"x"`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r openai.ChatRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		for _, m := range r.Messages {
			text, err := m.Text()
			if err != nil {
				checkError(t, body, "", err)
			} else if len(text) > 3*len(m.Content) {
				// each part is joined by one newline and decodes to at
				// most three bytes per byte of its JSON (an invalid
				// byte becomes U+FFFD)
				t.Fatalf("text of %d bytes from content of %d bytes", len(text), len(m.Content))
			}
		}
		fields, ferr := r.TextFields()
		verr := r.Validate()
		if ferr != nil && verr == nil {
			t.Fatalf("a request whose text fields cannot be read validates: %v", ferr)
		}
		if ferr == nil {
			for _, f := range fields {
				if f.Param == "" || f.Text == "" {
					t.Fatalf("text field %+v", f)
				}
			}
		}
		checkValidate(t, body, verr)
		_ = r.TokenLimit()
		_ = r.Choices()
		_ = r.IncludeUsage()
	})
}

func FuzzCompletionRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"d","prompt":"hi"}`,
		`{"model":"d","prompt":["a","b"],"best_of":2,"n":2}`,
		`{"model":"d","prompt":null,"suffix":"s","echo":true}`,
		`{"model":"d","prompt":[]}`,
		`{"model":"d","prompt":[1,2,3]}`,
		`{"model":"d","prompt":[[1,2],[3]]}`,
		`{"model":"d","prompt":{"text":"` + canary + `"}}`,
		`{"model":"d","prompt":["` + canary + `",7]}`,
		`{"model":"d","prompt":"` + canary + `","best_of":21}`,
		`{"model":"d","prompt":"x","best_of":1,"n":3}`,
		`{"model":"d","prompt":"x","max_tokens":-5,"stop":""}`,
		`{"model":"d","prompt":"\"unterminated`,
		`{"prompt":"\u0000\ufffd"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r openai.CompletionRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		prompts, err := r.Prompts()
		if err != nil {
			checkError(t, body, "prompt", err)
		} else if len(prompts) == 0 {
			t.Fatal("Prompts returned no prompt and no error")
		}
		checkValidate(t, body, r.Validate())
	})
}

func FuzzEmbeddingRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"d","input":"hi"}`,
		`{"model":"d","input":["a","b"],"encoding_format":"base64","dimensions":256}`,
		`{"model":"d","input":""}`,
		`{"model":"d","input":["a",""]}`,
		`{"model":"d","input":[]}`,
		`{"model":"d","input":null}`,
		`{"model":"d","input":[1,2]}`,
		`{"model":"d","input":[[1],[2]]}`,
		`{"model":"d","input":"x","encoding_format":"` + canary + `"}`,
		`{"model":"d","input":{"a":"` + canary + `"}}`,
		`{"model":"d","input":"x","dimensions":0}`,
		`{"model":"d","input":"x","dimensions":99999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r openai.EmbeddingRequest
		if json.Unmarshal(body, &r) != nil {
			return
		}
		inputs, err := r.Inputs()
		if err != nil {
			checkError(t, body, "input", err)
		} else {
			if len(inputs) == 0 || len(inputs) > openai.MaxEmbeddingInputs {
				t.Fatalf("Inputs returned %d inputs", len(inputs))
			}
			for i, in := range inputs {
				if in == "" {
					t.Fatalf("input %d is empty", i)
				}
			}
		}
		checkValidate(t, body, r.Validate())
	})
}

func checkValidate(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := errors.AsType[*openai.FieldError](err); !ok {
		t.Fatalf("Validate returned %T, not a *FieldError: %v", err, err)
	}
	checkError(t, body, "", err)
}

// checkError checks an error about body: it names a parameter (param,
// when given, or a prefix of it), is short, and quotes nothing longer
// than openaitest.MaxEcho from the body.
func checkError(t *testing.T, body []byte, param string, err error) {
	t.Helper()
	msg := err.Error()
	if msg == "" {
		t.Fatal("error with an empty message")
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("error message is not valid UTF-8: %q", msg)
	}
	if len(msg) > maxMessage {
		t.Fatalf("error message of %d bytes: %.80q...", len(msg), msg)
	}
	if fe, ok := errors.AsType[*openai.FieldError](err); ok {
		if fe.Param == "" {
			t.Fatalf("error names no parameter: %q", msg)
		}
		if param != "" && !strings.HasPrefix(fe.Param, param) {
			t.Fatalf("error names parameter %q, want %q", fe.Param, param)
		}
	}
	if err := openaitest.CheckNoEcho(body, msg); err != nil {
		t.Fatal(err)
	}
}
