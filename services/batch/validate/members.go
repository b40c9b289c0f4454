package validate

import (
	"bytes"
	"encoding/json"
)

// Scan walks the members of each line's object itself instead of
// decoding it with encoding/json, for three reasons: member names must
// match exactly (encoding/json would take "Custom_ID" for custom_id), a
// member given twice must be caught (encoding/json keeps the last, other
// parsers the first, and the two could then disagree about which
// deployment a line names), and Body must be the bytes of the file,
// without copying every body once more only to read its model.

// members calls fn with the name (still quoted and escaped) and the
// value of each member of the JSON object data, in order. data must be
// valid JSON (json.Valid) whose first non-space byte is '{'; members
// does not check it again.
func members(data []byte, fn func(name, value []byte)) {
	i := skipSpace(data, 0) + 1 // past '{'
	for {
		i = skipSpace(data, i)
		switch data[i] {
		case '}':
			return
		case ',':
			i = skipSpace(data, i+1)
		}
		nameEnd := skipString(data, i)
		name := data[i:nameEnd]
		i = skipSpace(data, nameEnd) + 1 // past ':'
		i = skipSpace(data, i)
		end := skipValue(data, i)
		fn(name, data[i:end])
		i = end
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at data[i].
func skipString(data []byte, i int) int {
	for i++; ; i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the value starting at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // a number, true, false or null
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// stringValue returns the text of the JSON string s (quoted, valid);
// ok is false if s is not a string.
func stringValue(s []byte) (v string, ok bool) {
	if len(s) < 2 || s[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s[1 : len(s)-1]), true
	}
	if err := json.Unmarshal(s, &v); err != nil {
		return "", false
	}
	return v, true
}

// nameIs reports whether the quoted member name equals want, which has
// no characters that need escaping.
func nameIs(name []byte, want string) bool {
	if bytes.IndexByte(name, '\\') < 0 {
		return len(name) == len(want)+2 && string(name[1:len(name)-1]) == want
	}
	v, _ := stringValue(name)
	return v == want
}
