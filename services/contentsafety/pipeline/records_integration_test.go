package pipeline

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
)

// withContentLogging turns content logging on for the harness's
// resource, so its requests are recorded for abuse monitoring.
func withContentLogging() harnessOption {
	return func(_ *Config, st *control.State) {
		spec, _ := json.Marshal(control.Resource{Name: "acme", Location: "eu", ContentLogging: true})
		st.ApplyChange(events.ControlChange{Kind: events.ControlResource, ID: "acme", Actor: "test", At: time.Now(), Spec: spec})
	}
}

// recorder collects the safety signals and abuse-monitoring records the
// pipeline writes, by request ID.
type recorder struct {
	mu      sync.Mutex
	signals map[string][]events.SafetySignal
	abuse   map[string][]events.AbuseRecord
}

// record starts a recorder on the harness's bus.
func (h *harness) record() *recorder {
	h.t.Helper()
	r := &recorder{signals: map[string][]events.SafetySignal{}, abuse: map[string][]events.AbuseRecord{}}
	c, err := h.bus.NewConsumer(bus.ConsumerConfig{Group: "recorder", Streams: []string{bus.StreamSafetySignals, bus.StreamAbuseLog}, Geos: []string{"eu"},
		Handler: func(ctx context.Context, d *bus.Delivery) error {
			switch d.Stream {
			case bus.StreamSafetySignals:
				var s events.SafetySignal
				if err := d.Decode(ctx, &s); err != nil {
					return err
				}
				r.mu.Lock()
				r.signals[s.RequestID] = append(r.signals[s.RequestID], s)
				r.mu.Unlock()
			case bus.StreamAbuseLog:
				var a events.AbuseRecord
				if err := d.Decode(ctx, &a); err != nil {
					return err
				}
				r.mu.Lock()
				r.abuse[a.RequestID] = append(r.abuse[a.RequestID], a)
				r.mu.Unlock()
			}
			return nil
		}})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-done })
	return r
}

// settle is how long the recorder keeps watching once a request's records
// have arrived, so that a record written twice is seen.
const settle = 500 * time.Millisecond

// of waits until id has wantSignals signals and wantAbuse abuse records,
// then for settle more, and returns what arrived: more than wanted fails.
func (r *recorder) of(t *testing.T, id string, wantSignals, wantAbuse int) ([]events.SafetySignal, []events.AbuseRecord) {
	t.Helper()
	get := func() ([]events.SafetySignal, []events.AbuseRecord) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return append([]events.SafetySignal(nil), r.signals[id]...), append([]events.AbuseRecord(nil), r.abuse[id]...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, a := get()
		if len(s) >= wantSignals && len(a) >= wantAbuse {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s: %d safety signals and %d abuse records, want %d and %d", id, len(s), len(a), wantSignals, wantAbuse)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(settle); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if s, a := get(); len(s) > wantSignals || len(a) > wantAbuse {
			t.Fatalf("request %s: %d safety signals and %d abuse records, want %d and %d", id, len(s), len(a), wantSignals, wantAbuse)
		}
	}
	return get()
}

