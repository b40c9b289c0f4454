package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

const chat = events.OperationChatCompletions

// streamBody is a streamed chat request.
const streamBody = `{"messages":[{"role":"user","content":"hello"}],"stream":true}`

// deltaChunk is a chat.completion.chunk whose one choice adds content
// (the first also names the role; finish ends the choice).
func deltaChunk(content string, first bool, finish string) string {
	delta := map[string]any{"content": content}
	if first {
		delta["role"] = "assistant"
	}
	var fin any
	if finish != "" {
		fin = finish
	}
	b, _ := json.Marshal(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
		"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": fin}}})
	return string(b)
}

// run is a worker run's chunks: what one attempt writes.
type run struct {
	attempt string
	bodies  []string
}

// answerText is an answer in pieces: a full window (64 bytes, ending at a
// space, so the harness's window checker releases it at once), then
// pieces short of a window, which stay held until the answer ends.
var answerPieces = []string{
	"", // the role chunk
	"The river Loire runs west from the Massif Central to the ocean. ",
	"It passes ",
	"Orleans, ",
	"Tours and ",
	"Nantes.",
}

// pieces returns a run's chunk bodies for the given contents, the first
// naming the role, the last ending the choice.
func pieces(contents ...string) []string {
	out := make([]string, len(contents))
	for i, c := range contents {
		fin := ""
		if i == len(contents)-1 {
			fin = "stop"
		}
		out[i] = deltaChunk(c, i == 0, fin)
	}
	return out
}

// emitRun publishes chunks from..to (exclusive) of r.
func emitRun(id string, emit func(events.Event, bool), r run, from, to int) {
	for i := from; i < to; i++ {
		emit(events.InferenceChunk{RequestID: id, Seq: i, Attempt: r.attempt, Operation: chat, Body: json.RawMessage(r.bodies[i]), CreatedAt: time.Now().UTC()}, false)
	}
}

func emitResult(id string, emit func(events.Event, bool), attempt string) {
	emit(events.InferenceResult{RequestID: id, Status: events.StatusOK, Attempt: attempt, Operation: chat, CreatedAt: time.Now().UTC()}, true)
}

// seen is what the app got from a stream: the answer's text, its finish
// reasons, and how it ended.
type seen struct {
	text    string
	finish  []string
	end     events.InferenceResult
	replies int
}

