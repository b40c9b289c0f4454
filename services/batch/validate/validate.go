// Package validate checks a Batch API input file before the batch runs,
// the way Azure OpenAI's batch validation does, and hands out its lines.
//
// A batch input file is JSONL: one request a line,
//
//	{"custom_id":"task-0","method":"POST","url":"/chat/completions","body":{"model":"my-deployment",...}}
//
// Scan reads such a file once, as a stream, holding at most one line
// (Limits.MaxLineBytes) at a time, so a 200 MB file costs a few
// megabytes. It reports every bad line, each with its 1-based line
// number and one of Azure's error codes (the Code* constants), and calls
// back for every good line with its fields and its byte range in the
// file. The batch service scans a file twice: once to validate it (the
// batch fails with Result.Errors if there are any) and once to dispatch
// its lines.
//
// Scan checks the envelope of each line, not the request in its body:
// body is checked against the endpoint's API when the line is admitted,
// like any other request, and a bad body fails that line only (it goes
// to the batch's error file).
//
// Error messages name the line and what is wrong with it; they never
// quote the file: no custom_id, body or model text, since that is the
// customer's content.
package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/events"
)

// Error codes of Result.Errors, as Azure OpenAI names them.
const (
	// CodeInvalidJSONLine: the line is not valid UTF-8, not JSON, not
	// an object, or one of its fields has the wrong type or is given
	// twice.
	CodeInvalidJSONLine = "invalid_json_line"
	// CodeEmptyFile: the file has no bytes at all.
	CodeEmptyFile = "empty_file"
	// CodeEmptyBatch: the file has only blank lines.
	CodeEmptyBatch = "empty_batch"
	// CodeTooManyTasks: the file has more than Limits.MaxLines requests;
	// the error's Line is the first request over the limit.
	CodeTooManyTasks = "too_many_tasks"
	// CodeURLMismatch: the line's url is not the batch's endpoint.
	CodeURLMismatch = "url_mismatch"
	// CodeInvalidRequest: custom_id, method, url or body is missing,
	// method is not POST, custom_id is longer than MaxCustomIDLength,
	// body is not an object, body.stream is true, the line is longer
	// than Limits.MaxLineBytes, or the file starts with a byte-order
	// mark.
	CodeInvalidRequest = "invalid_request"
	// CodeModelMismatch: body.model names another deployment than the
	// first line that names one.
	CodeModelMismatch = "model_mismatch"
	// CodeModelNotFound: the line has no body.model, or an empty one.
	CodeModelNotFound = "model_not_found"
	// CodeDuplicateCustomID: an earlier line has the same custom_id.
	CodeDuplicateCustomID = "duplicate_custom_id"
	// CodeTooManyErrors is Terroir's, not Azure's: the last entry of a
	// list cut at Limits.MaxErrors, saying how many line errors it left
	// out.
	CodeTooManyErrors = "too_many_errors"
)

// Defaults of Limits.
const (
	// DefaultMaxLines is Azure's limit of requests per file.
	DefaultMaxLines = 100_000
	// DefaultMaxLineBytes is 10 MiB.
	DefaultMaxLineBytes = 10 << 20
	// DefaultMaxErrors is how many line errors a Result lists at most.
	DefaultMaxErrors = 1000
)

// MaxCustomIDLength is the longest custom_id, in characters (Unicode
// code points).
const MaxCustomIDLength = 512

// ErrUnsupportedEndpoint is returned (wrapped) by Scan for an endpoint
// batches do not serve.
var ErrUnsupportedEndpoint = errors.New("unsupported batch endpoint")

// Limits bound a batch input file. A zero or negative field takes its
// default.
type Limits struct {
	// MaxLines is the most requests (non-blank lines) a file may have;
	// default DefaultMaxLines.
	MaxLines int
	// MaxLineBytes is the longest line in bytes, not counting its
	// ending; default DefaultMaxLineBytes. Scan never holds more of a
	// line than this.
	MaxLineBytes int
	// MaxErrors is how many line errors Result.Errors lists at most;
	// default DefaultMaxErrors.
	MaxErrors int
}

func (l Limits) withDefaults() Limits {
	if l.MaxLines <= 0 {
		l.MaxLines = DefaultMaxLines
	}
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxErrors <= 0 {
		l.MaxErrors = DefaultMaxErrors
	}
	return l
}

