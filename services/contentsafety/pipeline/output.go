package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/contentsafety/classifier"
)

// idleStream is how long a stream's state is kept without a record
// before it is dropped (its worker died; ingress has given up).
const idleStream = 10 * time.Minute

type object = map[string]json.RawMessage

// streamState is what the output stage holds of one streamed answer.
type streamState struct {
	seq     int // next reply sequence number (0 was the prompt verdict)
	pol     control.FilterPolicy
	bl      *classifier.Blocklists
	res     control.Resource
	choices map[int]*choiceState
	held    []heldChunk
	head    object // the latest chunk's fields other than choices
	last    time.Time
}

type choiceState struct {
	stream  *classifier.Stream
	text    strings.Builder // the choice's text, kept in memory until the answer ends
	result  classifier.Result
	ann     classifier.Annotations
	blocked bool
	// released is set once a chunk of the choice reached the app, which
	// then knows the choice's role.
	released bool
}

type heldChunk struct {
	index  int
	head   object // the chunk's fields other than choices
	choice object
}

// output is the output stage's handler.
func (p *Pipeline) output(ctx context.Context, d *bus.Delivery) error {
	switch d.Meta.Type.Name {
	case events.TypeInferenceChunk.Name:
		var c events.InferenceChunk
		if err := d.Decode(ctx, &c); err != nil {
			return bus.Permanent(err)
		}
		return p.chunk(ctx, d, c)
	case events.TypeInferenceResult.Name:
		var r events.InferenceResult
		if err := d.Decode(ctx, &r); err != nil {
			return bus.Permanent(err)
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

// deltaText returns the text a streamed choice adds.
func deltaText(choice object) string {
	var s string
	if raw, ok := choice["text"]; ok {
		_ = json.Unmarshal(raw, &s)
		return s
	}
	var delta struct {
		Content *string `json:"content"`
	}
	_ = json.Unmarshal(choice["delta"], &delta)
	if delta.Content != nil {
		return *delta.Content
	}
	return ""
}

func (p *Pipeline) chunk(ctx context.Context, d *bus.Delivery, c events.InferenceChunk) error {
	st, err := p.state(d.Meta)
	if err != nil {
		return bus.Permanent(err)
	}
	var head object
	if err := json.Unmarshal(c.Body, &head); err != nil {
		return bus.Permanent(err)
	}
	var choices []object
	_ = json.Unmarshal(head["choices"], &choices)
	delete(head, "choices")
	st.head = head
	for _, ch := range choices {
		var i int
		_ = json.Unmarshal(ch["index"], &i)
		cs := st.choice(p, i)
		if cs.blocked {
			continue
		}
		if t := deltaText(ch); t != "" {
			cs.text.WriteString(t)
			if r, checked := cs.stream.Add(t); checked {
				if err := p.judge(ctx, d, st, head, i, cs, r); err != nil {
					return err
				}
				if cs.blocked {
					continue
				}
			}
		}
		st.held = append(st.held, heldChunk{index: i, head: head, choice: ch})
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
func (p *Pipeline) judge(ctx context.Context, d *bus.Delivery, st *streamState, head object, i int, cs *choiceState, r classifier.Result) error {
	cs.result = r
	ann, blocked := classifier.Apply(st.pol, events.DirectionCompletion, r)
	cs.ann = ann
	if !blocked {
		return nil
	}
	cs.blocked = true
	st.held = slices.DeleteFunc(st.held, func(h heldChunk) bool { return h.index == i })
	annRaw, err := json.Marshal(ann)
	if err != nil {
		return err
	}
	end := object{"index": json.RawMessage(itoa(i)), "finish_reason": json.RawMessage(`"content_filter"`), "content_filter_results": annRaw,
		"logprobs": json.RawMessage("null")}
	if _, chat := head["object"]; chat && strings.Contains(string(head["object"]), "chat") {
		// A choice's first delta names its role, as SDKs expect, even
		// when nothing of it passed the filter.
		end["delta"] = json.RawMessage(`{}`)
		if !cs.released {
			end["delta"] = json.RawMessage(`{"role":"assistant"}`)
		}
	} else {
		end["text"] = json.RawMessage(`""`)
	}
	return p.send(ctx, d, st, head, end, nil)
}

func itoa(i int) string {
	raw, _ := json.Marshal(i)
	return string(raw)
}

// send replies one chunk holding one choice.
func (p *Pipeline) send(ctx context.Context, d *bus.Delivery, st *streamState, head, choice object, ann *classifier.Annotations) error {
	if ann != nil {
		raw, err := json.Marshal(ann)
		if err != nil {
			return err
		}
		choice["content_filter_results"] = raw
	}
	obj := object{}
	for k, v := range head {
		obj[k] = v
	}
	chs, err := json.Marshal([]object{choice})
	if err != nil {
		return err
	}
	obj["choices"] = chs
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	seq := st.seq
	st.seq++
	return p.cfg.Bus.Reply(ctx, d, seq, false, events.InferenceChunk{RequestID: d.Meta.RequestID, Seq: seq, Body: body, CreatedAt: time.Now().UTC()})
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
	op := operationOf(r.Body)
	if streamed {
		head := st.head
		op = events.OperationChatCompletions
		if strings.Contains(string(head["object"]), "text_completion") {
			op = events.OperationCompletions
		}
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
				if err := p.judge(ctx, d, st, headOr(head, st), i, cs, cs.stream.Flush()); err != nil {
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
		var err error
		if output, err = json.Marshal(map[string]any{"choices": outs}); err != nil {
			return err
		}
	} else if len(r.Body) > 0 {
		body, t, m, w, b, err := p.checkBody(st, r.Body, promptResults)
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
func headOr(head object, st *streamState) object {
	if head != nil {
		return head
	}
	return object{"object": json.RawMessage(`"chat.completion.chunk"`)}
}

// checkBody classifies every choice of a complete answer and annotates
// it; a filtered choice ends with finish_reason content_filter and loses
// its content. promptResults, when set, become the answer's
// prompt_filter_results.
func (p *Pipeline) checkBody(st *streamState, body, promptResults json.RawMessage) (json.RawMessage, []string, classifier.Result, *classifier.Annotations, bool, error) {
	var obj object
	var merged classifier.Result
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, nil, merged, nil, false, bus.Permanent(err)
	}
	var choices []object
	if err := json.Unmarshal(obj["choices"], &choices); err != nil || choices == nil {
		return body, nil, merged, nil, false, nil // embeddings
	}
	var texts []string
	var worst *classifier.Annotations
	anyBlocked := false
	for _, ch := range choices {
		var text string
		_, chat := ch["message"]
		if chat {
			var msg struct {
				Content *string `json:"content"`
			}
			_ = json.Unmarshal(ch["message"], &msg)
			if msg.Content != nil {
				text = *msg.Content
			}
		} else {
			_ = json.Unmarshal(ch["text"], &text)
		}
		texts = append(texts, text)
		r := p.cfg.Classifier.ClassifyWith(text, events.DirectionCompletion, st.bl, st.pol.Completion.Blocklists)
		merged = classifier.Merge(merged, r)
		ann, blocked := classifier.Apply(st.pol, events.DirectionCompletion, r)
		raw, err := json.Marshal(ann)
		if err != nil {
			return nil, nil, merged, nil, false, err
		}
		ch["content_filter_results"] = raw
		if blocked {
			ch["finish_reason"] = json.RawMessage(`"content_filter"`)
			if chat {
				var msg object
				_ = json.Unmarshal(ch["message"], &msg)
				msg["content"] = json.RawMessage("null")
				ch["message"], _ = json.Marshal(msg)
			} else {
				ch["text"] = json.RawMessage(`""`)
			}
		}
		if blocked || worst == nil {
			worst = &ann
		}
		anyBlocked = anyBlocked || blocked
	}
	raw, err := json.Marshal(choices)
	if err != nil {
		return nil, nil, merged, nil, false, err
	}
	obj["choices"] = raw
	if len(promptResults) > 0 {
		obj["prompt_filter_results"] = promptResults
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

// operationOf names the operation of an answer from its object type.
func operationOf(body json.RawMessage) events.Operation {
	var o struct {
		Object string `json:"object"`
	}
	_ = json.Unmarshal(body, &o)
	switch o.Object {
	case "text_completion":
		return events.OperationCompletions
	case "list":
		return events.OperationEmbeddings
	}
	return events.OperationChatCompletions
}