// TestOneAbuseRecordAndOneSignalPerRequest: whatever becomes of a request
// (it passes, its prompt is blocked, it streams, its model fails), content
// safety writes one safety signal and, with content logging on, one
// abuse-monitoring record holding every part a reviewer sees.
func TestOneAbuseRecordAndOneSignalPerRequest(t *testing.T) {
	h := newHarness(t, withContentLogging())
	rec := h.record()
	const prompt = `{"messages":[{"role":"user","content":"Tell me about the sea."}]}`
	const harmPrompt = `{"messages":[{"role":"user","content":"I am going to kill myself tonight"}]}`
	const harmAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Here is how you kill yourself tonight: take every pill you have."},"logprobs":null,"finish_reason":"stop"}]}`
	failed := func(id string, emit func(events.Event, bool)) {
		emit(events.InferenceResult{RequestID: id, Status: events.StatusError, Operation: chat, CreatedAt: time.Now().UTC(),
			Error: &events.ResultError{Kind: events.ErrorTimeout, Code: "timeout", Message: "the model did not finish in time"}}, true)
	}
	cases := []struct {
		name   string
		stream bool
		body   string
		script func(string, func(events.Event, bool))
		// what the one signal and the one record hold
		promptFiltered bool
		completion     bool // the signal covers the completion
		output         string
	}{
		{name: "passed", body: prompt, script: answer(chat, benignAnswer), completion: true, output: "The sea is calm today."},
		{name: "output filtered", body: prompt, script: answer(chat, harmAnswer), completion: true, output: `"finish_reason":"content_filter"`},
		{name: "prompt blocked", body: harmPrompt, script: answer(chat, benignAnswer), promptFiltered: true},
		{name: "streamed", stream: true, body: streamBody, script: chunks(chat, pieces(answerPieces...)...), completion: true, output: "Nantes."},
		{name: "model failed", body: prompt, script: failed},
		{name: "streamed and failed", stream: true, body: streamBody, script: failed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, rs := h.send(chat, c.stream, c.body, c.script)
			if _, err := h.collect(rs, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			sigs, recs := rec.of(t, id, 1, 1)
			sig, ar := sigs[0], recs[0]

			// The signal: the prompt's findings, and the completion's when
			// there was one, never text.
			prompt := sig.Prompt
			if sig.Direction == events.DirectionPrompt {
				prompt = &events.Findings{Categories: sig.Categories, Detections: sig.Detections, ContentHash: sig.ContentHash, Filtered: sig.Filtered, At: sig.At}
			}
			if prompt == nil || len(prompt.ContentHash) != 64 || prompt.Filtered != c.promptFiltered {
				t.Errorf("signal's prompt findings %+v", prompt)
			}
			if got := sig.Direction == events.DirectionCompletion; got != c.completion {
				t.Errorf("signal direction %s, completion covered = %v, want %v", sig.Direction, got, c.completion)
			}
			if c.completion && (len(sig.ContentHash) != 64 || sig.ContentHash == prompt.ContentHash) {
				t.Errorf("completion hash %q", sig.ContentHash)
			}
			if b, _ := json.Marshal(sig); strings.Contains(string(b), "sea") || strings.Contains(string(b), "kill") {
				t.Errorf("signal carries text: %s", b)
			}

			// The record: both parts in one.
			if ar.Resource != "acme" || ar.HomeGeo != "eu" || ar.ProcessingGeo != "eu" || ar.Operation != chat {
				t.Errorf("record %+v", ar)
			}
			if !strings.Contains(string(ar.Prompt), "messages") || !strings.Contains(string(ar.PromptFilterResults), `"prompt_index":0`) {
				t.Errorf("record's prompt part: prompt %s, prompt_filter_results %s", ar.Prompt, ar.PromptFilterResults)
			}
			if c.output == "" {
				if len(ar.Output) > 0 || len(ar.ContentFilterResults) > 0 {
					t.Errorf("record has an output part: %s %s", ar.Output, ar.ContentFilterResults)
				}
				return
			}
			if !strings.Contains(string(ar.Output), c.output) || !strings.Contains(string(ar.ContentFilterResults), "self_harm") {
				t.Errorf("record's output part: output %s, content_filter_results %s", ar.Output, ar.ContentFilterResults)
			}
		})
	}
	t.Run("content logging off", func(t *testing.T) {
		h := newHarness(t)
		rec := h.record()
		id, rs := h.send(chat, false, prompt, answer(chat, benignAnswer))
		if _, err := h.collect(rs, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if sigs, _ := rec.of(t, id, 1, 0); sigs[0].Prompt == nil {
			t.Errorf("signal %+v, want both directions", sigs[0])
		}
	})
}