// Line is a request line that passed validation.
type Line struct {
	// Index is the 0-based position of the request among the file's
	// non-blank lines.
	Index int
	// Number is the 1-based line number in the file, blank lines
	// counted.
	Number int
	// CustomID, Method and URL are the line's fields, unescaped. URL is
	// as the line wrote it ("/v1/chat/completions" or
	// "/chat/completions"); Operation is what it calls.
	CustomID  string
	Method    string
	URL       string
	Operation events.Operation
	// Model is body.model: the deployment the line names.
	Model string
	// Body is the body object exactly as the file has it; it belongs to
	// the callee.
	Body json.RawMessage
	// Offset and Length are the line's byte range in the file, without
	// its line ending ("\n" or "\r\n").
	Offset int64
	Length int64
}

// Result is what Scan found in a file.
type Result struct {
	// Lines is the number of requests: the non-blank lines, good or bad.
	Lines int
	// Deployment is the deployment the lines name in body.model (that
	// of the first line naming one); empty if none does.
	Deployment string
	// Operation is the batch endpoint's operation.
	Operation events.Operation
	// Errors lists what is wrong with the file, nil if nothing is: first
	// any problem of the file as a whole (empty_file, empty_batch with
	// Line 0; too_many_tasks with the first line over the limit), then
	// every bad line in order, one error per line, at most
	// Limits.MaxErrors of them, followed if more were found by a
	// too_many_errors entry (Line 0) saying how many.
	Errors []events.BatchError
	// EstimatedTokens estimates the input tokens of the good lines: the
	// bytes of their bodies divided by 4, rounded up (about four bytes a
	// token for English text in JSON). It is what the batch counts
	// against the deployment's enqueued-token limit until real usage is
	// known.
	EstimatedTokens int64
}

// EndpointOperation returns the operation of a batch endpoint (OpenAI's
// "/v1/chat/completions" or Azure's "/chat/completions", and the same
// for completions and embeddings); ok is false for any other. A line's
// url may be either spelling of its batch's operation.
func EndpointOperation(endpoint string) (op events.Operation, ok bool) {
	switch endpoint {
	case "/v1/chat/completions", "/chat/completions":
		return events.OperationChatCompletions, true
	case "/v1/completions", "/completions":
		return events.OperationCompletions, true
	case "/v1/embeddings", "/embeddings":
		return events.OperationEmbeddings, true
	}
	return "", false
}

// utf8BOM is the byte-order mark some Windows editors start files with.
const utf8BOM = "\xef\xbb\xbf"

