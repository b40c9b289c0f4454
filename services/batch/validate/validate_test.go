package validate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/pkg/events"
)

// chat is a valid chat-completions line.
func chat(id, model string) string {
	return `{"custom_id":"` + id + `","method":"POST","url":"/v1/chat/completions","body":{"model":"` + model + `","messages":[{"role":"user","content":"hello"}]}}`
}

// lineWith is a line with the given members, in order; each value is raw JSON.
func lineWith(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", kv[i], kv[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

const okBody = `{"model":"dep","messages":[{"role":"user","content":"hello"}]}`

// got is an error as the tests compare it: without its message.
type got struct {
	Code  string
	Line  int
	Param string
}

func strip(errs []events.BatchError) []got {
	out := make([]got, 0, len(errs))
	for _, e := range errs {
		out = append(out, got{e.Code, e.Line, e.Param})
	}
	return out
}

func equal(a, b []got) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestScanCodes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 513)
	tests := []struct {
		name      string
		endpoint  string
		lim       Limits
		in        string
		want      []got
		wantLines int
		wantDep   string
		wantOp    events.Operation
	}{
		{name: "one valid line", in: chat("a", "dep") + "\n", wantLines: 1, wantDep: "dep"},
		{name: "no trailing newline", in: chat("a", "dep") + "\n" + chat("b", "dep"), wantLines: 2, wantDep: "dep"},
		{name: "CRLF", in: chat("a", "dep") + "\r\n" + chat("b", "dep") + "\r\n", wantLines: 2, wantDep: "dep"},
		{name: "blank lines skipped", in: "\n  \t\n" + chat("a", "dep") + "\n\r\n\n" + chat("b", "dep") + "\n\n", wantLines: 2, wantDep: "dep"},
		{name: "azure endpoint takes both url forms", endpoint: "/chat/completions",
			in:        chat("a", "dep") + "\n" + strings.Replace(chat("b", "dep"), "/v1/chat", "/chat", 1) + "\n",
			wantLines: 2, wantDep: "dep"},
		{name: "completions", endpoint: "/completions", wantOp: events.OperationCompletions, wantLines: 1, wantDep: "dep",
			in: lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/completions"`, "body", `{"model":"dep","prompt":"x"}`)},
		{name: "embeddings", endpoint: "/v1/embeddings", wantOp: events.OperationEmbeddings, wantLines: 1, wantDep: "dep",
			in: lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/embeddings"`, "body", `{"model":"dep","input":"x"}`)},
		{name: "stream false is fine", wantLines: 1, wantDep: "dep",
			in: lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":"dep","stream":false}`)},
		{name: "escaped member name", wantLines: 1, wantDep: "dep",
			in: `{"custom\u005fid":"a","method":"POST","url":"\/v1\/chat\/completions","body":{"model":"d\u0065p"}}`},
		{name: "custom_id of 512 characters", wantLines: 1, wantDep: "dep",
			in: chat(strings.Repeat("é", 512), "dep")},
		{name: "unknown members ignored", wantLines: 1, wantDep: "dep",
			in: lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody, "extra", `[1,{"x":"}"}]`)},

		// invalid_json_line
		{name: "not JSON", in: chat("a", "dep") + "\n{not json\n", wantLines: 2, wantDep: "dep",
			want: []got{{CodeInvalidJSONLine, 2, ""}}},
		{name: "two values on a line", in: chat("a", "dep") + " " + chat("b", "dep"), wantLines: 1,
			want: []got{{CodeInvalidJSONLine, 1, ""}}},
		{name: "array", in: `[1,2]`, wantLines: 1, want: []got{{CodeInvalidJSONLine, 1, ""}}},
		{name: "string", in: `"x"`, wantLines: 1, want: []got{{CodeInvalidJSONLine, 1, ""}}},
		{name: "invalid UTF-8", in: strings.Replace(chat("a", "dep"), "hello", "hel\xfflo", 1), wantLines: 1,
			want: []got{{CodeInvalidJSONLine, 1, ""}}},
		{name: "custom_id a number", wantLines: 1,
			in:   lineWith("custom_id", `7`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidJSONLine, 1, "custom_id"}}},
		{name: "method not a string", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `["POST"]`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidJSONLine, 1, "method"}}},
		{name: "url not a string", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `true`, "body", okBody),
			want: []got{{CodeInvalidJSONLine, 1, "url"}}},
		{name: "model not a string", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":5}`),
			want: []got{{CodeInvalidJSONLine, 1, "body.model"}}},
		{name: "custom_id twice", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "custom_id", `"b"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidJSONLine, 1, "custom_id"}}},
		{name: "body.model twice", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":"dep","model":"other"}`),
			want: []got{{CodeInvalidJSONLine, 1, "body.model"}}},

		// empty_file, empty_batch
		{name: "zero bytes", in: "", want: []got{{CodeEmptyFile, 0, ""}}},
		{name: "only blank lines", in: "\n \r\n\t\n", want: []got{{CodeEmptyBatch, 0, ""}}},

		// too_many_tasks
		{name: "exactly the line limit", lim: Limits{MaxLines: 2}, in: chat("a", "dep") + "\n\n" + chat("b", "dep") + "\n", wantLines: 2, wantDep: "dep"},
		{name: "over the line limit", lim: Limits{MaxLines: 2}, in: chat("a", "dep") + "\n\n" + chat("b", "dep") + "\n" + chat("c", "dep") + "\n" + chat("d", "dep"),
			wantLines: 4, wantDep: "dep", want: []got{{CodeTooManyTasks, 4, ""}}},

		// url_mismatch
		{name: "embeddings url in a chat batch", wantLines: 2, wantDep: "dep",
			in:   chat("a", "dep") + "\n" + lineWith("custom_id", `"b"`, "method", `"POST"`, "url", `"/v1/embeddings"`, "body", okBody),
			want: []got{{CodeURLMismatch, 2, "url"}}},
		{name: "url with a trailing slash", wantLines: 1,
			in:   lineWith("custom_id", `"b"`, "method", `"POST"`, "url", `"/v1/chat/completions/"`, "body", okBody),
			want: []got{{CodeURLMismatch, 1, "url"}}},
		{name: "chat url in a completions batch", endpoint: "/v1/completions", wantOp: events.OperationCompletions, wantLines: 1,
			in:   chat("a", "dep"),
			want: []got{{CodeURLMismatch, 1, "url"}}},

		// invalid_request
		{name: "method GET", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"GET"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "method"}}},
		{name: "method missing", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "method"}}},
		{name: "custom_id missing", wantLines: 1,
			in:   lineWith("method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "custom_id"}}},
		{name: "custom_id in other case is not custom_id", wantLines: 1,
			in:   lineWith("Custom_ID", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "custom_id"}}},
		{name: "custom_id null", wantLines: 1,
			in:   lineWith("custom_id", `null`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "custom_id"}}},
		{name: "custom_id empty", wantLines: 1,
			in:   lineWith("custom_id", `""`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "custom_id"}}},
		{name: "custom_id of 513 characters", wantLines: 1, in: chat(long, "dep"),
			want: []got{{CodeInvalidRequest, 1, "custom_id"}}},
		{name: "url missing", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "body", okBody),
			want: []got{{CodeInvalidRequest, 1, "url"}}},
		{name: "body missing", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`),
			want: []got{{CodeInvalidRequest, 1, "body"}}},
		{name: "body not an object", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `"{\"model\":\"dep\"}"`),
			want: []got{{CodeInvalidRequest, 1, "body"}}},
		{name: "body.stream true", wantLines: 1,
			in:   lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":"dep","stream":true}`),
			want: []got{{CodeInvalidRequest, 1, "body.stream"}}},
		{name: "line over the byte limit", lim: Limits{MaxLineBytes: 200}, wantLines: 3, wantDep: "dep",
			in:   chat("a", "dep") + "\n" + strings.Replace(chat("b", "dep"), "hello", strings.Repeat("x", 200), 1) + "\n" + chat("c", "dep") + "\n",
			want: []got{{CodeInvalidRequest, 2, ""}}},
		{name: "line at the byte limit, CRLF not counted", lim: Limits{MaxLineBytes: len(chat("a", "dep"))}, wantLines: 2, wantDep: "dep",
			in: chat("a", "dep") + "\r\n" + chat("b", "dep") + "\r\n"},
		{name: "blank line over the byte limit is still blank", lim: Limits{MaxLineBytes: 200}, wantLines: 1, wantDep: "dep",
			in: strings.Repeat(" ", 500) + "\n" + chat("b", "dep") + "\n"},
		{name: "byte-order mark", wantLines: 2, wantDep: "dep2",
			in:   "\xef\xbb\xbf" + chat("a", "dep") + "\n" + chat("b", "dep2") + "\n",
			want: []got{{CodeInvalidRequest, 1, ""}}},
		{name: "byte-order mark alone", wantLines: 1, in: "\xef\xbb\xbf",
			want: []got{{CodeInvalidRequest, 1, ""}}},

		// model_mismatch, model_not_found
		{name: "model differs from the first line's", wantLines: 3, wantDep: "dep",
			in:   chat("a", "dep") + "\n" + chat("b", "dep") + "\n" + chat("c", "Dep") + "\n",
			want: []got{{CodeModelMismatch, 3, "body.model"}}},
		{name: "model missing on a line", wantLines: 2, wantDep: "dep",
			in:   chat("a", "dep") + "\n" + lineWith("custom_id", `"b"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"messages":[]}`),
			want: []got{{CodeModelNotFound, 2, "body.model"}}},
		{name: "model empty", wantLines: 1, in: chat("a", ""),
			want: []got{{CodeModelNotFound, 1, "body.model"}}},
		{name: "model null on every line", wantLines: 2,
			in: lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":null}`) + "\n" +
				lineWith("custom_id", `"b"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{}`),
			want: []got{{CodeModelNotFound, 1, "body.model"}, {CodeModelNotFound, 2, "body.model"}}},

		// duplicate_custom_id
		{name: "custom_id used twice", wantLines: 3, wantDep: "dep",
			in:   chat("a", "dep") + "\n" + chat("b", "dep") + "\n" + chat("a", "dep") + "\n",
			want: []got{{CodeDuplicateCustomID, 3, "custom_id"}}},
		{name: "custom_id spelled with an escape is the same", wantLines: 2, wantDep: "dep",
			in:   chat("ab", "dep") + "\n" + chat(`a\u0062`, "dep") + "\n",
			want: []got{{CodeDuplicateCustomID, 2, "custom_id"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			endpoint := tc.endpoint
			if endpoint == "" {
				endpoint = "/v1/chat/completions"
			}
			wantOp := tc.wantOp
			if wantOp == "" {
				wantOp = events.OperationChatCompletions
			}
			res, err := Scan(strings.NewReader(tc.in), endpoint, tc.lim, nil)
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if g := strip(res.Errors); !equal(g, tc.want) {
				t.Errorf("errors = %+v, want %+v (%+v)", g, tc.want, res.Errors)
			}
			if res.Lines != tc.wantLines {
				t.Errorf("Lines = %d, want %d", res.Lines, tc.wantLines)
			}
			if tc.wantDep != "" && res.Deployment != tc.wantDep {
				t.Errorf("Deployment = %q, want %q", res.Deployment, tc.wantDep)
			}
			if res.Operation != wantOp {
				t.Errorf("Operation = %q, want %q", res.Operation, wantOp)
			}
			for _, e := range res.Errors {
				if e.Message == "" {
					t.Errorf("error %+v has no message", e)
				}
				if e.Line > 0 && !strings.Contains(e.Message, fmt.Sprintf("line %d", e.Line)) {
					t.Errorf("message %q does not name line %d", e.Message, e.Line)
				}
			}
		})
	}
}

