package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// idleStream is how long a stream's state is kept without a record
// before it is dropped (its worker died; ingress has given up).
const idleStream = 10 * time.Minute

// streamState is what the output stage holds of one streamed answer.
type streamState struct {
	seq     int // next reply sequence number (0 was the prompt verdict)
	kind    openai.ChoiceKind
	pol     control.FilterPolicy
	bl      *classifier.Blocklists
	res     control.Resource
	choices map[int]*choiceState
	held    []heldChunk
	head    *openai.Completion // the latest chunk, for the fields other than choices
	other   classifier.Result  // of the answer's top-level fields outside the wire shapes
	last    time.Time
}

type choiceState struct {
	stream *classifier.Stream
	text   strings.Builder // the choice's text, kept in memory until the answer ends
	// args decode the JSON text of each tool call's arguments as its
	// pieces arrive, by parameter path, so escapes hide nothing.
	args      map[string]*openai.ArgumentsDecoder
	lastParam string // the field the latest text came from
	result    classifier.Result
	ann       classifier.Annotations
	blocked   bool
	closed    bool // the guard model was unavailable and the policy fails closed
	// released is set once a chunk of the choice reached the app, which
	// then knows the choice's role.
	released bool
}

type heldChunk struct {
	index  int
	head   *openai.Completion // the chunk, for its fields other than choices
	choice json.RawMessage    // the choice as the model sent it
}

// output is the output stage's handler.
func (p *Pipeline) output(ctx context.Context, d *bus.Delivery) error {
	switch d.Meta.Type.Name {
	case events.TypeInferenceChunk.Name:
		var c events.InferenceChunk
		if err := d.Decode(ctx, &c); err != nil {
			return err // Decode marks what can never be read as permanent
		}
		return p.chunk(ctx, d, c)
	case events.TypeInferenceResult.Name:
		var r events.InferenceResult
		if err := d.Decode(ctx, &r); err != nil {
			return err // Decode marks what can never be read as permanent
		}
		return p.result(ctx, d, r)
	}
	return nil
}

func (p *Pipeline) state(m bus.Meta) (*streamState, error) {
	p.streamsMu.Lock()
	st, ok := p.streams[m.RequestID]
	p.streamsMu.Unlock()
	if ok {
		st.last = time.Now()
		return st, nil
	}
	res, pol, bl, err := p.policy(m.Resource, m.Deployment)
	if err != nil {
		return nil, err
	}
	st = &streamState{seq: 1, pol: pol, bl: bl, res: res, choices: map[int]*choiceState{}, last: time.Now()}
	p.streamsMu.Lock()
	p.streams[m.RequestID] = st
	p.streamsMu.Unlock()
	return st, nil
}

func (p *Pipeline) forget(id string) {
	p.streamsMu.Lock()
	delete(p.streams, id)
	p.streamsMu.Unlock()
}

// sweep drops the state of streams that stopped without a result.
func (p *Pipeline) sweep(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.streamsMu.Lock()
		for id, st := range p.streams {
			if time.Since(st.last) > idleStream {
				delete(p.streams, id)
			}
		}
		p.streamsMu.Unlock()
	}
}

func (st *streamState) choice(p *Pipeline, i int) *choiceState {
	cs, ok := st.choices[i]
	if !ok {
		cs = &choiceState{stream: p.cfg.Classifier.NewStream(events.DirectionCompletion, st.bl, st.pol.Completion.Blocklists, p.cfg.Stream)}
		st.choices[i] = cs
	}
	return cs
}

// deltaText returns the text a streamed choice adds, from every field
// that carries text: content, refusal, tool-call names and arguments
// (decoded piece by piece), the legacy function_call, reasoning and any
// other field of the delta. Text from a new field starts on a new line,
// so two fields never glue into one word.
func (cs *choiceState) deltaText(ch *openai.Choice) string {
	var b []byte
	add := func(param, text string, args bool) {
		if text == "" {
			return
		}
		if cs.lastParam != "" && param != cs.lastParam {
			b = append(b, '\n')
		}
		cs.lastParam = param
		if !args {
			b = append(b, text...)
			return
		}
		if cs.args == nil {
			cs.args = map[string]*openai.ArgumentsDecoder{}
		}
		dec := cs.args[param]
		if dec == nil {
			dec = &openai.ArgumentsDecoder{}
			cs.args[param] = dec
		}
		b = dec.Write(b, text)
	}
	ch.Pieces(add)
	// the alternatives logprobs offer reach the app with the chunk
	add(fmt.Sprintf("choices[%d].logprobs", ch.Index), ch.AlternativesText(), false)
	return string(b)
}

