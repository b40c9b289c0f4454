package pipeline

import (
	"cmp"
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
	seq     int        // next reply sequence number (0 was the prompt verdict)
	out     []outgoing // replies decided and not yet sent, in order
	hold    *bus.Hold  // the stream's first record, uncommitted until the stream ends
	attempt string     // the worker run the answer is read from
	next    int        // the worker's sequence number expected next from it
	retired map[string]bool
	shown   bool                    // text of the answer, or a verdict on it, reached the app
	final   *events.InferenceResult // the last reply, once decided
	end     *outcome                // what the output stage found in it
	check   *events.PromptCheck     // the prompt stage's, from the worker's result
	prompt  json.RawMessage         // the prompt, when check says it is logged
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

// outgoing is a reply chunk holding one choice, decided and not yet sent.
type outgoing struct {
	head   *openai.Completion
	choice json.RawMessage
	ann    *classifier.Annotations // to annotate the choice with; nil for none
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

// lookup returns the state of a stream under way here. A stream whose
// partition left this instance meanwhile is forgotten: its next owner
// reads it again from its start, and so does this instance if the
// partition comes back.
func (p *Pipeline) lookup(id string) (*streamState, bool) {
	p.streamsMu.Lock()
	defer p.streamsMu.Unlock()
	st, ok := p.streams[id]
	if ok && st.hold.Revoked() {
		delete(p.streams, id)
		return nil, false
	}
	if ok {
		st.last = time.Now()
	}
	return st, ok
}

// state returns the state of d's answer, starting it (and holding d's
// record uncommitted until the answer ends) if there is none.
func (p *Pipeline) state(d *bus.Delivery) (*streamState, error) {
	if st, ok := p.lookup(d.Meta.RequestID); ok {
		return st, nil
	}
	res, pol, bl, err := p.policy(d.Meta.Resource, d.Meta.Deployment)
	if err != nil {
		return nil, err
	}
	st := &streamState{seq: 1, pol: pol, bl: bl, res: res, choices: map[int]*choiceState{}, retired: map[string]bool{}, last: time.Now()}
	if c := p.outputs[bus.LaneOf(d.Stream)]; c != nil {
		st.hold = c.Hold(d.Record)
	}
	p.streamsMu.Lock()
	p.streams[d.Meta.RequestID] = st
	p.streamsMu.Unlock()
	return st, nil
}

// forget drops an answer's state and lets its records be committed; a
// stream's ID is remembered for a while, so that the records of a run
// that ends after it (or a redelivery of its own) add nothing.
func (p *Pipeline) forget(id string, streamed bool) {
	p.streamsMu.Lock()
	st := p.streams[id]
	delete(p.streams, id)
	if streamed {
		p.ended[id] = time.Now()
	}
	p.streamsMu.Unlock()
	if st != nil {
		st.hold.Release()
	}
}

// hasEnded reports whether the stream id was answered here.
func (p *Pipeline) hasEnded(id string) bool {
	p.streamsMu.Lock()
	defer p.streamsMu.Unlock()
	_, ok := p.ended[id]
	return ok
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
				st.hold.Release()
			}
		}
		for id, at := range p.ended {
			if time.Since(at) > idleStream {
				delete(p.ended, id)
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

// admit reports whether a worker's chunk is the next one of the answer:
// not a redelivery, not after a gap, and of the run the stream is read
// from. A new run replaces the current one only while none of the
// current run's text has reached the app; what the replaced run had
// written is dropped unsent.
func (st *streamState) admit(attempt string, seq int) bool {
	if attempt != st.attempt {
		if st.retired[attempt] || st.shown {
			return false
		}
		if st.next > 0 {
			st.retired[st.attempt] = true
			st.restart()
		}
		st.attempt, st.next = attempt, 0
	}
	if seq != st.next {
		return false
	}
	st.next++
	return true
}

// restart forgets what a replaced run wrote.
func (st *streamState) restart() {
	st.choices = map[int]*choiceState{}
	st.held = nil
	st.head = nil
	st.other = classifier.Result{}
}

func (p *Pipeline) chunk(ctx context.Context, d *bus.Delivery, c events.InferenceChunk) error {
	if p.hasEnded(d.Meta.RequestID) {
		return nil // a run that ended after the answer, or a redelivery
	}
	st, err := p.state(d)
	if err != nil {
		return bus.Permanent(err)
	}
	if st.final != nil || !st.admit(c.Attempt, c.Seq) {
		// Nothing new; what an earlier try of this record decided and
		// could not send goes now.
		return p.flush(ctx, d, st)
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
			return p.flush(ctx, d, st) // text not yet checked stays held
		}
	}
	st.release()
	return p.flush(ctx, d, st)
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
	st.shown = true
	st.held = slices.DeleteFunc(st.held, func(h heldChunk) bool { return h.index == i })
	end, err := json.Marshal(openai.NewBlockedChoice(st.kind, i, ann, !cs.released))
	if err != nil {
		return err
	}
	st.out = append(st.out, outgoing{head: head, choice: end})
	return nil
}

// flush sends the replies decided so far, in order. A reply is numbered
// when it is sent, and leaves the queue only once sent, so a handler
// that fails here and is tried again sends each exactly once.
func (p *Pipeline) flush(ctx context.Context, d *bus.Delivery, st *streamState) error {
	for len(st.out) > 0 {
		o := st.out[0]
		choice := o.choice
		if o.ann != nil {
			var err error
			if choice, err = openai.AnnotateChoice(choice, *o.ann); err != nil {
				return err
			}
		}
		body, err := json.Marshal(o.head.WithChoices(choice))
		if err != nil {
			return err
		}
		if err := p.cfg.Bus.Reply(ctx, d, st.seq, false, events.InferenceChunk{RequestID: d.Meta.RequestID, Seq: st.seq, Operation: st.op(), Body: body, CreatedAt: time.Now().UTC()}); err != nil {
			return err
		}
		st.seq++
		st.out[0] = outgoing{}
		st.out = st.out[1:]
	}
	return nil
}

// op is the operation of the stream's kind of choices.
func (st *streamState) op() events.Operation {
	if st.kind == openai.TextChoice {
		return events.OperationCompletions
	}
	return events.OperationChatCompletions
}

// release lets every held chunk go out, annotated with its choice's
// results.
func (st *streamState) release() {
	for _, h := range st.held {
		cs := st.choices[h.index]
		ann := cs.ann
		st.out = append(st.out, outgoing{head: h.head, choice: h.choice, ann: &ann})
		cs.released = true
		st.shown = st.shown || cs.text.Len() > 0
	}
	st.held = st.held[:0]
}

func (p *Pipeline) result(ctx context.Context, d *bus.Delivery, r events.InferenceResult) error {
	id := d.Meta.RequestID
	if p.hasEnded(id) {
		return nil // a run that ended after the stream, or a redelivery
	}
	if st, streamed := p.lookup(id); streamed {
		return p.endStream(ctx, d, st, r)
	}
	st, err := p.state(d)
	if err != nil {
		return bus.Permanent(err)
	}
	defer p.forget(id, false)
	promptResults := r.PromptFilterResults
	st.check, st.prompt = r.PromptCheck, r.Prompt
	// what the worker carried back for content safety never reaches a reply
	r.PromptFilterResults, r.PromptCheck, r.Prompt = nil, nil, nil
	if len(promptResults) > 0 {
		st.seq = 0 // no verdict was sent: this answer is the only reply
	}
	if r.Status != events.StatusOK || len(r.Body) == 0 {
		// A worker's error or timeout: the request's record holds its
		// prompt. The answer does not wait for it.
		reply := p.cfg.Bus.ReplyAsync(ctx, d, st.seq, true, r)
		err := p.record(ctx, d, st, r.Operation, promptResults, nil)
		return errors.Join(reply.Wait(), err)
	}
	var top openai.Completion
	if err := json.Unmarshal(r.Body, &top); err != nil {
		return bus.Permanent(fmt.Errorf("reading an answer: %w", err))
	}
	op := r.Operation
	if op == "" {
		op = operationOf(top.Object)
	}
	body, texts, merged, worst, anyBlocked, err := p.checkBody(ctx, d.Geo, st, top, kindOf(op, top.Object, false), promptResults)
	if err != nil {
		return err
	}
	r.Body = body
	reply := p.cfg.Bus.ReplyAsync(ctx, d, st.seq, true, r)
	var out *outcome
	if worst != nil { // embeddings carry no text to check
		out = &outcome{op: op, output: body, merged: merged, worst: *worst, blocked: anyBlocked, text: strings.Join(texts, "\n")}
	}
	// The answer does not wait for the records of abuse monitoring.
	err = p.record(ctx, d, st, op, promptResults, out)
	return errors.Join(reply.Wait(), err)
}

// endStream ends a stream with the worker's result r: the last windows of
// every choice are checked, what was held back is released or withheld,
// and the result goes out as the last reply. Only the run the stream is
// read from ends it; see admit for what another run's result does.
func (p *Pipeline) endStream(ctx context.Context, d *bus.Delivery, st *streamState, r events.InferenceResult) error {
	if st.final == nil {
		if !st.retired[r.Attempt] {
			// every run carries the request's check back; the result that
			// ends the stream gives it
			st.check, st.prompt = r.PromptCheck, r.Prompt
		}
		switch {
		case r.Attempt == st.attempt:
		case st.retired[r.Attempt]:
			return p.flush(ctx, d, st) // the end of a replaced run
		case st.shown:
			// The run the app is reading will not end here: its worker
			// stopped mid-answer and another run finished instead. What
			// the app has stands; the rest is not spliced from another
			// answer.
			p.log.Warn("stream interrupted: another worker run ended it", zap.String("request_id", d.Meta.RequestID), zap.Int("chunks", st.next))
			r = events.InferenceResult{RequestID: r.RequestID, Status: events.StatusError, Operation: r.Operation, CreatedAt: time.Now().UTC(),
				Error: &events.ResultError{Kind: events.ErrorUpstreamFailed, Code: "answer_interrupted", Message: "the model stopped in the middle of its answer; retry the request"}}
		default:
			// Nothing of the answer reached the app: the run that ended
			// (without chunks) is the answer.
			st.retired[st.attempt] = true
			st.restart()
			st.attempt, st.next = r.Attempt, 0
		}
		r.Attempt, r.PromptFilterResults, r.PromptCheck, r.Prompt = "", nil, nil, nil
		end, err := p.finishChoices(ctx, d, st)
		if err != nil {
			return err
		}
		st.end, st.final = end, &r
	}
	if err := p.flush(ctx, d, st); err != nil {
		return err
	}
	reply := p.cfg.Bus.ReplyAsync(ctx, d, st.seq, true, *st.final)
	// The answer does not wait for the records of abuse monitoring.
	err := p.record(ctx, d, st, cmp.Or(st.final.Operation, st.op()), nil, st.end)
	if err := errors.Join(reply.Wait(), err); err != nil {
		return err
	}
	p.forget(d.Meta.RequestID, true)
	return nil
}

// outcome is what the output stage found in an answer, for its safety
// signal and abuse-monitoring record.
type outcome struct {
	op      events.Operation
	output  json.RawMessage
	merged  classifier.Result
	worst   classifier.Annotations
	blocked bool
	text    string
}

// finishChoices checks the last window of every choice of a stream and
// releases or withholds what is held. It returns the stream's record for
// abuse monitoring, nil when the stream carried no choices.
func (p *Pipeline) finishChoices(ctx context.Context, d *bus.Delivery, st *streamState) (*outcome, error) {
	idx := make([]int, 0, len(st.choices))
	for i := range st.choices {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	type outChoice struct {
		Index int    `json:"index"`
		Text  string `json:"text"`
	}
	var (
		outs       []outChoice
		texts      []string
		merged     classifier.Result
		worst      *classifier.Annotations
		anyBlocked bool
	)
	for _, i := range idx {
		cs := st.choices[i]
		if !cs.blocked {
			r, err := p.guardChoice(ctx, d.Geo, st, cs, cs.stream.Flush())
			if err != nil {
				return nil, err
			}
			if err := p.judge(ctx, d, st, headOr(st.head, st), i, cs, r); err != nil {
				return nil, err
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
	st.release()
	if worst == nil {
		return nil, nil
	}
	output, err := json.Marshal(map[string]any{"choices": outs})
	if err != nil {
		return nil, err
	}
	return &outcome{op: st.op(), output: output, merged: classifier.Merge(merged, st.other), worst: *worst, blocked: anyBlocked, text: strings.Join(texts, "\n")}, nil
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

// record publishes the request's one safety signal and, when content
// logging applies, its one abuse-monitoring record to the home geography:
// the prompt's findings and part from the prompt stage's check (carried
// back by the worker), the answer's from out (nil when there was no text
// to check: an error, a timeout, embeddings). A result from a worker that
// carried no check back (an earlier version) gets the output's signal and
// part alone, as the prompt stage then wrote the prompt's.
// promptResults are a non-streamed request's prompt_filter_results.
func (p *Pipeline) record(ctx context.Context, d *bus.Delivery, st *streamState, op events.Operation, promptResults json.RawMessage, out *outcome) error {
	check := st.check
	if check == nil && out == nil {
		return nil
	}
	var sig events.SafetySignal
	if out != nil {
		f, err := p.findings(ctx, d.Meta.HomeGeo, out.merged, out.worst, out.blocked, out.text)
		if err != nil {
			return err
		}
		sig = signal(d.Meta, events.DirectionCompletion, f)
		if check != nil {
			sig.Prompt = &check.Signal
		}
	} else {
		sig = signal(d.Meta, events.DirectionPrompt, check.Signal)
	}
	sends := []*bus.Sending{p.cfg.Bus.PublishAsync(ctx, d.Meta.HomeGeo, bus.StreamSafetySignals, bus.Meta{Key: d.Meta.RequestID}, sig)}
	// The prompt is logged as the prompt stage decided; the output as the
	// resource's content logging says now.
	logPrompt := check != nil && check.Log && len(st.prompt) > 0
	logOutput := out != nil && st.res.ContentLogging
	if logPrompt || logOutput {
		rec := events.AbuseRecord{RequestID: d.Meta.RequestID, Resource: d.Meta.Resource, HomeGeo: d.Meta.HomeGeo, ProcessingGeo: d.Geo,
			Deployment: d.Meta.Deployment, Operation: cmp.Or(op, events.OperationChatCompletions), CreatedAt: time.Now().UTC()}
		if logPrompt {
			rec.Prompt, rec.PromptFilterResults = st.prompt, check.FilterResults
			if len(rec.PromptFilterResults) == 0 {
				rec.PromptFilterResults = promptResults
			}
		}
		if logOutput {
			ann, err := json.Marshal(out.worst)
			if err != nil {
				return errors.Join(err, d.After(sends...))
			}
			rec.Output, rec.ContentFilterResults = out.output, ann
		}
		home := d.Meta
		home.Key, home.Seq, home.Final = "", 0, false
		sends = append(sends, p.cfg.Bus.PublishAsync(ctx, d.Meta.HomeGeo, bus.StreamAbuseLog, home, rec))
	}
	// The handler does not wait for them (they linger to travel in
	// batches); the record's commit does.
	if err := d.After(sends...); err != nil {
		p.log.Warn("request's records not published", zap.String("request_id", d.Meta.RequestID), zap.Error(err))
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
