package openai_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/openai"
)

// TestChatTextFieldsCoverEveryField: every field of a chat request that
// the model reads comes out of the one traversal content safety uses,
// each at its parameter path.
func TestChatTextFieldsCoverEveryField(t *testing.T) {
	t.Parallel()
	body := `{"model":"d","messages":[
		{"role":"system","content":"SYSTEMTEXT","name":"SYSNAME"},
		{"role":"user","content":[{"type":"text","text":"PARTTEXT"},{"type":"image_url","image_url":{"url":"https://x.example/a.png"}},{"type":"file","file":{"filename":"FILENAME.pdf","file_data":"AAAA"}}]},
		{"role":"assistant","content":null,"refusal":"REFUSALTEXT","tool_calls":[{"id":"c1","type":"function","function":{"name":"TOOLCALLNAME","arguments":"{\"q\":\"\\u0041RGTEXT\"}"}}]},
		{"role":"assistant","content":[{"type":"refusal","refusal":"PARTREFUSAL"}],"function_call":{"name":"LEGACYNAME","arguments":"{\"x\":\"LEGACYARGS\"}"}},
		{"role":"tool","tool_call_id":"c1","content":"TOOLRESULT"},
		{"role":"function","name":"fn","content":"FUNCRESULT"}],
	"tools":[{"type":"function","function":{"name":"TOOLDEFNAME","description":"TOOLDESC","parameters":{"type":"object","properties":{"target":{"type":"string","description":"PARAMDESC","enum":["ENUMVAL"]}}}}}],
	"functions":[{"name":"FUNCDEFNAME","description":"FUNCDESC","parameters":{"properties":{"a":{"description":"FUNCPARAMDESC"}}}}],
	"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"properties":{"b":{"description":"SCHEMADESC"}}}}},
	"prediction":{"type":"content","content":"PREDICTION"},
	"tool_choice":{"type":"function","function":{"name":"CHOICENAME"}}}`
	var r openai.ChatRequest
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	fields, err := r.TextFields()
	if err != nil {
		t.Fatal(err)
	}
	all := openai.Join(fields)
	for _, want := range []string{"SYSTEMTEXT", "SYSNAME", "PARTTEXT", "FILENAME.pdf", "REFUSALTEXT", "TOOLCALLNAME", "ARGTEXT",
		"PARTREFUSAL", "LEGACYNAME", "LEGACYARGS", "TOOLRESULT", "FUNCRESULT", "TOOLDEFNAME", "TOOLDESC", "PARAMDESC", "ENUMVAL",
		"FUNCDEFNAME", "FUNCDESC", "FUNCPARAMDESC", "SCHEMADESC", "PREDICTION", "CHOICENAME"} {
		if !strings.Contains(all, want) {
			t.Errorf("text fields miss %s", want)
		}
	}
	params := map[string]string{}
	for _, f := range fields {
		params[f.Param] = f.Text
	}
	for param, want := range map[string]string{
		"messages[0].content":                          "SYSTEMTEXT",
		"messages[1].content[0].text":                  "PARTTEXT",
		"messages[2].tool_calls[0].function.arguments": "ARGTEXT",
		"messages[3].content[0].refusal":               "PARTREFUSAL",
		"tools[0].function.description":                "TOOLDESC",
	} {
		if !strings.Contains(params[param], want) {
			t.Errorf("%s = %q, want it to hold %s", param, params[param], want)
		}
	}
}

func TestUncheckablePartIsRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, body, param string }{
		{"unknown part type", `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"secret_text","secret_text":"kill"}]}]}`, "messages[0].content[1].type"},
		{"text part without text", `{"messages":[{"role":"user","content":[{"type":"text","value":"hi"}]}]}`, "messages[0].content[0].text"},
		{"missing type", `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`, "messages[0].content[0].type"},
		{"object content", `{"messages":[{"role":"user","content":{"text":"hi"}}]}`, "messages[0].content"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r openai.ChatRequest
			if err := json.Unmarshal([]byte(c.body), &r); err != nil {
				t.Fatal(err)
			}
			err := r.Validate()
			var fe *openai.FieldError
			if !errors.As(err, &fe) || fe.Param != c.param {
				t.Fatalf("Validate = %v, want an error naming %s", err, c.param)
			}
			if strings.Contains(fe.Message, "kill") {
				t.Errorf("error message echoes content: %q", fe.Message)
			}
		})
	}
}