// kindOf returns the kind of an answer's choices: by the operation the
// worker named, or, from a worker that named none, by the object type.
func kindOf(op events.Operation, object string, streamed bool) openai.ChoiceKind {
	switch {
	case op == events.OperationCompletions:
		return openai.TextChoice
	case op == events.OperationChatCompletions && streamed:
		return openai.ChatChunkChoice
	case op == events.OperationChatCompletions:
		return openai.ChatChoice
	}
	return openai.KindOf(object)
}

func (p *Pipeline) chunk(ctx context.Context, d *bus.Delivery, c events.InferenceChunk) error {
	st, err := p.state(d.Meta)
	if err != nil {
		return bus.Permanent(err)
	}
	head := &openai.Completion{}
	if err := json.Unmarshal(c.Body, head); err != nil {
		return bus.Permanent(fmt.Errorf("reading a chunk: %w", err))
	}
	st.head = head
	st.kind = kindOf(c.Operation, head.Object, true)
	if err := p.checkOther(ctx, d.Geo, st, head); err != nil {
		return err
	}
	for _, raw := range head.Choices {
		ch, whole := readChoice(raw)
		i := ch.Index
		cs := st.choice(p, i)
		if cs.blocked {
			continue
		}
		t := whole
		if t == "" {
			t = cs.deltaText(&ch)
		}
		if t != "" {
			cs.text.WriteString(t)
			if r, checked := cs.stream.Add(t); checked {
				// the guard model rates the choice so far each time a
				// window is released, so it too sees text before the app
				if r, err = p.guardChoice(ctx, d.Geo, st, cs, r); err != nil {
					return err
				}
				if err := p.judge(ctx, d, st, head, i, cs, r); err != nil {
					return err
				}
				if cs.blocked {
					continue
				}
			}
		}
		st.held = append(st.held, heldChunk{index: i, head: head, choice: raw})
	}
	for _, cs := range st.choices {
		if !cs.blocked && cs.stream.Pending() > 0 {
			return nil // text not yet checked stays held
		}
	}
	return p.release(ctx, d, st)
}

// judge applies the policy to a choice's latest result; a blocked choice
// loses its held text and ends with finish_reason content_filter.
func (p *Pipeline) judge(ctx context.Context, d *bus.Delivery, st *streamState, head *openai.Completion, i int, cs *choiceState, r classifier.Result) error {
	cs.result = r
	ann, blocked := classifier.Apply(st.pol, events.DirectionCompletion, r)
	blocked = blocked || cs.closed
	cs.ann = ann
	if !blocked {
		return nil
	}
	cs.blocked = true
	st.held = slices.DeleteFunc(st.held, func(h heldChunk) bool { return h.index == i })
	end, err := json.Marshal(openai.NewBlockedChoice(st.kind, i, ann, !cs.released))
	if err != nil {
		return err
	}
	return p.send(ctx, d, st, head, end, nil)
}

// send replies one chunk holding one choice.
func (p *Pipeline) send(ctx context.Context, d *bus.Delivery, st *streamState, head *openai.Completion, choice json.RawMessage, ann *classifier.Annotations) error {
	if ann != nil {
		var err error
		if choice, err = openai.AnnotateChoice(choice, *ann); err != nil {
			return err
		}
	}
	body, err := json.Marshal(head.WithChoices(choice))
	if err != nil {
		return err
	}
	seq := st.seq
	st.seq++
	return p.cfg.Bus.Reply(ctx, d, seq, false, events.InferenceChunk{RequestID: d.Meta.RequestID, Seq: seq, Operation: st.op(), Body: body, CreatedAt: time.Now().UTC()})
}

// op is the operation of the stream's kind of choices.
func (st *streamState) op() events.Operation {
	if st.kind == openai.TextChoice {
		return events.OperationCompletions
	}
	return events.OperationChatCompletions
}

// release sends every held chunk, annotated with its choice's results.
func (p *Pipeline) release(ctx context.Context, d *bus.Delivery, st *streamState) error {
	for _, h := range st.held {
		cs := st.choices[h.index]
		ann := cs.ann
		if err := p.send(ctx, d, st, h.head, h.choice, &ann); err != nil {
			return err
		}
		cs.released = true
	}
	st.held = st.held[:0]
	return nil
}

