package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// TextField is one piece of text a request or a response carries, found
// at Param (the parameter path, as error messages name it, such as
// "messages[2].tool_calls[0].function.arguments"). Content safety
// classifies every TextField of a body; nothing that carries text reaches
// a model or an app without being one.
type TextField struct {
	Param string
	Text  string
}

// textSink collects text fields, skipping empty ones.
type textSink []TextField

func (s *textSink) add(param, text string) {
	if text != "" {
		*s = append(*s, TextField{Param: param, Text: text})
	}
}

// Join returns the texts of fields joined by newlines, in order: the
// text one prompt_filter_results entry (or one choice) covers. A newline
// does not end a sentence, so a phrase split across two fields is still
// read as one.
func Join(fields []TextField) string {
	switch len(fields) {
	case 0:
		return ""
	case 1:
		return fields[0].Text
	}
	n := len(fields) - 1
	for _, f := range fields {
		n += len(f.Text)
	}
	b := make([]byte, 0, n)
	for i, f := range fields {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, f.Text...)
	}
	return string(b)
}

// ContentPart is one part of a message's content array.
type ContentPart struct {
	Type string `json:"type"`
	// Text is the text of a "text" part.
	Text *string `json:"text,omitempty"`
	// Refusal is the text of an assistant's "refusal" part.
	Refusal    *string         `json:"refusal,omitempty"`
	ImageURL   json.RawMessage `json:"image_url,omitempty"`
	InputAudio json.RawMessage `json:"input_audio,omitempty"`
	File       *FilePart       `json:"file,omitempty"`
}