func readStream(t *testing.T, out []events.Event) seen {
	t.Helper()
	var s seen
	var text strings.Builder
	for _, ev := range out {
		s.replies++
		switch ev := ev.(type) {
		case events.InferenceChunk:
			var body struct {
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
					Finish *string `json:"finish_reason"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(ev.Body, &body); err != nil {
				t.Fatalf("reply chunk %s: %v", ev.Body, err)
			}
			for _, ch := range body.Choices {
				text.WriteString(ch.Delta.Content)
				if ch.Finish != nil {
					s.finish = append(s.finish, *ch.Finish)
				}
			}
		case events.InferenceResult:
			s.end = ev
		}
	}
	s.text = text.String()
	return s
}

// TestStreamsSurviveRedeliveryAndNewAttempts: a chunk delivered twice
// reaches the app once, and an answer a second worker run starts again is
// never spliced with the first run's: while nothing of the first run
// reached the app the new run replaces it; once something did, the first
// run keeps the stream, and if a different run ends first the stream ends
// with an error after the first run's text, instead of waiting for ever.
func TestStreamsSurviveRedeliveryAndNewAttempts(t *testing.T) {
	h := newHarness(t)
	full := strings.Join(answerPieces, "")
	a := run{attempt: "worker-a-1", bodies: pieces(answerPieces...)}
	bPieces := []string{"", "A different answer ", "from a second run."}
	b := run{attempt: "worker-b-1", bodies: pieces(bPieces...)}
	cases := []struct {
		name   string
		script func(id string, emit func(events.Event, bool))
		text   string
		finish []string
		status events.Status
	}{
		{"a chunk delivered twice", func(id string, emit func(events.Event, bool)) {
			emitRun(id, emit, a, 0, 3)
			emitRun(id, emit, a, 2, 3) // redelivered
			emitRun(id, emit, a, 1, 2) // redelivered, older
			emitRun(id, emit, a, 3, len(a.bodies))
			emitResult(id, emit, a.attempt)
		}, full, []string{"stop"}, events.StatusOK},
		{"a second run before any text was released", func(id string, emit func(events.Event, bool)) {
			emitRun(id, emit, a, 0, 1)
			emitRun(id, emit, a, 3, 4) // a gap: never released
			emitRun(id, emit, b, 0, len(b.bodies))
			emitResult(id, emit, b.attempt)
		}, strings.Join(bPieces, ""), []string{"stop"}, events.StatusOK},
		{"a second run interleaved with a first that released text", func(id string, emit func(events.Event, bool)) {
			emitRun(id, emit, a, 0, 3)
			emitRun(id, emit, b, 0, 2)
			emitRun(id, emit, a, 3, len(a.bodies))
			emitRun(id, emit, b, 2, len(b.bodies))
			emitResult(id, emit, a.attempt)
			emitResult(id, emit, b.attempt)
		}, full, []string{"stop"}, events.StatusOK},
		{"a first run that died after releasing text", func(id string, emit func(events.Event, bool)) {
			emitRun(id, emit, a, 0, 4)
			emitRun(id, emit, b, 0, len(b.bodies))
			emitResult(id, emit, b.attempt)
		}, strings.Join(answerPieces[:4], ""), nil, events.StatusError},
		{"a late run after the answer ended", func(id string, emit func(events.Event, bool)) {
			emitRun(id, emit, a, 0, len(a.bodies))
			emitResult(id, emit, a.attempt)
			emitRun(id, emit, b, 0, len(b.bodies))
			emitResult(id, emit, b.attempt)
		}, full, []string{"stop"}, events.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := readStream(t, h.call(chat, true, streamBody, c.script))
			if got.text != c.text {
				t.Errorf("the app got the text %q, want %q", got.text, c.text)
			}
			if fmt.Sprint(got.finish) != fmt.Sprint(c.finish) {
				t.Errorf("finish reasons %v, want %v", got.finish, c.finish)
			}
			if got.end.Status != c.status {
				t.Errorf("the stream ended %q (%+v), want %q", got.end.Status, got.end.Error, c.status)
			}
		})
	}
}

// TestStreamsSurviveARebalance: a content-safety instance takes in the
// start of a stream, holding part of its text back, and stops (its
// partitions move to a second instance that joined meanwhile) before
// the stream ends. The second instance reads the stream again from its
// start, so the app gets every piece of the answer exactly once and the
// stream ends properly, without waiting for what the first instance had
// taken in.
func TestStreamsSurviveARebalance(t *testing.T) {
	cases := []struct {
		name   string
		before int // chunks the first instance takes in
	}{
		{"nothing released yet", 1},
		{"a window released, a piece held", 3},
		{"a window released, several pieces held", 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.stop() // the instances below play the two processes
			a := run{attempt: "worker-a-1", bodies: pieces(answerPieces...)}

			var (
				mu     sync.Mutex
				polled = map[string]int{} // completions polled by the first instance, by request
			)
			hook := pollHook(func(r *kgo.Record) {
				if strings.HasSuffix(r.Topic, "."+bus.StreamCompletions) {
					mu.Lock()
					polled[string(r.Key)]++
					mu.Unlock()
				}
			})
			stopFirst := h.instance(kgo.WithHooks(hook))

			resume := make(chan struct{})
			var resumeOnce sync.Once
			t.Cleanup(func() { resumeOnce.Do(func() { close(resume) }) })
			id, rs := h.send(chat, true, streamBody, func(id string, emit func(events.Event, bool)) {
				emitRun(id, emit, a, 0, c.before)
				<-resume
				emitRun(id, emit, a, c.before, len(a.bodies))
				emitResult(id, emit, a.attempt)
			})
			type outcome struct {
				out []events.Event
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				out, err := h.collect(rs, 40*time.Second)
				done <- outcome{out, err}
			}()

			deadline := time.Now().Add(30 * time.Second)
			for {
				mu.Lock()
				n := polled[id]
				mu.Unlock()
				if n >= c.before {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the first instance polled %d of %d chunks", n, c.before)
				}
				time.Sleep(5 * time.Millisecond) // polling with a deadline
			}
			h.instance() // joins the group: a rebalance
			stopFirst()  // leaves it: the second instance has every partition
			resumeOnce.Do(func() { close(resume) })

			o := <-done
			if o.err != nil {
				t.Fatalf("the app's stream did not end: %v", o.err)
			}
			got := readStream(t, o.out)
			if want := strings.Join(answerPieces, ""); got.text != want {
				t.Errorf("the app got the text %q, want %q", got.text, want)
			}
			if fmt.Sprint(got.finish) != "[stop]" || got.end.Status != events.StatusOK {
				t.Errorf("the stream ended with finish reasons %v and status %q", got.finish, got.end.Status)
			}
		})
	}
}

// pollHook calls f with every record a client hands out from a poll.
type pollHook func(*kgo.Record)

func (f pollHook) OnFetchRecordUnbuffered(r *kgo.Record, polled bool) {
	if polled {
		f(r)
	}
}