func (p *Pipeline) result(ctx context.Context, d *bus.Delivery, r events.InferenceResult) error {
	p.streamsMu.Lock()
	st, streamed := p.streams[d.Meta.RequestID]
	p.streamsMu.Unlock()
	defer p.forget(d.Meta.RequestID)
	if !streamed {
		var err error
		if st, err = p.state(d.Meta); err != nil {
			return bus.Permanent(err)
		}
	}
	promptResults := r.PromptFilterResults
	r.PromptFilterResults = nil
	if !streamed && len(promptResults) > 0 {
		st.seq = 0 // no verdict was sent: this answer is the only reply
	}
	if r.Status != events.StatusOK {
		return p.cfg.Bus.Reply(ctx, d, st.seq, true, r)
	}
	var texts []string
	var merged classifier.Result
	var worst *classifier.Annotations
	anyBlocked := false
	output := r.Body
	op := r.Operation
	if streamed {
		head := st.head
		op = st.op()
		idx := make([]int, 0, len(st.choices))
		for i := range st.choices {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		type outChoice struct {
			Index int    `json:"index"`
			Text  string `json:"text"`
		}
		var outs []outChoice
		for _, i := range idx {
			cs := st.choices[i]
			if !cs.blocked {
				r, err := p.guardChoice(ctx, d.Geo, st, cs, cs.stream.Flush())
				if err != nil {
					return err
				}
				if err := p.judge(ctx, d, st, headOr(head, st), i, cs, r); err != nil {
					return err
				}
			}
			merged = classifier.Merge(merged, cs.result)
			texts = append(texts, cs.text.String())
			if cs.blocked || worst == nil {
				ann := cs.ann
				worst = &ann
			}
			anyBlocked = anyBlocked || cs.blocked
			outs = append(outs, outChoice{Index: i, Text: cs.text.String()})
		}
		if err := p.release(ctx, d, st); err != nil {
			return err
		}
		merged = classifier.Merge(merged, st.other)
		var err error
		if output, err = json.Marshal(map[string]any{"choices": outs}); err != nil {
			return err
		}
	} else if len(r.Body) > 0 {
		var top openai.Completion
		if err := json.Unmarshal(r.Body, &top); err != nil {
			return bus.Permanent(fmt.Errorf("reading an answer: %w", err))
		}
		if op == "" {
			op = operationOf(top.Object)
		}
		body, t, m, w, b, err := p.checkBody(ctx, d.Geo, st, top, kindOf(op, top.Object, false), promptResults)
		if err != nil {
			return err
		}
		r.Body, output, texts, merged, worst, anyBlocked = body, body, t, m, w, b
	}
	reply := p.cfg.Bus.ReplyAsync(ctx, d, st.seq, true, r)
	if worst == nil { // embeddings carry no text to check
		return reply.Wait()
	}
	// The answer does not wait for the records of abuse monitoring.
	err := p.record(ctx, d, st, op, output, merged, *worst, anyBlocked, strings.Join(texts, "\n"))
	return errors.Join(reply.Wait(), err)
}

// headOr is the chunk head a filter-finish chunk uses when none is held.
func headOr(head *openai.Completion, st *streamState) *openai.Completion {
	if head != nil {
		return head
	}
	return &openai.Completion{Object: "chat.completion.chunk"}
}

// checkBody classifies every text of every choice of a complete answer
// and annotates it; a filtered choice is replaced by a blocked choice
// built from an allow-list (finish_reason content_filter, no content,
// refusal, tool calls, reasoning or logprobs). promptResults, when set,
// become the answer's prompt_filter_results.
func (p *Pipeline) checkBody(ctx context.Context, geo string, st *streamState, obj openai.Completion, kind openai.ChoiceKind, promptResults json.RawMessage) (json.RawMessage, []string, classifier.Result, *classifier.Annotations, bool, error) {
	var merged classifier.Result
	choices := obj.Choices
	if choices == nil {
		body, err := json.Marshal(obj)
		return body, nil, merged, nil, false, err // embeddings carry no text to check
	}
	var texts []string
	var worst *classifier.Annotations
	anyBlocked := false
	for k, raw := range choices {
		ch, text := readChoice(raw)
		if text == "" {
			text = openai.Join(append(ch.TextFields(), openai.TextField{Param: "logprobs", Text: ch.AlternativesText()}))
		}
		texts = append(texts, text)
		r, closed, err := p.rate(ctx, geo, events.DirectionCompletion, st.pol, st.bl, text)
		if err != nil {
			return nil, nil, merged, nil, false, err
		}
		merged = classifier.Merge(merged, r)
		ann, blocked := classifier.Apply(st.pol, events.DirectionCompletion, r)
		blocked = blocked || closed
		if blocked {
			choices[k], err = json.Marshal(openai.NewBlockedChoice(kind, ch.Index, ann, true))
		} else {
			choices[k], err = openai.AnnotateChoice(raw, ann)
		}
		if err != nil {
			return nil, nil, merged, nil, false, err
		}
		if blocked || worst == nil {
			worst = &ann
		}
		anyBlocked = anyBlocked || blocked
	}
	if err := p.checkOther(ctx, geo, st, &obj); err != nil {
		return nil, nil, merged, nil, false, err
	}
	merged = classifier.Merge(merged, st.other)
	if len(promptResults) > 0 {
		if err := json.Unmarshal(promptResults, &obj.PromptFilterResults); err != nil {
			return nil, nil, merged, nil, false, fmt.Errorf("reading the prompt's filter results: %w", err)
		}
	}
	out, err := json.Marshal(obj)
	return out, texts, merged, worst, anyBlocked, err
}

// record publishes the output's safety signal and abuse-monitoring
// record to the home geography.
func (p *Pipeline) record(ctx context.Context, d *bus.Delivery, st *streamState, op events.Operation, output json.RawMessage, merged classifier.Result, worst classifier.Annotations, blocked bool, text string) error {
	sig, err := p.signal(ctx, d.Meta, events.DirectionCompletion, merged, worst, blocked, text)
	if err != nil {
		return err
	}
	sends := []*bus.Sending{p.cfg.Bus.PublishAsync(ctx, d.Meta.HomeGeo, bus.StreamSafetySignals, bus.Meta{Key: d.Meta.RequestID}, sig)}
	if st.res.ContentLogging {
		ann, err := json.Marshal(worst)
		if err != nil {
			return errors.Join(err, bus.WaitAll(sends...))
		}
		home := d.Meta
		home.Key, home.Seq, home.Final = "", 0, false
		rec := events.AbuseRecord{RequestID: d.Meta.RequestID, Resource: d.Meta.Resource, HomeGeo: d.Meta.HomeGeo, ProcessingGeo: d.Geo,
			Deployment: d.Meta.Deployment, Operation: op, Output: output, ContentFilterResults: ann, CreatedAt: time.Now().UTC()}
		sends = append(sends, p.cfg.Bus.PublishAsync(ctx, d.Meta.HomeGeo, bus.StreamAbuseLog, home, rec))
	}
	if err := bus.WaitAll(sends...); err != nil {
		p.log.Warn("output record not published", zap.String("request_id", d.Meta.RequestID), zap.Error(err))
		return err
	}
	return nil
}

// operationOf names the operation of an answer from its object type,
// for a worker that did not name it.
func operationOf(object string) events.Operation {
	switch object {
	case "text_completion":
		return events.OperationCompletions
	case "list":
		return events.OperationEmbeddings
	}
	return events.OperationChatCompletions
}

// guardChoice merges the guard model's verdict on a streamed choice's
// text so far into r, the classifier's.
func (p *Pipeline) guardChoice(ctx context.Context, geo string, st *streamState, cs *choiceState, r classifier.Result) (classifier.Result, error) {
	r, closed, err := p.guarded(ctx, geo, events.DirectionCompletion, st.pol.Completion, cs.text.String(), r)
	cs.closed = cs.closed || closed
	return r, err
}

// readChoice reads a choice as the model sent it. A choice that does not
// have the shape of one (an upstream's own idea of a field) is not passed
// on unread: whole is then the text of every string in it, which is
// classified instead, and a blocked choice is withheld as any other.
func readChoice(raw json.RawMessage) (ch openai.Choice, whole string) {
	if err := json.Unmarshal(raw, &ch); err == nil {
		return ch, ""
	}
	var idx struct {
		Index int `json:"index"`
	}
	_ = json.Unmarshal(raw, &idx)
	return openai.Choice{Index: idx.Index}, openai.JSONText(raw)
}

// checkOther classifies the top-level fields of an answer or chunk that
// are not part of the wire shapes (an upstream's own) and withholds them
// when the policy blocks their text.
func (p *Pipeline) checkOther(ctx context.Context, geo string, st *streamState, c *openai.Completion) error {
	text := c.OtherText()
	if text == "" {
		return nil
	}
	r, closed, err := p.rate(ctx, geo, events.DirectionCompletion, st.pol, st.bl, text)
	if err != nil {
		return err
	}
	st.other = classifier.Merge(st.other, r)
	if _, blocked := classifier.Apply(st.pol, events.DirectionCompletion, r); blocked || closed {
		c.DropOther()
	}
	return nil
}
