package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai/openaitest"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

var fuzzOps = []events.Operation{events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings}

// FuzzParse runs app request bodies through the REST edge's decode and
// validation: nothing panics; a refused body is a 400 naming a parameter
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
		p, err := parse(o, body)
		if err == nil {
			if p.choices < 1 || p.choices > 128 {
				t.Fatalf("accepted with %d choices", p.choices)
			}
			if p.estimate < 0 || o != events.OperationEmbeddings && p.estimate < p.choices {
				t.Fatalf("accepted with a token estimate of %d for %d choices", p.estimate, p.choices)
			}
			return
		}
		e, ok := errors.AsType[*apierr.Error](err)
		if !ok {
			t.Fatalf("parse returned %T: %v", err, err)
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