func TestArgumentsDecoder(t *testing.T) {
	t.Parallel()
	args := `{"who":"\u006bill \"them\"","emoji":"\ud83d\ude00","n":3,"list":["my\u0073elf"]}`
	whole := openai.ArgumentsText(args)
	for _, want := range []string{"kill \"them\"", "\U0001F600", "myself", "who", "3"} {
		if !strings.Contains(whole, want) {
			t.Errorf("ArgumentsText = %q, want it to hold %q", whole, want)
		}
	}
	// pieces of every size decode to the same text
	for size := 1; size < 8; size++ {
		var d openai.ArgumentsDecoder
		var got []byte
		for i := 0; i < len(args); i += size {
			got = d.Write(got, args[i:min(i+size, len(args))])
		}
		if string(got) != whole {
			t.Errorf("in pieces of %d: %q, want %q", size, got, whole)
		}
	}
	if got := openai.ArgumentsText("kill myself"); !strings.Contains(got, "kill myself") {
		t.Errorf("arguments that are not JSON: %q", got)
	}
}

func TestChoiceTextFields(t *testing.T) {
	t.Parallel()
	raw := `{"index":0,"message":{"role":"assistant","content":"CONTENT","refusal":"REFUSAL","reasoning_content":"REASONING",
		"reasoning":{"summary":[{"text":"SUMMARY"}]},"audio":{"id":"a","transcript":"TRANSCRIPT"},
		"tool_calls":[{"id":"c","type":"function","function":{"name":"NAME","arguments":"{\"a\":\"\\u0041RGS\"}"}}],
		"function_call":{"name":"FNAME","arguments":"FARGS"}},"logprobs":{"content":[{"token":"LOGPROB"}]},"finish_reason":"stop"}`
	var c openai.Choice
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	all := openai.Join(c.TextFields())
	for _, want := range []string{"CONTENT", "REFUSAL", "REASONING", "SUMMARY", "TRANSCRIPT", "NAME", "ARGS", "FNAME", "FARGS"} {
		if !strings.Contains(all, want) {
			t.Errorf("choice text misses %s", want)
		}
	}
	if strings.Contains(all, "LOGPROB") {
		t.Error("logprobs read as text")
	}
}

// TestBlockedChoiceIsAnAllowList: a blocked choice carries only its
// index, the filter's verdict and empty text, whatever the model sent.
func TestBlockedChoiceIsAnAllowList(t *testing.T) {
	t.Parallel()
	res := openai.ContentFilterResults{Violence: &openai.CategoryFilterResult{Filtered: true, Severity: "high"}}
	for _, c := range []struct {
		kind openai.ChoiceKind
		role bool
		keys []string
	}{
		{openai.ChatChoice, false, []string{"content_filter_results", "finish_reason", "index", "logprobs", "message"}},
		{openai.ChatChunkChoice, true, []string{"content_filter_results", "delta", "finish_reason", "index", "logprobs"}},
		{openai.TextChoice, false, []string{"content_filter_results", "finish_reason", "index", "logprobs", "text"}},
	} {
		b, err := json.Marshal(openai.NewBlockedChoice(c.kind, 2, res, c.role))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, c.keys) {
			t.Errorf("%s: keys %v, want %v", b, keys, c.keys)
		}
		if string(m["logprobs"]) != "null" || string(m["finish_reason"]) != `"content_filter"` {
			t.Errorf("%s", b)
		}
		if msg, ok := m["message"]; ok && string(msg) != `{"role":"assistant","content":null,"refusal":null}` {
			t.Errorf("message %s", msg)
		}
		if d, ok := m["delta"]; ok && string(d) != `{"role":"assistant"}` {
			t.Errorf("delta %s", d)
		}
	}
}

// TestCompletionKeepsWhatItDoesNotRead: content safety rewrites choices
// and prompt_filter_results and nothing else of an answer.
func TestCompletionKeepsWhatItDoesNotRead(t *testing.T) {
	t.Parallel()
	in := `{"id":"c1","object":"chat.completion","created":7,"model":"m","system_fingerprint":"fp","service_tier":"default","x_vendor":{"a":1},
		"usage":{"prompt_tokens":1},"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`
	var c openai.Completion
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || len(c.Choices) != 1 {
		t.Fatalf("%+v", c)
	}
	ch, err := openai.AnnotateChoice(c.Choices[0], openai.ContentFilterResults{Hate: &openai.CategoryFilterResult{Severity: "safe"}})
	if err != nil {
		t.Fatal(err)
	}
	c.Choices[0] = ch
	c.PromptFilterResults = []openai.PromptFilterResult{{PromptIndex: 0}}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "object", "created", "model", "system_fingerprint", "service_tier", "x_vendor", "usage"} {
		a, _ := json.Marshal(got[k])
		b, _ := json.Marshal(want[k])
		if string(a) != string(b) {
			t.Errorf("%s = %s, want %s", k, a, b)
		}
	}
	if !strings.Contains(string(out), `"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}`) || !strings.Contains(string(out), `"prompt_filter_results":[`) {
		t.Errorf("annotations missing: %s", out)
	}
	var list openai.Completion
	if err := json.Unmarshal([]byte(`{"object":"list","data":[]}`), &list); err != nil || list.Choices != nil {
		t.Errorf("a list has no choices: %+v %v", list, err)
	}
}
