package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/blob"
	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/control"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/filestore"
	"github.com/terroir-ai/terroir/pkg/keys"
	"github.com/terroir-ai/terroir/services/batch/validate"
)

// driver drives one job on this instance while it holds the job's lease.
type driver struct {
	r      *Runner
	st     *store
	id     string
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	// flight holds the lines this driver sent and saw no answer to
	// (changed only by fly and land), flightBytes the size of their
	// bodies.
	flight      map[int]sent
	flightBytes int
}

// errStop ends a phase early: the job was cancelled or expired.
var errStop = errors.New("stop dispatching")

func (d *driver) log() *zap.Logger {
	return d.r.cfg.Log.With(zap.String("batch_id", d.id), zap.String("geo", d.st.geo))
}

// run moves the job through its states until it ends or the lease is
// lost; a failure of Redis, the bus or the blob store is retried.
func (d *driver) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go d.keepLease(ctx, cancel)
	backoff := 100 * time.Millisecond
	var missingSince time.Time
	for ctx.Err() == nil {
		s, err := d.st.load(ctx, d.id)
		if errors.Is(err, errNoJob) {
			return
		}
		if err == nil {
			err = d.step(ctx, &s)
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if errors.Is(err, errEnded) {
			return
		}
		switch {
		case errors.Is(err, keys.ErrShredded):
			// The resource was deleted: nothing of the job can be read
			// or written any more.
			d.log().Info("batch of a deleted resource dropped")
			_ = d.st.finish(context.WithoutCancel(ctx), d.id)
			return
		case errors.Is(err, keys.ErrResourceGone):
			// Not in this instance's view of the control plane: a view
			// still catching up, or a resource deleted before it had a
			// key to shred. Only a lasting absence drops the job.
			if missingSince.IsZero() {
				missingSince = time.Now()
			}
			if time.Since(missingSince) > resourceGrace {
				d.log().Info("batch of a resource that no longer exists dropped")
				_ = d.st.finish(context.WithoutCancel(ctx), d.id)
				return
			}
		default:
			missingSince = time.Time{}
		}
		if ctx.Err() != nil {
			return
		}
		d.log().Warn("batch step failed; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// resourceGrace is how long a job's resource may be missing from the
// control plane before the job is dropped.
const resourceGrace = 2 * time.Minute

// errEnded means the job reached its final state and was cleaned up.
var errEnded = errors.New("batch ended")

// keepLease renews the lease; losing it stops the driver.
func (d *driver) keepLease(ctx context.Context, stop context.CancelFunc) {
	t := time.NewTicker(d.r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := d.st.lease(ctx, d.id, d.r.cfg.Instance, d.r.cfg.LeaseTTL)
		if err == nil && !ok {
			d.log().Warn("batch lease lost to another instance")
			stop()
			return
		}
	}
}

func (d *driver) step(ctx context.Context, s *state) error {
	err := d.advance(ctx, s)
	if errors.Is(err, errInputGone) && !s.obj.Status.Terminal() {
		// The input file was deleted while the batch ran: its lines (and
		// their custom_ids) can no longer be read, so nothing can be
		// written out; the batch fails saying why.
		if err := d.st.close(ctx, d.id); err != nil {
			return err
		}
		s.obj.Errors = []events.BatchError{{Code: "input_modified", Message: "the input file was deleted while the batch ran", Param: "input_file_id"}}
		return d.enter(ctx, s, events.BatchFailed)
	}
	return err
}

// errInputGone means the batch's input file no longer exists.
var errInputGone = errors.New("the batch's input file is gone")

// advance takes the job one state further.
func (d *driver) advance(ctx context.Context, s *state) error {
	now := d.r.cfg.Now()
	switch s.obj.Status {
	case events.BatchValidating:
		if s.cancel {
			return d.enter(ctx, s, events.BatchCancelling)
		}
		return d.validate(ctx, s)
	case events.BatchInProgress:
		switch {
		case s.cancel:
			return d.enter(ctx, s, events.BatchCancelling)
		case now.After(s.obj.ExpiresAt):
			return d.end(ctx, s, events.BatchExpired)
		}
		err := d.dispatch(ctx, s)
		if errors.Is(err, errStop) {
			return nil // the next step sees why
		}
		if err != nil {
			return err
		}
		return d.enter(ctx, s, events.BatchFinalizing)
	case events.BatchFinalizing:
		return d.end(ctx, s, events.BatchCompleted)
	case events.BatchCancelling:
		d.drain(ctx)
		return d.end(ctx, s, events.BatchCancelled)
	}
	// A final state: the job's record is out; forget its progress.
	if err := d.st.finish(ctx, d.id); err != nil {
		return err
	}
	return errEnded
}

// enter moves the job to status and publishes it.
func (d *driver) enter(ctx context.Context, s *state, status events.BatchStatus) error {
	at := d.r.cfg.Now().UTC()
	s.obj.Status = status
	switch status {
	case events.BatchInProgress:
		s.obj.InProgressAt = &at
	case events.BatchFinalizing:
		s.obj.FinalizingAt = &at
	case events.BatchCompleted:
		s.obj.CompletedAt = &at
	case events.BatchFailed:
		s.obj.FailedAt = &at
	case events.BatchExpired:
		s.obj.ExpiredAt = &at
	case events.BatchCancelling:
		s.obj.CancellingAt = &at
	case events.BatchCancelled:
		s.obj.CancelledAt = &at
	}
	return d.publish(ctx, s)
}

// publish writes the job's object, with its counts, to Redis and to the
// batches stream.
func (d *driver) publish(ctx context.Context, s *state) error {
	s.obj.RequestCounts.Completed, s.obj.RequestCounts.Failed = s.completed, s.failed
	if s.inTokens+s.outTokens > 0 {
		s.obj.Usage = &events.BatchUsage{InputTokens: s.inTokens, OutputTokens: s.outTokens, TotalTokens: s.inTokens + s.outTokens}
	}
	s.obj.Version++
	if err := d.st.saveObject(ctx, s.obj); err != nil {
		return err
	}
	return d.r.cfg.Bus.Publish(ctx, s.obj.HomeGeo, bus.StreamBatches,
		bus.Meta{RequestID: s.obj.ID, Resource: s.obj.Resource, HomeGeo: s.obj.HomeGeo, Key: s.obj.Resource + "/" + s.obj.ID}, s.obj)
}

// input opens the job's input file; nil when it is gone.
func (d *driver) input(ctx context.Context, s *state) (io.ReadCloser, error) {
	res, ok := d.r.cfg.State.Resource(s.obj.Resource)
	if !ok {
		return nil, keys.ErrResourceGone
	}
	f, err := d.r.cfg.Files.Get(ctx, res, s.obj.InputFileID)
	if errors.Is(err, filestore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rc, _, err := d.r.cfg.Files.Open(ctx, f, blob.Range{})
	if errors.Is(err, filestore.ErrNotFound) {
		return nil, nil
	}
	return rc, err
}

// validate reads the whole input once: a file with bad lines fails the
// job naming every one; a good one starts it.
func (d *driver) validate(ctx context.Context, s *state) error {
	in, err := d.input(ctx, s)
	if err != nil {
		return err
	}
	if in == nil {
		s.obj.Errors = []events.BatchError{{Code: "input_no_permissions", Message: "the input file does not exist or was deleted", Param: "input_file_id"}}
		return d.enter(ctx, s, events.BatchFailed)
	}
	res, err := validate.Scan(bufio.NewReaderSize(in, 1<<20), s.obj.Endpoint, d.r.cfg.Limits, nil)
	in.Close()
	if err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		s.obj.Errors = res.Errors
		return d.enter(ctx, s, events.BatchFailed)
	}
	s.obj.Deployment, s.obj.EnqueuedTokens = res.Deployment, res.EstimatedTokens
	s.obj.RequestCounts.Total = res.Lines
	if over, err := d.overQueue(ctx, s); err != nil {
		return err
	} else if over {
		s.obj.Errors = []events.BatchError{{Code: "token_limit_exceeded",
			Message: fmt.Sprintf("the enqueued token limit of deployment %s (%d tokens) is reached; retry when its other batches have finished", res.Deployment, d.r.cfg.MaxEnqueuedTokens)}}
		return d.enter(ctx, s, events.BatchFailed)
	}
	return d.enter(ctx, s, events.BatchInProgress)
}

// overQueue reports whether the job's tokens would take its deployment's
// unfinished batches over the enqueued-token limit.
func (d *driver) overQueue(ctx context.Context, s *state) (bool, error) {
	limit := d.r.cfg.MaxEnqueuedTokens
	if limit <= 0 {
		return false, nil
	}
	ids, err := d.st.active(ctx)
	if err != nil {
		return false, err
	}
	total := s.obj.EnqueuedTokens
	for _, id := range ids {
		if id == s.obj.ID {
			continue
		}
		o, err := d.st.load(ctx, id)
		if err != nil {
			continue
		}
		if o.obj.Resource == s.obj.Resource && o.obj.Deployment == s.obj.Deployment && !o.obj.Status.Terminal() {
			total += o.obj.EnqueuedTokens
		}
	}
	return total > limit, nil
}

// sent is a line sent and not yet answered.
type sent struct {
	line validate.Line
	at   time.Time
	// sending is the line's publication, acknowledged or failed
	// later; nil for a line answered at once (refused).
	sending *bus.Sending
}

// dispatch sends every line without an answer, paced, and returns once
// every line has one; errStop when the job was cancelled or expired.
func (d *driver) dispatch(ctx context.Context, s *state) error {
	res, ok := d.r.cfg.State.Resource(s.obj.Resource)
	if !ok {
		return keys.ErrResourceGone
	}
	p := newPacer(d.r.cfg.MaxInFlight, d.r.cfg.QueueTarget)
	if d.flight == nil {
		d.flight = map[int]sent{}
	}
	progress := time.NewTicker(d.r.cfg.ProgressEvery)
	defer progress.Stop()
	lastPublished := s.completed + s.failed
	// settle drops answered lines from the flight, sends lost ones
	// again, and feeds the pacer.
	settle := func() error {
		if len(d.flight) == 0 {
			return nil
		}
		idx := make([]int, 0, len(d.flight))
		for i := range d.flight {
			idx = append(idx, i)
		}
		done, err := d.st.answeredSet(ctx, d.id, idx)
		if err != nil {
			return err
		}
		now := time.Now()
		for k, i := range idx {
			f := d.flight[i]
			if done[k] {
				p.observe(now.Sub(f.at), now)
				d.land(i)
				continue
			}
			failed := false
			if f.sending != nil {
				select {
				case <-f.sending.Done():
					if err := f.sending.Wait(); err != nil {
						d.log().Warn("batch line not published; sending it again", zap.Int("line", i+1), zap.Error(err))
						failed = true
					}
				default:
				}
			}
			if failed || now.Sub(f.at) > d.r.cfg.LineTimeout {
				if !failed {
					d.log().Warn("batch line unanswered; sending it again", zap.Int("line", i+1))
				}
				sending, err := d.send(ctx, res, f.line)
				if err != nil && !errors.Is(err, errNoCapacity) {
					return err
				}
				d.fly(sent{line: f.line, at: now, sending: sending})
			}
		}
		return nil
	}
	// tick publishes progress and notices a cancel or the window's end.
	tick := func() error {
		cur, err := d.st.load(ctx, d.id)
		if err != nil {
			return err
		}
		if cur.cancel || d.r.cfg.Now().After(cur.obj.ExpiresAt) {
			*s = cur
			return errStop
		}
		if n := cur.completed + cur.failed; n != lastPublished {
			s.completed, s.failed, s.inTokens, s.outTokens = cur.completed, cur.failed, cur.inTokens, cur.outTokens
			if err := d.publish(ctx, s); err != nil {
				return err
			}
			lastPublished = n
		}
		return nil
	}
	wait := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.wake:
		case <-progress.C:
			if err := tick(); err != nil {
				return err
			}
		case <-time.After(20 * time.Millisecond):
		}
		return settle()
	}
	err := d.eachLine(ctx, s, func(lines []validate.Line) error {
		idx := make([]int, len(lines))
		for k, l := range lines {
			idx[k] = l.Index
		}
		done, err := d.st.answeredSet(ctx, d.id, idx)
		if err != nil {
			return err
		}
		for k, l := range lines {
			if done[k] {
				continue
			}
			if _, ok := d.flight[l.Index]; ok {
				continue
			}
			for len(d.flight) >= p.window() || !p.ready(time.Now()) || d.flightBytes+len(l.Body) > d.r.cfg.MaxInFlightBytes && len(d.flight) > 0 || !d.spare(res, l) {
				if err := wait(); err != nil {
					return err
				}
			}
			var sending *bus.Sending
			for {
				var err error
				sending, err = d.send(ctx, res, l)
				if err == nil {
					break
				}
				if !errors.Is(err, errNoCapacity) {
					return err
				}
				if err := wait(); err != nil {
					return err
				}
			}
			d.fly(sent{line: l, at: time.Now(), sending: sending})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for len(d.flight) > 0 {
		if err := wait(); err != nil {
			return err
		}
	}
	if err := tick(); err != nil {
		return err
	}
	*s, err = d.st.load(ctx, d.id)
	return err
}

// fly records a line as in flight (again, when it is sent again).
func (d *driver) fly(f sent) {
	if old, ok := d.flight[f.line.Index]; ok {
		d.flightBytes -= len(old.line.Body)
	}
	d.flight[f.line.Index] = f
	d.flightBytes += len(f.line.Body)
}

// land drops an answered line from the flight.
func (d *driver) land(i int) {
	d.flightBytes -= len(d.flight[i].line.Body)
	delete(d.flight, i)
}

// spare reports whether the line's model has spare capacity in the
// home geography as inference workers report it; with no reports, the
// pacing window alone decides.
func (d *driver) spare(res control.Resource, l validate.Line) bool {
	if d.r.cfg.Capacity == nil {
		return true
	}
	dep, ok := d.r.cfg.State.Deployment(res.Name, l.Model)
	if !ok {
		return true // refused when sent
	}
	spare, seen := d.r.cfg.Capacity(res.Location, dep.Model)
	return !seen || spare > 0
}

// send admits one line as the real-time API admits a request and
// publishes it, its reply going to the batch-replies stream, without
// waiting for the broker: the publication's outcome is checked as the
// line waits for its answer, and a failed one is sent again. A line
// admission refuses is answered at once with the refusal (no
// publication); one that no geography can take now is errNoCapacity.
func (d *driver) send(ctx context.Context, res control.Resource, l validate.Line) (*bus.Sending, error) {
	reqID := lineRequestID(d.id, l.Index)
	a := d.r.cfg.Admit
	req, err := admit.Parse(l.Operation, l.Body)
	var r admit.Resolved
	if err == nil {
		r, err = a.Resolve(res, l.Operation, l.Model, req, true)
	}
	var geo string
	if err == nil {
		geo, err = a.Route(res, r)
	}
	var ref *admit.Refusal
	if errors.As(err, &ref) {
		if ref.Code == "NoCapacity" {
			return nil, errNoCapacity
		}
		body := errorBody(ref.Message, ref.Type, ref.Param, ref.Code)
		_, err := d.st.record(ctx, res.Name, d.id, l.Index, answer{RequestID: reqID, StatusCode: ref.Status, Body: body}, 0, 0)
		d.r.wake(d.id)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	dep := r.Deployment
	ev := events.InferenceRequest{RequestID: reqID, Resource: res.Name, HomeGeo: res.Location, ProcessingGeo: geo, Deployment: dep.Name,
		SKU: dep.SKU, Model: dep.Model, Operation: l.Operation, APIFlavor: events.APIFlavorOpenAI, Body: l.Body, CreatedAt: d.r.cfg.Now().UTC()}
	meta := bus.Meta{RequestID: reqID, Resource: res.Name, HomeGeo: res.Location, Deployment: dep.Name,
		ReplyTo: bus.BatchReplyAddress(d.r.cfg.Bus.Namespace(), res.Location)}
	// Lines take the batch lane (bus.Lane): the same checks as real time,
	// on streams of their own, so they never queue ahead of it.
	return d.r.cfg.Bus.PublishAsync(ctx, geo, bus.LaneBatch.Stream(bus.StreamRequests), meta, ev), nil
}

// errNoCapacity means no geography the line may go to can take it now.
var errNoCapacity = errors.New("no capacity for the line now")

// drain waits, up to the cancel grace, for the lines this driver sent
// to be answered.
func (d *driver) drain(ctx context.Context) {
	deadline := time.Now().Add(d.r.cfg.CancelGrace)
	for len(d.flight) > 0 && time.Now().Before(deadline) {
		idx := make([]int, 0, len(d.flight))
		for i := range d.flight {
			idx = append(idx, i)
		}
		done, err := d.st.answeredSet(ctx, d.id, idx)
		if err == nil {
			for k, i := range idx {
				if done[k] {
					d.land(i)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// end writes the output and error files from the answers kept, then
// moves the job to status; lines with no answer are written to the
// error file as not run (batch_expired, batch_cancelled).
func (d *driver) end(ctx context.Context, s *state, status events.BatchStatus) error {
	if !s.closed {
		if err := d.st.close(ctx, d.id); err != nil {
			return err
		}
		cur, err := d.st.load(ctx, d.id)
		if err != nil {
			return err
		}
		s.closed, s.completed, s.failed, s.inTokens, s.outTokens = true, cur.completed, cur.failed, cur.inTokens, cur.outTokens
	}
	now := d.r.cfg.Now().UTC()
	ttl := d.r.cfg.OutputTTL
	if s.obj.OutputExpiresAfter > 0 {
		ttl = time.Duration(s.obj.OutputExpiresAfter) * time.Second
	}
	expires := now.Add(ttl)
	file := func(what string) events.FileObject {
		return events.FileObject{ID: "file-" + derivedID(d.id, what), Resource: s.obj.Resource, HomeGeo: s.obj.HomeGeo,
			Purpose: events.FilePurposeBatchOutput, Filename: d.id + "_" + what + ".jsonl", Status: events.FileStatusProcessed,
			CreatedAt: now, ExpiresAt: &expires}
	}
	out, errs := newSink(ctx, d.r.cfg.Files, file("output")), newSink(ctx, d.r.cfg.Files, file("error"))
	notRun := map[events.BatchStatus]lineError{
		events.BatchExpired:   {Code: "batch_expired", Message: "This request could not be executed before the completion window expired."},
		events.BatchCancelled: {Code: "batch_cancelled", Message: "This request was not executed because the batch was cancelled."},
	}[status]
	var skipped int
	err := d.eachLine(ctx, s, func(lines []validate.Line) error {
		idx := make([]int, len(lines))
		for k, l := range lines {
			idx[k] = l.Index
		}
		got, err := d.st.answers(ctx, s.obj.Resource, d.id, idx)
		if err != nil {
			return err
		}
		for k, l := range lines {
			line := outputLine{ID: "batch_req_" + derivedID(d.id, lineRequestID(d.id, l.Index)), CustomID: l.CustomID}
			a := got[k]
			switch {
			case a != nil:
				line.Response = &lineResponse{StatusCode: a.StatusCode, RequestID: a.RequestID, Body: a.Body}
			case notRun.Code != "":
				e := notRun
				line.Error = &e
				skipped++
			default:
				// finalizing with a line unanswered cannot happen: every
				// line had an answer before finalizing began
				e := lineError{Code: "internal_error", Message: "This request has no answer."}
				line.Error = &e
				skipped++
			}
			sink := errs
			if a != nil && a.StatusCode/100 == 2 {
				sink = out
			}
			if err := sink.write(line); err != nil {
				return err
			}
		}
		return nil
	})
	outFile, outErr := out.close(err)
	errFile, errErr := errs.close(err)
	if err = errors.Join(err, outErr, errErr); err != nil {
		return err
	}
	s.failed += skipped
	s.obj.OutputFileID, s.obj.ErrorFileID = outFile.ID, errFile.ID
	return d.enter(ctx, s, status)
}

// eachLine calls fn with the input's lines, a chunk at a time.
func (d *driver) eachLine(ctx context.Context, s *state, fn func([]validate.Line) error) error {
	in, err := d.input(ctx, s)
	if err != nil {
		return err
	}
	if in == nil {
		return errInputGone
	}
	defer in.Close()
	const chunk = 256
	var lines []validate.Line
	_, err = validate.Scan(bufio.NewReaderSize(in, 1<<20), s.obj.Endpoint, d.r.cfg.Limits, func(l validate.Line) error {
		l.Body = append(json.RawMessage(nil), l.Body...)
		lines = append(lines, l)
		if len(lines) == chunk {
			err := fn(lines)
			lines = lines[:0]
			return err
		}
		return nil
	})
	if err == nil && len(lines) > 0 {
		err = fn(lines)
	}
	return err
}

// sink streams JSON lines into a file being created.
type sink struct {
	pw   *io.PipeWriter
	w    *bufio.Writer
	done chan sinkResult
}

type sinkResult struct {
	f   events.FileObject
	err error
}

func newSink(ctx context.Context, files Files, f events.FileObject) *sink {
	pr, pw := io.Pipe()
	s := &sink{pw: pw, w: bufio.NewWriterSize(pw, 64<<10), done: make(chan sinkResult, 1)}
	go func() {
		got, err := files.Create(ctx, f, pr)
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		s.done <- sinkResult{got, err}
	}()
	return s
}

func (s *sink) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = s.w.Write(b)
	return err
}

// close ends the content (with failed, the file is abandoned) and
// returns the file.
func (s *sink) close(failed error) (events.FileObject, error) {
	if failed == nil {
		failed = s.w.Flush()
	}
	if failed != nil {
		s.pw.CloseWithError(failed)
	} else {
		s.pw.Close()
	}
	r := <-s.done
	return r.f, r.err
}
