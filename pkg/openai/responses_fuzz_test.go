package openai_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/openai"
)

// FuzzArgumentsDecoder: tool-call arguments decode to the same text
// however a stream cuts them into pieces, and every byte of text outside
// JSON strings is kept, so nothing hides in arguments that are not JSON.
func FuzzArgumentsDecoder(f *testing.F) {
	for _, s := range []string{`{"a":"\u006bill"}`, `{"e":"\ud83d\ude00","x":[1,"y"]}`, `kill myself`, `{"a":"\`, `"\u12`, `\\\"`, `{"k":"\ud800"}`} {
		f.Add(s, []byte{1, 2, 3})
	}
	f.Fuzz(func(t *testing.T, args string, cuts []byte) {
		whole := openai.ArgumentsText(args)
		var d openai.ArgumentsDecoder
		var got []byte
		rest := args
		for _, c := range cuts {
			if rest == "" {
				break
			}
			n := min(int(c)%8+1, len(rest))
			got = d.Write(got, rest[:n])
			rest = rest[n:]
		}
		got = d.Write(got, rest)
		if string(got) != whole {
			t.Fatalf("in pieces %q, whole %q", got, whole)
		}
		if len(whole) > 4*len(args)+4 {
			t.Fatalf("%d bytes of text from %d of arguments", len(whole), len(args))
		}
	})
}

// FuzzChoice: any choice an upstream may send is read without a panic,
// its text comes out as valid UTF-8 where the input was, and a completion
// object round-trips with every field it does not rewrite.
func FuzzChoice(f *testing.F) {
	for _, s := range []string{
		`{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}],"reasoning_content":"r"},"finish_reason":"stop"}`,
		`{"index":1,"delta":{"content":[{"type":"text","text":"x"}],"function_call":{"name":"n","arguments":"{"}},"logprobs":null}`,
		`{"index":0,"text":"t","logprobs":{"tokens":["t"]},"finish_reason":null}`,
		`{"index":0,"message":{"content":7}}`, `[]`, `{"index":"x"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var c openai.Choice
		if json.Unmarshal([]byte(raw), &c) == nil {
			for _, fld := range c.TextFields() {
				if fld.Text == "" || !strings.HasPrefix(fld.Param, "choices[") {
					t.Fatalf("field %+v", fld)
				}
				if utf8.ValidString(raw) && !utf8.ValidString(fld.Text) {
					t.Fatalf("text of %s is not UTF-8", fld.Param)
				}
			}
		}
		body := `{"id":"x","object":"chat.completion","choices":[` + raw + `]}`
		var comp openai.Completion
		if json.Unmarshal([]byte(body), &comp) != nil {
			return
		}
		out, err := json.Marshal(comp)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back openai.Completion
		if err := json.Unmarshal(out, &back); err != nil || len(back.Choices) != len(comp.Choices) {
			t.Fatalf("round trip of %s: %v", out, err)
		}
	})
}
