package builtin

import (
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"
)

// Encoding is the name of the tokenizer encoding every count and every
// model token in this package uses: the one of OpenAI's current chat and
// reasoning models (gpt-4o, gpt-4.1, o-series), so token counts match what
// users see elsewhere.
const Encoding = "o200k_base"

// Billing overhead of a chat prompt, as OpenAI bills chat models: every
// message is wrapped as <|start|>{role}<|message|>{content}<|end|>, which
// costs 3 tokens on top of its role and content; a name costs 1 token on
// top of its own tokens; and the reply is primed with
// <|start|>assistant<|message|>, 3 more tokens per request.
const (
	TokensPerMessage   = 3
	TokensPerName      = 1
	TokensReplyPriming = 3
)

// eos is the id of <|endoftext|> in o200k_base. The model uses it for the
// start-of-text context and predicts it at the end of a text; it is never
// decoded into output.
const eos = 199999

// vocabSize bounds every token id (0..199997 are ordinary tokens, 199999 is
// eos); dense per-token tables are this long.
const vocabSize = 200000

// Per-token flags, precomputed once from each token's bytes.
const (
	flagNewline  uint8 = 1 << iota // contains a line break
	flagSpace                      // only white space
	flagSentence                   // ends with '.', '!' or '?' (closing quotes allowed after)
	flagWord                       // a space and a word of at least three letters
)

// vocabulary is the tokenizer and, per token id, its bytes and flags.
// It is immutable once built.
type vocabulary struct {
	codec  tokenizer.Codec
	pieces []string
	flags  []uint8
	period []uint32 // the tokens of "."
	// roles holds the token counts of the chat roles, counted once rather
	// than per request.
	roles map[string]int
}

// vocab returns the shared vocabulary. The tokenizer's tables are read-only
// data (the tokenizer library itself holds them once per process), so they
// are built on first use and shared rather than passed around; no request
// data is ever stored here.
var vocab = sync.OnceValues(func() (*vocabulary, error) {
	codec, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer %s: %w", Encoding, err)
	}
	v := &vocabulary{
		codec:  codec,
		pieces: make([]string, vocabSize),
		flags:  make([]uint8, vocabSize),
	}
	one := make([]uint, 1)
	for id := range vocabSize {
		if id == eos {
			continue
		}
		one[0] = uint(id)
		s, err := codec.Decode(one)
		if err != nil {
			continue // a gap in the id space (199998)
		}
		v.pieces[id] = s
		v.flags[id] = pieceFlags(s)
	}
	v.period = v.encode(".")
	v.roles = map[string]int{}
	for _, r := range []string{RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool, "function"} {
		v.roles[r] = v.count(r)
	}
	return v, nil
})

func pieceFlags(s string) uint8 {
	var f uint8
	if strings.ContainsAny(s, "\r\n") {
		f |= flagNewline
	}
	if strings.TrimSpace(s) == "" {
		f |= flagSpace
	}
	if t := strings.TrimRightFunc(s, closing); t != "" {
		switch t[len(t)-1] {
		case '.', '!', '?':
			f |= flagSentence
		}
	}
	if w, ok := strings.CutPrefix(s, " "); ok && utf8.RuneCountInString(w) >= 3 && strings.IndexFunc(w, func(r rune) bool { return !unicode.IsLetter(r) }) < 0 {
		f |= flagWord
	}
	return f
}

// closing reports runes that may follow the end of a sentence.
func closing(r rune) bool {
	return unicode.IsSpace(r) || strings.ContainsRune("\"')]”’", r)
}

// encode returns the o200k_base token ids of text.
func (v *vocabulary) encode(text string) []uint32 {
	ids, _, err := v.codec.Encode(text)
	if err != nil {
		// Only an invalid-UTF-8 check in strict mode can fail, and the
		// codec runs in its default mode; keep the text countable anyway.
		ids, _, _ = v.codec.Encode(strings.ToValidUTF8(text, "\uFFFD"))
	}
	out := make([]uint32, len(ids))
	for i, id := range ids {
		out[i] = uint32(id)
	}
	return out
}

func (v *vocabulary) count(text string) int {
	n, err := v.codec.Count(text)
	if err != nil {
		n, _ = v.codec.Count(strings.ToValidUTF8(text, "\uFFFD"))
	}
	return n
}

// CountTokens returns the number of o200k_base tokens in text, as OpenAI
// counts them for billing. Special-token text such as "<|endoftext|>" is
// counted as ordinary text, as the API does for user content. It returns 0
// if the tokenizer cannot be loaded, which only a broken build can cause.
func CountTokens(text string) int {
	v, err := vocab()
	if err != nil {
		return 0
	}
	return v.count(text)
}

// CountChatTokens returns the prompt tokens OpenAI bills for a chat request
// with these messages: each message's role, name and content tokens, plus
// TokensPerMessage per message, TokensPerName per message with a name, and
// TokensReplyPriming once for the reply.
func CountChatTokens(messages []Message) int {
	v, err := vocab()
	if err != nil {
		return 0
	}
	n := TokensReplyPriming
	for _, m := range messages {
		role, ok := v.roles[m.Role]
		if !ok {
			role = v.count(m.Role)
		}
		n += TokensPerMessage + role + v.count(m.Content)
		if m.Name != "" {
			n += TokensPerName + CountTokens(m.Name)
		}
	}
	return n
}
