package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/catalog"
	"github.com/terroir-ai/terroir/pkg/events"
)

// fuzzDeadline bounds one input of a fuzz target: every reader here must
// return long before it on the few kilobytes the fuzzer sends.
const fuzzDeadline = 10 * time.Second

// within runs f and fails t when it does not return within fuzzDeadline
// (a hang on some input is a bug, and the fuzzer would otherwise wait
// for it forever).
func within(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(fuzzDeadline):
		t.Fatalf("did not return within %v", fuzzDeadline)
	}
}

// chunkedReader returns r's bytes in reads of the sizes in sizes, in turn,
// so that line ends fall across reads; a size of 0 reads one byte.
type chunkedReader struct {
	r     io.Reader
	sizes []byte
	n     int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	size := 1
	if len(c.sizes) > 0 {
		size = max(1, int(c.sizes[c.n%len(c.sizes)]))
		c.n++
	}
	return c.r.Read(p[:min(len(p), size)])
}

// sseEvents reads every event of r; err is the error that ended it, nil
// at a clean end.
func sseEvents(r io.Reader) (events []string, err error) {
	s := newSSEReader(r)
	for {
		data, err := s.next()
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, string(data))
	}
}

// FuzzSSEReader reads arbitrary bytes as a stream: reading ends, however
// the bytes arrive (the events do not depend on where reads split the
// stream), and every event is well formed: no carriage return (every
// line end is read as one), no more events than lines, and no more bytes
// than the stream held.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{
		"data: {\"a\":1}\n\ndata: [DONE]\n\n",
		"data: one\r\n\r\ndata: two\r\n\r\n",
		"data: one\r\rdata: two\r\r",
		": ping\n\nevent: delta\nid: 7\nretry: 10\ndata: x\n\n",
		"data: {\"a\":\ndata:1}\n\n",
		"data:  x\n\ndata\n\ndata: a\n\ndata: b",
		"\n\n\ndata: a\n\n\n",
		"data: a\r",
		"data: a\r\n",
		"\r\n\r\r\n\n\r",
		"data:\x00\xff\xfe\n\n",
		"datadata: x\n:data: y\n\n",
	} {
		f.Add([]byte(s), []byte{1})
		f.Add([]byte(s), []byte{3, 1, 7})
	}
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		var whole, split []string
		var errWhole, errSplit error
		within(t, func() {
			whole, errWhole = sseEvents(bytes.NewReader(stream))
			split, errSplit = sseEvents(&chunkedReader{r: bytes.NewReader(stream), sizes: sizes})
		})
		if errWhole != nil || errSplit != nil {
			t.Fatalf("read errors %v, %v on a short stream", errWhole, errSplit)
		}
		if strings.Join(whole, "\x00|") != strings.Join(split, "\x00|") || len(whole) != len(split) {
			t.Fatalf("events depend on how the stream is read:\n whole %q\n split %q", whole, split)
		}
		lines := 1 + bytes.Count(stream, []byte("\n")) + bytes.Count(stream, []byte("\r"))
		if len(whole) > lines {
			t.Fatalf("%d events from %d lines", len(whole), lines)
		}
		total := 0
		for _, e := range whole {
			if strings.Contains(e, "\r") {
				t.Fatalf("event %q holds a carriage return", e)
			}
			total += len(e)
		}
		if total > len(stream) {
			t.Fatalf("%d bytes of events from a stream of %d", total, len(stream))
		}
	})
}

// FuzzSSERoundTrip writes two payloads as events, each line of a payload
// as a data line, and reads them back: a payload's lines are joined by
// "\n" whatever line ends it had.
func FuzzSSERoundTrip(f *testing.F) {
	f.Add("{\"a\":1}", "[DONE]", false)
	f.Add("one\r\ntwo\rthree\nfour", "", true)
	f.Add(" leading space", ":not a comment", false)
	f.Add("\n", "\r\n", true)
	f.Fuzz(func(t *testing.T, a, b string, crlf bool) {
		nl := "\n"
		if crlf {
			nl = "\r\n"
		}
		lines := func(p string) []string {
			return strings.Split(strings.ReplaceAll(strings.ReplaceAll(p, "\r\n", "\n"), "\r", "\n"), "\n")
		}
		var stream strings.Builder
		want := []string{}
		for _, p := range []string{a, b} {
			ls := lines(p)
			for _, l := range ls {
				stream.WriteString("data: " + l + nl)
			}
			stream.WriteString(nl)
			want = append(want, strings.Join(ls, "\n"))
		}
		var got []string
		var err error
		within(t, func() { got, err = sseEvents(strings.NewReader(stream.String())) })
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || strings.Join(got, "\x00|") != strings.Join(want, "\x00|") {
			t.Fatalf("read %q, want %q", got, want)
		}
	})
}

const fuzzModel = "catalog-model"

