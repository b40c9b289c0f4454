package admit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/openai"
)

// Decode decodes raw strictly into v: an empty body, malformed JSON,
// trailing data, wrong types and unknown fields are 400 refusals whose
// param names the field as the caller sent it ("messages[0].role"), in
// messages that never repeat a long string of the body.
func Decode(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return Invalid("body", "the request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		return Invalid("body", "the request body must hold exactly one JSON object")
	}
	if err == nil {
		return nil
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return Invalid("body", "the request body is not valid JSON (at byte %d)", se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return Invalid("body", "the request body is not valid JSON (it ends early)")
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		param := wirePath(reflect.TypeOf(v), te.Field)
		value := te.Value // "number 1.5": the kind and, for a number, its text
		if len(value) > openai.MaxQuoted {
			value, _, _ = strings.Cut(value, " ")
		}
		if param == "" {
			return Invalid("body", "the request body must be %s, not %s", strings.Replace(jsonKind(te.Type), "an ", "a JSON ", 1), value)
		}
		return Invalid(param, "%s must be %s, not %s", param, jsonKind(te.Type), value)
	}
	if key, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if p := UnknownField(raw, reflect.TypeOf(v)); p != "" {
			return Invalid(p, "unknown field %s", p)
		}
		if k, err := strconv.Unquote(key); err == nil && len(k) <= openai.MaxQuoted {
			return Invalid("body", "unknown field %s", k)
		}
		return Invalid("body", "the request body holds a field that is not a parameter of this request")
	}
	return Invalid("body", "the request body could not be read as JSON")
}

// wirePath turns encoding/json's path to a field, which names embedded
// structs by their Go names ("Sampling.max_tokens"), into the path the
// caller sent ("max_tokens").
func wirePath(t reflect.Type, path string) string {
	var out []string
	for seg := range strings.SplitSeq(path, ".") {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map) {
			t = t.Elem()
		}
		if t != nil && t.Kind() == reflect.Struct {
			if f, ok := t.FieldByName(seg); ok && f.Anonymous && f.Tag.Get("json") == "" {
				t = f.Type
				continue
			}
			t, _ = fieldByJSONName(t, seg)
		} else {
			t = nil
		}
		out = append(out, seg)
	}
	return strings.Join(out, ".")
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.Kind().String()
}

// UnknownField returns the dotted path of the first field of raw (in key
// order) that t does not have, or "" when there is none. A path through a
// key longer than openai.MaxQuoted is never returned.
func UnknownField(raw []byte, t reflect.Type) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	return unknownIn(v, t, "")
}

func unknownIn(v any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			var ft reflect.Type
			if len(k) > openai.MaxQuoted {
				continue
			}
			switch t.Kind() {
			case reflect.Map:
				ft = t.Elem()
			case reflect.Struct:
				f, ok := fieldByJSONName(t, k)
				if !ok {
					return join(path, k)
				}
				ft = f
			default:
				return ""
			}
			if p := unknownIn(x[k], ft, join(path, k)); p != "" {
				return p
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, e := range x {
				if p := unknownIn(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); p != "" {
					return p
				}
			}
		}
	}
	return ""
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// fieldByJSONName finds the field encoding/json would decode key into:
// exact tag or name match first, then case-insensitive.
func fieldByJSONName(t reflect.Type, key string) (reflect.Type, bool) {
	var fold reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if et, ok := fieldByJSONName(ft, key); ok {
					return et, true
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f.Type, true
		}
		if fold == nil && strings.EqualFold(name, key) {
			fold = f.Type
		}
	}
	return fold, fold != nil
}