func TestScanUnsupportedEndpoint(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{"", "/v1/responses", "/v1/moderations", "chat/completions", "/openai/v1/chat/completions"} {
		_, err := Scan(strings.NewReader(chat("a", "dep")), ep, Limits{}, nil)
		if !errors.Is(err, ErrUnsupportedEndpoint) {
			t.Errorf("endpoint %q: err = %v, want ErrUnsupportedEndpoint", ep, err)
		}
	}
	for ep, op := range map[string]events.Operation{
		"/v1/chat/completions": events.OperationChatCompletions, "/chat/completions": events.OperationChatCompletions,
		"/v1/completions": events.OperationCompletions, "/completions": events.OperationCompletions,
		"/v1/embeddings": events.OperationEmbeddings, "/embeddings": events.OperationEmbeddings,
	} {
		if got, ok := EndpointOperation(ep); !ok || got != op {
			t.Errorf("EndpointOperation(%q) = %q, %v; want %q", ep, got, ok, op)
		}
	}
}

func TestScanReportsEveryBadLine(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		chat("a", "dep"), // 1
		"{oops",          // 2
		"",               // 3 blank
		lineWith("custom_id", `"c"`, "method", `"PUT"`, "url", `"/v1/chat/completions"`, "body", okBody), // 4
		chat("a", "dep"),   // 5 duplicate of 1
		chat("f", "other"), // 6
		lineWith("custom_id", `"g"`, "method", `"POST"`, "url", `"/v1/embeddings"`, "body", okBody), // 7
		chat("h", "dep"), // 8 fine
		`[]`,             // 9
	}, "\r\n")
	var seen []int
	res, err := Scan(strings.NewReader(in), "/v1/chat/completions", Limits{}, func(l Line) error {
		seen = append(seen, l.Number)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []got{
		{CodeInvalidJSONLine, 2, ""},
		{CodeInvalidRequest, 4, "method"},
		{CodeDuplicateCustomID, 5, "custom_id"},
		{CodeModelMismatch, 6, "body.model"},
		{CodeURLMismatch, 7, "url"},
		{CodeInvalidJSONLine, 9, ""},
	}
	if g := strip(res.Errors); !equal(g, want) {
		t.Errorf("errors = %+v\nwant %+v", g, want)
	}
	if res.Lines != 8 {
		t.Errorf("Lines = %d, want 8", res.Lines)
	}
	if fmt.Sprint(seen) != "[1 8]" {
		t.Errorf("each saw lines %v, want [1 8]", seen)
	}
}

func TestScanCapsTheErrorList(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("{bad\n", 10) + chat("a", "dep") + "\n"
	res, err := Scan(strings.NewReader(in), "/v1/chat/completions", Limits{MaxErrors: 3, MaxLines: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []got{
		{CodeTooManyTasks, 6, ""},
		{CodeInvalidJSONLine, 1, ""}, {CodeInvalidJSONLine, 2, ""}, {CodeInvalidJSONLine, 3, ""},
		{CodeTooManyErrors, 0, ""},
	}
	if g := strip(res.Errors); !equal(g, want) {
		t.Fatalf("errors = %+v\nwant %+v", g, want)
	}
	if msg := res.Errors[4].Message; !strings.Contains(msg, "7 more") {
		t.Errorf("last message %q does not say 7 more", msg)
	}
	if msg := res.Errors[0].Message; !strings.Contains(msg, "11") || !strings.Contains(msg, "5") {
		t.Errorf("too_many_tasks message %q does not give the count and the limit", msg)
	}
}

// TestScanLinesSliceBackToFile checks what each receives: the byte range
// of a line is the line without its ending, and Body is the body exactly
// as written.
func TestScanLinesSliceBackToFile(t *testing.T) {
	t.Parallel()
	body2 := `{ "messages" : [ {"role":"user","content":"x\"y"} ], "model" : "dep" }`
	lines := []string{
		chat("first", "dep"),
		"  " + lineWith("url", `"/chat/completions"`, "body", body2, "method", `"POST"`, "custom_id", `"sec\u006fnd"`) + "\t",
		chat("third", "dep"),
	}
	in := lines[0] + "\r\n\n" + lines[1] + "\n   \n" + lines[2]
	type want struct {
		number   int
		text     string
		customID string
		url      string
		body     string
	}
	wants := []want{
		{1, lines[0], "first", "/v1/chat/completions", `{"model":"dep","messages":[{"role":"user","content":"hello"}]}`},
		{3, lines[1], "second", "/chat/completions", body2},
		{5, lines[2], "third", "/v1/chat/completions", `{"model":"dep","messages":[{"role":"user","content":"hello"}]}`},
	}
	var gotLines []Line
	res, err := Scan(strings.NewReader(in), "/chat/completions", Limits{}, func(l Line) error {
		gotLines = append(gotLines, l)
		return nil
	})
	if err != nil || len(res.Errors) != 0 {
		t.Fatalf("Scan: %v %+v", err, res.Errors)
	}
	if len(gotLines) != len(wants) {
		t.Fatalf("each called %d times, want %d", len(gotLines), len(wants))
	}
	for i, w := range wants {
		l := gotLines[i]
		if l.Index != i || l.Number != w.number {
			t.Errorf("line %d: Index %d Number %d, want %d %d", i, l.Index, l.Number, i, w.number)
		}
		if s := in[l.Offset : l.Offset+l.Length]; s != w.text {
			t.Errorf("line %d: bytes [%d,+%d) = %q, want %q", i, l.Offset, l.Length, s, w.text)
		}
		if string(l.Body) != w.body {
			t.Errorf("line %d: Body = %s, want %s", i, l.Body, w.body)
		}
		if l.CustomID != w.customID || l.URL != w.url || l.Method != "POST" || l.Model != "dep" || l.Operation != events.OperationChatCompletions {
			t.Errorf("line %d: %+v", i, l)
		}
	}
	// Body must stay valid after Scan returns: it may not share a buffer
	// later lines overwrite.
	if string(gotLines[0].Body) != wants[0].body {
		t.Errorf("Body of line 1 changed after Scan: %s", gotLines[0].Body)
	}
}

func TestScanEstimatedTokens(t *testing.T) {
	t.Parallel()
	in := chat("a", "dep") + "\n" + chat("b", "dep") + "\n"
	n := int64(2 * len(`{"model":"dep","messages":[{"role":"user","content":"hello"}]}`))
	res, err := Scan(strings.NewReader(in), "/v1/chat/completions", Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (n + 3) / 4; res.EstimatedTokens != want {
		t.Errorf("EstimatedTokens = %d, want %d", res.EstimatedTokens, want)
	}
}

func TestScanStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	calls := 0
	in := chat("a", "dep") + "\n" + chat("b", "dep") + "\n" + chat("c", "dep") + "\n"
	_, err := Scan(strings.NewReader(in), "/v1/chat/completions", Limits{}, func(l Line) error {
		calls++
		if l.Number == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Errorf("err = %v after %d calls, want stop after 2", err, calls)
	}
}

type failingReader struct{ after io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.after.Read(p)
	if err == io.EOF {
		return n, errors.New("blob store went away")
	}
	return n, err
}

func TestScanReturnsReadErrors(t *testing.T) {
	t.Parallel()
	_, err := Scan(&failingReader{strings.NewReader(chat("a", "dep") + "\n" + chat("b", "dep"))}, "/v1/chat/completions", Limits{}, nil)
	if err == nil || !strings.Contains(err.Error(), "blob store went away") {
		t.Errorf("err = %v, want the reader's error", err)
	}
}

// TestScanNeverQuotesContent puts a canary in every customer-written
// place of lines that fail in every way, and looks for it in the errors.
func TestScanNeverQuotesContent(t *testing.T) {
	t.Parallel()
	const c = "CANARY7f3a"
	bodyC := `{"model":"` + c + `","messages":[{"role":"user","content":"` + c + `"}]}`
	in := strings.Join([]string{
		chat(c+"1", c),
		chat(c+"1", c), // duplicate
		chat(c+"2", c+"other"),
		`{"` + c + `":`,
		lineWith("custom_id", `"`+c+`3"`, "method", `"`+c+`"`, "url", `"/v1/chat/completions"`, "body", bodyC),
		lineWith("custom_id", `"`+c+`4"`, "method", `"POST"`, "url", `"/`+c+`"`, "body", bodyC),
		lineWith("custom_id", `"`+c+strings.Repeat("x", 600)+`"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", bodyC),
		lineWith("custom_id", `"`+c+`5"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `"`+c+`"`),
		lineWith("custom_id", `"`+c+`6"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":"`+c+`","stream":true}`),
		lineWith("custom_id", `"`+c+`7"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":7,"x":"`+c+`"}`),
		c + strings.Repeat("y", 800),
	}, "\n")
	res, err := Scan(strings.NewReader(in), "/v1/chat/completions", Limits{MaxLineBytes: 700, MaxLines: 3, MaxErrors: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) < 10 {
		t.Fatalf("only %d errors: %+v", len(res.Errors), res.Errors)
	}
	for _, e := range res.Errors {
		if strings.Contains(strings.ToLower(e.Message+e.Param+e.Code), strings.ToLower(c)) {
			t.Errorf("error quotes customer content: %+v", e)
		}
	}
}

// genReader produces n lines on the fly, line i made by mk(i).
type genReader struct {
	n, i int
	mk   func(int) string
	buf  []byte
}

func (g *genReader) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.i >= g.n {
			return 0, io.EOF
		}
		g.buf = append(g.buf[:0], g.mk(g.i)...)
		g.buf = append(g.buf, '\n')
		g.i++
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func TestScanTooManyTasksAtTheDefaultLimit(t *testing.T) {
	t.Parallel()
	r := &genReader{n: DefaultMaxLines + 1, mk: func(i int) string { return chat(fmt.Sprint("req-", i), "dep") }}
	calls := 0
	res, err := Scan(r, "/v1/chat/completions", Limits{}, func(Line) error { calls++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []got{{CodeTooManyTasks, DefaultMaxLines + 1, ""}}
	if g := strip(res.Errors); !equal(g, want) {
		t.Errorf("errors = %+v, want %+v", g, want)
	}
	if res.Lines != DefaultMaxLines+1 || calls != DefaultMaxLines {
		t.Errorf("Lines = %d, each called %d times; want %d and %d", res.Lines, calls, DefaultMaxLines+1, DefaultMaxLines)
	}
}

// hugeLine yields a line of n bytes, then rest; it never holds the line.
type hugeLine struct {
	n       int
	started bool
	rest    *strings.Reader
}

func (h *hugeLine) Read(p []byte) (int, error) {
	if h.n == 0 {
		return h.rest.Read(p)
	}
	k := min(len(p), h.n)
	for i := range k {
		p[i] = 'x'
	}
	if !h.started {
		p[0], h.started = '{', true
	}
	h.n -= k
	return k, nil
}

func TestScanHugeLine(t *testing.T) {
	// Not parallel: it measures the bytes this goroutine's Scan allocates.
	const size = 50 << 20
	tests := []struct {
		name     string
		lim      Limits
		maxAlloc uint64
	}{
		{"default limit", Limits{}, 3 * DefaultMaxLineBytes},
		{"1 MiB limit", Limits{MaxLineBytes: 1 << 20}, 4 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &hugeLine{n: size, rest: strings.NewReader("\n" + chat("b", "dep") + "\n")}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			res, err := Scan(r, "/v1/chat/completions", tc.lim, nil)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			want := []got{{CodeInvalidRequest, 1, ""}}
			if g := strip(res.Errors); !equal(g, want) {
				t.Errorf("errors = %+v, want %+v", g, want)
			}
			if res.Lines != 2 || res.Deployment != "dep" {
				t.Errorf("Lines = %d Deployment %q; want 2 lines of dep", res.Lines, res.Deployment)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > tc.maxAlloc {
				t.Errorf("Scan allocated %d bytes for a %d-byte line, want at most %d", alloc, size, tc.maxAlloc)
			}
		})
	}
}

func FuzzScan(f *testing.F) {
	f.Add([]byte(chat("a", "dep") + "\n" + chat("b", "dep") + "\r\n\n"))
	f.Add([]byte("\xef\xbb\xbf" + chat("a", "dep")))
	f.Add([]byte(`{"custom_id":"a","custom\u005fid":"b","body":{"model":[],"stream":true}}` + "\n[]\n{\n\"x\"\n"))
	f.Add([]byte(lineWith("custom_id", `"a"`, "method", `"POST"`, "url", `"/v1/chat/completions"`, "body", `{"model":"d","x":[{"y":"]}\\\""}]}`)))
	f.Add([]byte(""))
	f.Add([]byte("\n\n \r\n"))
	fileLevel := map[string]bool{CodeEmptyFile: true, CodeEmptyBatch: true, CodeTooManyErrors: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		physical := bytes.Count(data, []byte("\n")) + 1
		for _, lim := range []Limits{{}, {MaxLines: 2, MaxLineBytes: 40, MaxErrors: 2}} {
			calls := 0
			res, err := Scan(bytes.NewReader(data), "/chat/completions", lim, func(l Line) error {
				calls++
				if l.Offset < 0 || l.Length < 0 || l.Offset+l.Length > int64(len(data)) {
					t.Fatalf("line %d: range [%d,+%d) outside %d bytes", l.Number, l.Offset, l.Length, len(data))
				}
				text := data[l.Offset : l.Offset+l.Length]
				if bytes.ContainsRune(text, '\n') || !bytes.Contains(text, l.Body) || len(l.Body) == 0 || l.Body[0] != '{' {
					t.Fatalf("line %d: range %q does not hold body %q", l.Number, text, l.Body)
				}
				if l.Number < 1 || l.Number > physical || l.Model == "" || l.CustomID == "" {
					t.Fatalf("bad line %+v", l)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if res.Lines > physical {
				t.Fatalf("Lines = %d of %d physical lines", res.Lines, physical)
			}
			lineErrs := 0
			for _, e := range res.Errors {
				switch {
				case fileLevel[e.Code]:
					if e.Line != 0 {
						t.Fatalf("file-level error on line %d: %+v", e.Line, e)
					}
				case e.Line < 1 || e.Line > physical:
					t.Fatalf("error line %d outside 1..%d: %+v", e.Line, physical, e)
				case e.Code != CodeTooManyTasks:
					lineErrs++
				}
				if e.Code == "" || e.Message == "" {
					t.Fatalf("error without code or message: %+v", e)
				}
			}
			if lim == (Limits{}) && calls+lineErrs != res.Lines {
				t.Fatalf("%d calls + %d line errors != %d lines", calls, lineErrs, res.Lines)
			}
		}
	})
}

func BenchmarkScan(b *testing.B) {
	var buf bytes.Buffer
	for i := range 10000 {
		fmt.Fprintf(&buf, `{"custom_id":"request-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-batch","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise item %d of the catalogue in two sentences, mentioning its price and weight."}],"max_tokens":200}}`+"\n", i, i)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := Scan(bytes.NewReader(data), "/v1/chat/completions", Limits{}, func(Line) error { return nil })
		if err != nil || len(res.Errors) != 0 || res.Lines != 10000 {
			b.Fatalf("%v %+v", err, res.Errors)
		}
	}
}