// FilePart is the file of a "file" content part.
type FilePart struct {
	FileID   string `json:"file_id,omitempty"`
	FileData string `json:"file_data,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// ToolCall is a call of a tool, in an assistant message (request or
// response) or, in pieces, in a stream's deltas.
type ToolCall struct {
	// Index orders the pieces of a streamed call; absent elsewhere.
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is a function's name and its arguments, a JSON text
// written by the model.
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// Tool is one entry of a request's tools.
type Tool struct {
	Type     string       `json:"type"`
	Function *FunctionDef `json:"function,omitempty"`
	// Custom is a custom tool's definition (name, description, format).
	Custom json.RawMessage `json:"custom,omitempty"`
}

// FunctionDef defines a function a model may call.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// contentParts reads a message's content: a string (one text part), an
// array of parts, or nothing.
func contentParts(raw json.RawMessage) (text *string, parts []ContentPart, err error) {
	c := bytes.TrimSpace(raw)
	if len(c) == 0 || bytes.Equal(c, []byte("null")) {
		return nil, nil, nil
	}
	if c[0] == '"' {
		var s string
		if err := json.Unmarshal(c, &s); err != nil {
			return nil, nil, fmt.Errorf("content must be a string or an array of content parts")
		}
		return &s, nil, nil
	}
	if err := json.Unmarshal(c, &parts); err != nil || c[0] != '[' {
		return nil, nil, fmt.Errorf("content must be a string or an array of content parts")
	}
	return nil, parts, nil
}

// partTexts adds the texts of content parts. A part of a type the filter
// cannot read is an error naming it: text that cannot be checked is not
// passed on.
func partTexts(s *textSink, param string, parts []ContentPart) error {
	for j, p := range parts {
		pp := fmt.Sprintf("%s[%d]", param, j)
		switch p.Type {
		case "text":
			if p.Text == nil {
				return invalid(pp+".text", "%s.text is required for a text part", pp)
			}
			s.add(pp+".text", *p.Text)
		case "refusal":
			if p.Refusal == nil {
				return invalid(pp+".refusal", "%s.refusal is required for a refusal part", pp)
			}
			s.add(pp+".refusal", *p.Refusal)
		case "image_url", "input_audio":
			// media carry no text the filter reads
		case "file":
			if p.File != nil {
				s.add(pp+".file.filename", p.File.Filename)
			}
		default:
			return invalid(pp+".type", "%s.type is not a content-part type content safety can check; use text, image_url, input_audio or file", pp)
		}
	}
	return nil
}

// TextFields returns every text of the message, in order: content
// (string or parts), name, refusal, tool calls (function names and the
// strings in their arguments), the legacy function_call.
func (m ChatMessage) TextFields(param string) ([]TextField, error) {
	var s textSink
	return s, m.texts(&s, param)
}

func (m ChatMessage) texts(s *textSink, param string) error {
	text, parts, err := contentParts(m.Content)
	if err != nil {
		return invalid(param+".content", "%s.%s", param, err.Error())
	}
	if text != nil {
		s.add(param+".content", *text)
	}
	if err := partTexts(s, param+".content", parts); err != nil {
		return err
	}
	s.add(param+".name", m.Name)
	if m.Refusal != nil {
		s.add(param+".refusal", *m.Refusal)
	}
	for k, tc := range m.ToolCalls {
		callTexts(s, fmt.Sprintf("%s.tool_calls[%d].function", param, k), tc.Function)
	}
	if m.FunctionCall != nil {
		callTexts(s, param+".function_call", *m.FunctionCall)
	}
	return nil
}

func callTexts(s *textSink, param string, f FunctionCall) {
	s.add(param+".name", f.Name)
	s.add(param+".arguments", ArgumentsText(f.Arguments))
}

// TextFields returns every text of the request the model reads: each
// message's texts, the tools' and legacy functions' names, descriptions
// and every string of their parameter schemas, the schema of
// response_format, the predicted output and the named tool_choice. An
// error names a part the filter cannot read.
func (r *ChatRequest) TextFields() ([]TextField, error) {
	var s textSink
	for i, m := range r.Messages {
		if err := m.texts(&s, fmt.Sprintf("messages[%d]", i)); err != nil {
			return nil, err
		}
	}
	for i, t := range r.Tools {
		p := fmt.Sprintf("tools[%d]", i)
		if t.Function != nil {
			defTexts(&s, p+".function", *t.Function)
		}
		if len(t.Custom) > 0 {
			s.add(p+".custom", JSONText(t.Custom))
		}
	}
	for i, f := range r.Functions {
		defTexts(&s, fmt.Sprintf("functions[%d]", i), f)
	}
	for _, raw := range []struct {
		param string
		v     json.RawMessage
	}{{"response_format", r.ResponseFormat}, {"prediction", r.Prediction}, {"tool_choice", r.ToolChoice}, {"function_call", r.FunctionCall}} {
		if len(raw.v) > 0 {
			s.add(raw.param, JSONText(raw.v))
		}
	}
	return s, nil
}

func defTexts(s *textSink, param string, f FunctionDef) {
	s.add(param+".name", f.Name)
	s.add(param+".description", f.Description)
	if len(f.Parameters) > 0 {
		s.add(param+".parameters", JSONText(f.Parameters))
	}
}

// TextFields returns the prompts (as prompt_filter_results index them)
// and the suffix.
func (r *CompletionRequest) TextFields() ([]TextField, error) {
	prompts, err := r.Prompts()
	if err != nil {
		return nil, err
	}
	var s textSink
	for i, p := range prompts {
		s.add(fmt.Sprintf("prompt[%d]", i), p)
	}
	if r.Suffix != nil {
		s.add("suffix", *r.Suffix)
	}
	return s, nil
}

// JSONText returns the text of every string (keys and values) in a JSON
// value, separated by newlines; a value that is not JSON is returned as
// it is, so nothing escapes the filter by being malformed.
func JSONText(raw json.RawMessage) string {
	if !json.Valid(raw) {
		return string(raw)
	}
	var b []byte
	d := json.NewDecoder(bytes.NewReader(raw))
	for {
		t, err := d.Token()
		if err == io.EOF || err != nil {
			break
		}
		if s, ok := t.(string); ok && s != "" {
			if len(b) > 0 {
				b = append(b, '\n')
			}
			b = append(b, s...)
		}
	}
	return string(b)
}

// ArgumentsText returns the text of a tool call's arguments as the model
// meant it: JSON string escapes decoded ("\u006bill" is "kill"), keys and
// values separated; text outside strings is kept, so arguments that are
// not JSON are read as they are.
func ArgumentsText(args string) string {
	var d ArgumentsDecoder
	return string(d.Write(nil, args))
}

// ArgumentsDecoder decodes the text of tool-call arguments that arrive in
// pieces (a stream's deltas), as ArgumentsText does for whole arguments:
// feed the pieces in order to Write. The zero value is ready to use.
type ArgumentsDecoder struct {
	inString bool
	escape   bool
	hex      []byte // digits of a \u escape being read
	high     rune   // a high surrogate waiting for its low half
}

// Write appends the decoded text of piece to dst and returns it.
func (d *ArgumentsDecoder) Write(dst []byte, piece string) []byte {
	for i := 0; i < len(piece); i++ {
		c := piece[i]
		switch {
		case !d.inString:
			switch c {
			case '"':
				d.inString = true
				dst = append(dst, ' ')
			case '{', '}', '[', ']', ':', ',':
				dst = append(dst, ' ')
			default:
				dst = append(dst, c)
			}
		case d.hex != nil:
			d.hex = append(d.hex, c)
			if len(d.hex) < 4 {
				continue
			}
			v, err := strconv.ParseUint(string(d.hex), 16, 32)
			d.hex = nil
			if err != nil {
				d.high = 0
				continue
			}
			dst = d.rune(dst, rune(v))
		case d.escape:
			d.escape = false
			switch c {
			case 'u':
				d.hex = make([]byte, 0, 4)
			case 'n':
				dst = d.rune(dst, '\n')
			case 't', 'r', 'b', 'f':
				dst = d.rune(dst, ' ')
			default: // " \ / and anything a lenient writer escaped
				dst = d.rune(dst, rune(c))
			}
		case c == '\\':
			d.escape = true
		case c == '"':
			d.inString = false
			d.high = 0
			dst = append(dst, ' ')
		default:
			d.high = 0
			dst = append(dst, c)
		}
	}
	return dst
}

// rune appends a decoded escape, pairing UTF-16 surrogates.
func (d *ArgumentsDecoder) rune(dst []byte, r rune) []byte {
	if utf16.IsSurrogate(r) {
		if d.high != 0 && r >= 0xDC00 {
			r = utf16.DecodeRune(d.high, r)
			d.high = 0
			return utf8.AppendRune(dst, r)
		}
		if r < 0xDC00 {
			d.high = r
		}
		return dst
	}
	d.high = 0
	return utf8.AppendRune(dst, r)
}
