// Package openaitest holds checks that tests of request handling share:
// above all, that an error about a request never repeats its text.
package openaitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/openai"
)

// MaxEcho is the longest value of a request an error message may quote:
// a parameter name or a short enumerated value, never a prompt.
const MaxEcho = openai.MaxQuoted

// BodyStrings returns the body and every key and string value of the JSON
// values it starts with (a body that is not JSON yields just itself).
func BodyStrings(body []byte) []string {
	out := []string{string(body)}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				out = append(out, k)
				walk(e)
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		var v any
		if dec.Decode(&v) != nil {
			return out
		}
		walk(v)
	}
}

// CheckNoEcho returns an error when one of msgs repeats a string of body
// longer than MaxEcho, as it is or JSON-escaped.
func CheckNoEcho(body []byte, msgs ...string) error {
	for _, s := range BodyStrings(body) {
		if len(s) <= MaxEcho {
			continue
		}
		q := strings.Trim(strconv.Quote(s), `"`)
		for _, m := range msgs {
			if strings.Contains(m, s) || strings.Contains(m, q) {
				return fmt.Errorf("error %q repeats text of the request", m)
			}
		}
	}
	return nil
}