// Scan reads a batch input file from r once, validating every line
// against the batch's endpoint and lim, and calls each (if not nil) for
// every good line, in order, before reading further. Lines past
// lim.MaxLines are validated but not handed to each. Problems with the
// file's content are reported in Result.Errors; Scan returns an error
// only when endpoint is not a batch endpoint (ErrUnsupportedEndpoint),
// when reading r fails, or when each does (then it stops, and Result
// describes the lines read so far).
func Scan(r io.Reader, endpoint string, lim Limits, each func(Line) error) (Result, error) {
	op, ok := EndpointOperation(endpoint)
	if !ok {
		return Result{}, fmt.Errorf("validating batch input: %w %q", ErrUnsupportedEndpoint, endpoint)
	}
	s := &scan{
		endpoint: endpoint,
		op:       op,
		lim:      lim.withDefaults(),
		ids:      make(map[[2]uint64]int),
		seeds:    [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
	lr := newLineReader(r, s.lim.MaxLineBytes)
	for number := 1; ; number++ {
		more, err := lr.next()
		if err != nil {
			return s.result(), fmt.Errorf("reading batch input at byte %d: %w", lr.pos, err)
		}
		if !more {
			break
		}
		if lr.blank {
			continue
		}
		index := s.lines
		s.lines++
		if s.lines == s.lim.MaxLines+1 {
			s.overLine = number
		}
		line, bad := s.check(lr, number)
		if bad != nil {
			s.fail(*bad)
			continue
		}
		s.bodyBytes += int64(len(line.Body))
		if each == nil || s.lines > s.lim.MaxLines {
			continue
		}
		line.Index, line.Offset, line.Length = index, lr.offset, lr.length
		line.Body = bytes.Clone(line.Body)
		if err := each(line); err != nil {
			return s.result(), fmt.Errorf("batch input line %d: %w", number, err)
		}
	}
	res := s.result()
	switch {
	case lr.pos == 0:
		res.Errors = []events.BatchError{{Code: CodeEmptyFile, Message: "the input file is empty"}}
	case s.lines == 0:
		res.Errors = []events.BatchError{{Code: CodeEmptyBatch, Message: "the input file has no requests, only blank lines"}}
	}
	return res, nil
}

// scan is the state of one Scan.
type scan struct {
	endpoint string
	op       events.Operation
	lim      Limits

	lines     int
	bodyBytes int64
	overLine  int // line number of the first request over lim.MaxLines

	deployment     string
	deploymentLine int

	// ids maps a 128-bit hash of each custom_id (of the first MaxLines
	// requests) to the line that used it first: 16 bytes a request
	// however long the IDs, and no customer text kept. Seeds are random
	// per Scan, so a file cannot be built to collide.
	ids   map[[2]uint64]int
	seeds [2]maphash.Seed

	errs    []events.BatchError
	dropped int
}

func (s *scan) fail(e events.BatchError) {
	if len(s.errs) >= s.lim.MaxErrors {
		s.dropped++
		return
	}
	s.errs = append(s.errs, e)
}

func (s *scan) result() Result {
	res := Result{Lines: s.lines, Deployment: s.deployment, Operation: s.op, EstimatedTokens: (s.bodyBytes + 3) / 4}
	if s.overLine > 0 {
		res.Errors = append(res.Errors, events.BatchError{
			Code:    CodeTooManyTasks,
			Line:    s.overLine,
			Message: fmt.Sprintf("the input file has %d requests, more than the limit of %d; line %d is the first over the limit", s.lines, s.lim.MaxLines, s.overLine),
		})
	}
	res.Errors = append(res.Errors, s.errs...)
	if s.dropped > 0 {
		res.Errors = append(res.Errors, events.BatchError{
			Code:    CodeTooManyErrors,
			Message: fmt.Sprintf("%d more lines failed validation; only the first %d are listed", s.dropped, len(s.errs)),
		})
	}
	return res
}

// lineError is the error of line number with code, about param.
func lineError(number int, code, param, format string, args ...any) *events.BatchError {
	return &events.BatchError{
		Code:    code,
		Param:   param,
		Line:    number,
		Message: fmt.Sprintf("line %d: ", number) + fmt.Sprintf(format, args...),
	}
}

// envelope holds the raw values of the members of a line Scan reads.
type envelope struct {
	customID, method, url, body []byte
	model, stream               []byte // of body
	twice                       string // the first member given twice
}

func (e *envelope) set(dst *[]byte, name string, value []byte) {
	if *dst != nil && e.twice == "" {
		e.twice = name
	}
	*dst = value
}

// check validates the current line of lr and returns it, or the line's
// first problem. It records the line's custom_id and the batch's
// deployment as it goes, so later lines are checked against them.
func (s *scan) check(lr *lineReader, number int) (Line, *events.BatchError) {
	if lr.tooLong {
		return Line{}, lineError(number, CodeInvalidRequest, "", "the line is longer than the limit of %d bytes", s.lim.MaxLineBytes)
	}
	text := lr.text
	if number == 1 && bytes.HasPrefix(text, []byte(utf8BOM)) {
		// Azure reports these as "a valid model deployment name couldn't
		// be extracted", which sends people looking at body.model.
		return Line{}, lineError(number, CodeInvalidRequest, "", "the file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without a BOM")
	}
	if !utf8.Valid(text) {
		return Line{}, lineError(number, CodeInvalidJSONLine, "", "the line is not valid UTF-8")
	}
	if !json.Valid(text) {
		return Line{}, lineError(number, CodeInvalidJSONLine, "", "the line is not valid JSON, or holds more than one JSON value")
	}
	if text[skipSpace(text, 0)] != '{' {
		return Line{}, lineError(number, CodeInvalidJSONLine, "", "the line is not a JSON object")
	}

	var env envelope
	members(text, func(name, value []byte) {
		switch {
		case nameIs(name, "custom_id"):
			env.set(&env.customID, "custom_id", value)
		case nameIs(name, "method"):
			env.set(&env.method, "method", value)
		case nameIs(name, "url"):
			env.set(&env.url, "url", value)
		case nameIs(name, "body"):
			env.set(&env.body, "body", value)
		}
	})
	if env.twice != "" {
		return Line{}, lineError(number, CodeInvalidJSONLine, env.twice, "%s is given more than once", env.twice)
	}
	customID, idOK := stringValue(env.customID)
	method, methodOK := stringValue(env.method)
	url, urlOK := stringValue(env.url)
	for _, f := range []struct {
		name  string
		value []byte
		ok    bool
	}{{"custom_id", env.customID, idOK}, {"method", env.method, methodOK}, {"url", env.url, urlOK}} {
		if !f.ok && !isNull(f.value) {
			return Line{}, lineError(number, CodeInvalidJSONLine, f.name, "%s must be a string", f.name)
		}
	}
	if isNull(env.body) {
		return Line{}, lineError(number, CodeInvalidRequest, "body", "body is missing")
	}
	if env.body[0] != '{' {
		return Line{}, lineError(number, CodeInvalidRequest, "body", "body must be a JSON object")
	}
	members(env.body, func(name, value []byte) {
		switch {
		case nameIs(name, "model"):
			env.set(&env.model, "body.model", value)
		case nameIs(name, "stream"):
			env.set(&env.stream, "body.stream", value)
		}
	})
	if env.twice != "" {
		return Line{}, lineError(number, CodeInvalidJSONLine, env.twice, "%s is given more than once", env.twice)
	}
	model, modelOK := stringValue(env.model)
	if !modelOK && !isNull(env.model) {
		return Line{}, lineError(number, CodeInvalidJSONLine, "body.model", "body.model must be a string")
	}

	// The line is well-formed: what it names counts for later lines
	// whatever else is wrong with it, so a file's errors can be fixed
	// in one round.
	idLen := utf8.RuneCountInString(customID)
	firstUse := 0
	if idLen > 0 && idLen <= MaxCustomIDLength {
		firstUse = s.useID(customID, number)
	}
	if model != "" && s.deployment == "" {
		s.deployment, s.deploymentLine = model, number
	}

	switch {
	case !idOK:
		return Line{}, lineError(number, CodeInvalidRequest, "custom_id", "custom_id is missing")
	case idLen == 0:
		return Line{}, lineError(number, CodeInvalidRequest, "custom_id", "custom_id is empty")
	case idLen > MaxCustomIDLength:
		return Line{}, lineError(number, CodeInvalidRequest, "custom_id", "custom_id is longer than %d characters", MaxCustomIDLength)
	case firstUse != number:
		return Line{}, lineError(number, CodeDuplicateCustomID, "custom_id", "custom_id is already used by line %d; each request needs its own", firstUse)
	case !methodOK:
		return Line{}, lineError(number, CodeInvalidRequest, "method", "method is missing")
	case method != "POST":
		return Line{}, lineError(number, CodeInvalidRequest, "method", "method must be POST")
	case !urlOK:
		return Line{}, lineError(number, CodeInvalidRequest, "url", "url is missing")
	case !sameOperation(url, s.op):
		return Line{}, lineError(number, CodeURLMismatch, "url", "url does not match the batch's endpoint %s", s.endpoint)
	case bytes.Equal(env.stream, []byte("true")):
		return Line{}, lineError(number, CodeInvalidRequest, "body.stream", "body.stream must not be true; batch requests cannot stream")
	case model == "":
		return Line{}, lineError(number, CodeModelNotFound, "body.model", "body.model is missing; every line must name the batch's deployment")
	case model != s.deployment:
		return Line{}, lineError(number, CodeModelMismatch, "body.model", "body.model names another deployment than line %d; every line of a batch must name the same one", s.deploymentLine)
	}
	return Line{
		Number:    number,
		CustomID:  customID,
		Method:    method,
		URL:       url,
		Operation: s.op,
		Model:     model,
		Body:      env.body,
	}, nil
}

// useID records custom_id id as used by line number and returns the
// line that used it first. Past MaxLines requests the batch fails
// anyway, so new IDs are no longer recorded, which bounds the map.
func (s *scan) useID(id string, number int) int {
	key := [2]uint64{maphash.String(s.seeds[0], id), maphash.String(s.seeds[1], id)}
	if first, ok := s.ids[key]; ok {
		return first
	}
	if s.lines <= s.lim.MaxLines {
		s.ids[key] = number
	}
	return number
}

// isNull reports whether a member's raw value is absent (nil) or null.
func isNull(value []byte) bool {
	return value == nil || bytes.Equal(value, []byte("null"))
}

// sameOperation reports whether a line's url is an endpoint of op.
func sameOperation(url string, op events.Operation) bool {
	got, ok := EndpointOperation(url)
	return ok && got == op
}
