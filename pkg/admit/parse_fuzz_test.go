package admit_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai/openaitest"
)

var fuzzOps = []events.Operation{events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings}

// FuzzParse runs request bodies through Parse (the decode and
// validation of the REST edge and of batch lines): nothing panics; a refused body is a 400 naming a parameter
// in a short message that repeats no long string of the body; an
// accepted one has 1 to 128 choices and a token estimate the rate limit
// can charge (not negative, not wrapped around).
func FuzzParse(f *testing.F) {
	long := strings.Repeat("prompt text ", 10)
	for _, s := range []struct {
		op   uint8
		body string
	}{
		{0, `{"model":"d","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"n":2}`},
		{0, `{"model":"d","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_completion_tokens":5}`},
		{0, `{"model":"d","messages":[{"role":"` + long + `","content":"hi"}]}`},
		{0, `{"model":"d","messages":[{"role":"user","content":"hi","` + long + `":1}]}`},
		{0, `{"model":"d","messages":[{"role":"user","content":"hi"}],"temprature":1}`},
		{0, `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775807}`},
		{0, `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":144115188075855872,"n":128}`},
		{0, `{"model":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":1e30}`},
		{0, `{"model":"d","messages":"` + long + `"}`},
		{1, `{"model":"d","prompt":["a","b"],"max_tokens":7}`},
		{1, `{"model":"d","prompt":"hello","max_tokens":9223372036854775807}`},
		{1, `{"model":"d","prompt":[1,2,3]}`},
		{1, `{"model":"d","prompt":{"` + long + `":"x"}}`},
		{2, `{"model":"d","input":["a","b"],"encoding_format":"float"}`},
		{2, `{"model":"d","input":"x","encoding_format":"` + long + `"}`},
		{2, `{"model":"d","input":"x","dimensions":` + strings.Repeat("9", 80) + `}`},
		{2, ``}, {0, `{} {}`}, {1, `[`},
	} {
		f.Add(s.op, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		o := fuzzOps[int(op)%len(fuzzOps)]
		p, err := admit.Parse(o, body)
		if err == nil {
			if p.Choices < 1 || p.Choices > 128 {
				t.Fatalf("accepted with %d choices", p.Choices)
			}
			if p.Estimate < 0 || o != events.OperationEmbeddings && p.Estimate < p.Choices {
				t.Fatalf("accepted with a token estimate of %d for %d choices", p.Estimate, p.Choices)
			}
			return
		}
		e, ok := errors.AsType[*admit.Refusal](err)
		if !ok {
			t.Fatalf("Parse returned %T: %v", err, err)
		}
		if e.Status != http.StatusBadRequest || e.Param == "" || e.Message == "" {
			t.Fatalf("got %d %q %q, want a 400 naming a parameter", e.Status, e.Param, e.Message)
		}
		for _, s := range []string{e.Message, e.Param} {
			if !utf8.ValidString(s) || len(s) > 256 {
				t.Fatalf("error %q / %q: not UTF-8 or too long", e.Param, e.Message)
			}
		}
		if err := openaitest.CheckNoEcho(body, e.Message, e.Param); err != nil {
			t.Fatal(err)
		}
	})
}
