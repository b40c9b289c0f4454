package worker

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/services/inference/builtin"
)

// The built-in backend writes its answers with append-based encoders into
// one buffer per answer: reflection over maps cost more than generating the
// text. The bytes are those encoding/json writes for the same objects (keys
// in sorted order, HTML-safe string escapes), so the wire shapes are
// unchanged.

// head is what every object of an answer repeats after its choices.
type head struct {
	id, model, fingerprint string
	created                int64
}

// appendTail appends the fields after "choices": created, id, model,
// object and system_fingerprint.
func (h *head) appendTail(b []byte, object string) []byte {
	b = append(b, `,"created":`...)
	b = strconv.AppendInt(b, h.created, 10)
	b = append(b, `,"id":`...)
	b = appendString(b, h.id)
	b = append(b, `,"model":`...)
	b = appendString(b, h.model)
	b = append(b, `,"object":`...)
	b = appendString(b, object)
	b = append(b, `,"system_fingerprint":`...)
	return appendString(b, h.fingerprint)
}

func appendUsage(b []byte, u events.Usage) []byte {
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.TotalTokens), 10)
	return append(b, `}}`...)
}

// chatBody is a chat.completion object.
func chatBody(h *head, choices []builtin.Choice, u events.Usage) []byte {
	n := 256
	for _, c := range choices {
		n += 110 + len(c.Text) + len(c.Text)/8
	}
	b := make([]byte, 0, n)
	b = append(b, `{"choices":[`...)
	for i, c := range choices {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"finish_reason":`...)
		b = appendString(b, c.FinishReason)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(c.Index), 10)
		b = append(b, `,"logprobs":null,"message":{"content":`...)
		b = appendString(b, c.Text)
		b = append(b, `,"refusal":null,"role":"assistant"}}`...)
	}
	b = append(b, ']')
	b = h.appendTail(b, "chat.completion")
	return appendUsage(b, u)
}

// completionChoice is a choice of a text_completion object.
type completionChoice struct {
	index  int
	finish string
	// text is prefix (the echoed prompt) followed by the choice's text.
	prefix, text string
}

// completionBody is a text_completion object.
func completionBody(h *head, choices []completionChoice, u events.Usage) []byte {
	n := 256
	for _, c := range choices {
		l := len(c.prefix) + len(c.text)
		n += 80 + l + l/8
	}
	b := make([]byte, 0, n)
	b = append(b, `{"choices":[`...)
	for i, c := range choices {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"finish_reason":`...)
		b = appendString(b, c.finish)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(c.index), 10)
		b = append(b, `,"logprobs":null,"text":`...)
		// The echoed prompt and the text are one string value.
		b = appendConcat(b, c.prefix, c.text)
		b = append(b, '}')
	}
	b = append(b, ']')
	b = h.appendTail(b, "text_completion")
	return appendUsage(b, u)
}

// chunkBody is one chat.completion.chunk (chat) or text_completion chunk.
// finish is "" while the choice goes on (finish_reason null).
func chunkBody(h *head, chat bool, index int, delta string, firstDelta bool, finish string) []byte {
	b := make([]byte, 0, 200+len(h.id)+2*len(h.model)+len(delta)+len(delta)/8)
	b = append(b, `{"choices":[{`...)
	if chat {
		b = append(b, `"delta":{"content":`...)
		b = appendString(b, delta)
		if firstDelta {
			b = append(b, `,"role":"assistant"`...)
		}
		b = append(b, `},`...)
	}
	b = append(b, `"finish_reason":`...)
	if finish == "" {
		b = append(b, `null`...)
	} else {
		b = appendString(b, finish)
	}
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"logprobs":null`...)
	if !chat {
		b = append(b, `,"text":`...)
		b = appendString(b, delta)
	}
	b = append(b, `}]`...)
	object := "text_completion"
	if chat {
		object = "chat.completion.chunk"
	}
	b = h.appendTail(b, object)
	return append(b, '}')
}

// embeddingsBody is a list of embedding objects; each vector as numbers or,
// with b64, as base64 of its little-endian float32s.
func embeddingsBody(model string, vecs [][]float32, b64 bool, u events.Usage) []byte {
	n := 128 + len(model)
	for _, v := range vecs {
		n += 64 + 12*len(v)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"data":[`...)
	var raw []byte
	for i, v := range vecs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"embedding":`...)
		if b64 {
			raw = raw[:0]
			for _, f := range v {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, f := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendFloat32(b, f)
			}
			b = append(b, ']')
		}
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"object":"embedding"}`...)
	}
	b = append(b, `],"model":`...)
	b = appendString(b, model)
	b = append(b, `,"object":"list","usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.TotalTokens), 10)
	return append(b, `}}`...)
}

// appendFloat32 writes f as encoding/json does.
func appendFloat32(b []byte, f float32) []byte {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return append(b, '0') // never produced: embeddings are finite
	}
	abs := math.Abs(float64(f))
	format := byte('f')
	if abs != 0 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, float64(f), format, -1, 32)
	if format == 'e' {
		// e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendConcat writes a+b as one JSON string.
func appendConcat(dst []byte, a, b string) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, a)
	dst = appendEscaped(dst, b)
	return append(dst, '"')
}

// appendString writes s as a JSON string, escaped as encoding/json escapes
// it: quotes, backslashes and control characters; <, > and & (HTML-safe);
// U+2028 and U+2029; invalid UTF-8 as U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

func appendEscaped(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