func fuzzUpstream(t *testing.T) *Upstream {
	t.Helper()
	u, err := NewUpstream(catalog.Backend{BaseURL: "http://upstream.invalid/v1", Model: "upstream-model"}, "", nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func fuzzRequest(op events.Operation, stream, appUsage bool) events.InferenceRequest {
	body := map[events.Operation]string{
		events.OperationChatCompletions: `{"model":"d","messages":[{"role":"user","content":"Say hello"}]`,
		events.OperationCompletions:     `{"model":"d","prompt":"Say hello"`,
		events.OperationEmbeddings:      `{"model":"d","input":["a","b"]`,
	}[op]
	if stream {
		body += `,"stream":true`
		if appUsage {
			body += `,"stream_options":{"include_usage":true}`
		}
	}
	return events.InferenceRequest{RequestID: "req", Model: fuzzModel, Operation: op, Stream: stream, Body: json.RawMessage(body + "}")}
}

// checkFailure checks that a failed read says what failed in the bus's
// error vocabulary, or is an internal error.
func checkFailure(t *testing.T, f *failure) {
	t.Helper()
	if f.err == nil {
		t.Fatal("a failure without an error")
	}
	if e, ok := errors.AsType[*Error](f.err); ok && (e.Kind == "" || e.Message == "") {
		t.Fatalf("error without a kind or message: %+v", e)
	}
}

// FuzzReadStream passes arbitrary bytes through as an upstream's
// streamed answer: reading ends, and every chunk passed on is a JSON
// object naming the catalog model, with no usage of the upstream's (null
// when the app asked for a usage chunk).
func FuzzReadStream(f *testing.F) {
	for _, s := range []string{
		"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"upstream-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n" +
			"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"index\":0,\"text\":\"x\",\"finish_reason\":\"length\"}]}\n\n",
		"data: {\"choices\":[{\"index\":1,\"text\":\"x\"}]}\n\n",
		"data: {\"choices\":[{\"index\":-5,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
		"data: {\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"param\":\"stream_options\"}}\n\n",
		"data: {\"error\":\"overloaded\"}\n\n",
		"data: {\"error\":{\"code\":503}}\n\n",
		"data: not json\n\n",
		"data: null\n\n",
		"data: {\"choices\":\"x\",\"usage\":{\"prompt_tokens\":-1}}\n\n",
		"data: {\"model\":1,\"usage\":null,\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}]}\n\n",
		"",
		"data:",
	} {
		f.Add([]byte(s), uint8(0), false)
		f.Add([]byte(s), uint8(1), true)
	}
	ops := []events.Operation{events.OperationChatCompletions, events.OperationCompletions}
	f.Fuzz(func(t *testing.T, stream []byte, op uint8, appUsage bool) {
		u := fuzzUpstream(t)
		var chunks [][]byte
		c, err := u.newCall(fuzzRequest(ops[int(op)%len(ops)], true, appUsage), func(chunk []byte) error {
			chunks = append(chunks, chunk)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var fail *failure
		within(t, func() { _, fail = u.readStream(bytes.NewReader(stream), c) })
		if fail != nil {
			checkFailure(t, fail)
		}
		if c.emitted != len(chunks) {
			t.Fatalf("%d chunks counted, %d emitted", c.emitted, len(chunks))
		}
		for _, chunk := range chunks {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(chunk, &obj); err != nil || obj == nil {
				t.Fatalf("chunk %q is not a JSON object", chunk)
			}
			if string(obj["model"]) != `"`+fuzzModel+`"` {
				t.Fatalf("chunk names model %s", obj["model"])
			}
			if usage, ok := obj["usage"]; ok != appUsage || ok && string(usage) != "null" {
				t.Fatalf("chunk usage %q with app usage %v", usage, appUsage)
			}
		}
	})
}

// FuzzReadBody reads arbitrary bytes as an upstream's whole answer: it
// returns, and an answer it accepts is a JSON object naming the catalog
// model, with a usage object.
func FuzzReadBody(f *testing.F) {
	for _, s := range []string{
		`{"id":"c","object":"chat.completion","model":"upstream-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`,
		`{"object":"text_completion","choices":[{"index":0,"text":"x"},{"index":1,"text":"y"}]}`,
		`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"m"}`,
		`{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":"c"}}`,
		`{"error":"overloaded"}`,
		`{"error":null,"choices":null}`,
		`{"choices":[{"message":{"content":null,"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}`,
		`[]`, `null`, `{`, ``,
	} {
		for op := range uint8(3) {
			f.Add([]byte(s), op)
		}
	}
	ops := []events.Operation{events.OperationChatCompletions, events.OperationCompletions, events.OperationEmbeddings}
	f.Fuzz(func(t *testing.T, body []byte, op uint8) {
		u := fuzzUpstream(t)
		c, err := u.newCall(fuzzRequest(ops[int(op)%len(ops)], false, false), func([]byte) error {
			t.Error("a non-streamed answer emitted a chunk")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var ans Answer
		var fail *failure
		within(t, func() { ans, fail = u.readBody(bytes.NewReader(body), c) })
		if fail != nil {
			checkFailure(t, fail)
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(ans.Body, &obj); err != nil || obj == nil {
			t.Fatalf("answer %q is not a JSON object", ans.Body)
		}
		if string(obj["model"]) != `"`+fuzzModel+`"` {
			t.Fatalf("answer names model %s", obj["model"])
		}
		var usage map[string]json.RawMessage
		if err := json.Unmarshal(obj["usage"], &usage); err != nil || usage == nil {
			t.Fatalf("answer has usage %s", obj["usage"])
		}
	})
}
