package apierr_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/terroir-ai/terroir/pkg/admit"
	"github.com/terroir-ai/terroir/pkg/openai/openaitest"
	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

// FuzzDecodeBytes decodes arbitrary bodies strictly: nothing panics, and
// a refused body is a 400 that names a parameter, in a short message that
// repeats no long string of the body.
func FuzzDecodeBytes(f *testing.F) {
	long := strings.Repeat("prompt text ", 10)
	for _, s := range []string{
		`{"name":"a","tags":{"anything":"goes"},"raw":{"x":1},"properties":{"m":{"name":"b"}}}`,
		`{"name":5}`,
		`{"properties":{"M":{"version":"one"}}}`,
		`{"properties":{"M":{"version":1e400}}}`,
		`{"properties":{"M":{"version":` + strings.Repeat("9", 100) + `}}}`,
		`{"items":[{"name":"a"},{"nam":"b"}]}`,
		`{"items":[{"name":"a"},{"` + long + `":"b"}]}`,
		`{"` + long + `":1}`,
		`{"` + long + `":1} trailing`,
		`{"name":"a"} {}`,
		`{"name":"a","NAME":"b","Name":"c"}`,
		`{"tags":{"` + long + `":7}}`,
		`[1]`, `"` + long + `"`, `null`, `  `, `{"name":`, `{"name" "x"}`,
		"{\"\xff\xfe\":1}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v outer
		err := apierr.DecodeBytes(body, &v)
		_ = admit.UnknownField(body, reflect.TypeFor[outer]())
		if err == nil {
			return
		}
		e, ok := errors.AsType[*apierr.Error](err)
		if !ok {
			t.Fatalf("DecodeBytes returned %T: %v", err, err)
		}
		if e.Status != http.StatusBadRequest || e.Param == "" || e.Message == "" {
			t.Fatalf("got %d %q %q, want a 400 naming a parameter", e.Status, e.Param, e.Message)
		}
		checkNoEcho(t, body, e)
	})
}

// FuzzDecode is the same through an HTTP request with a body limit.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"name":"a"}`), uint16(100))
	f.Add([]byte(`{"name":"`+strings.Repeat("x", 200)+`"}`), uint16(100))
	f.Add([]byte(`{"name":"a"}`), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, limit uint16) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		var v outer
		err := apierr.Decode(rec, req, int64(limit), &v)
		if err == nil {
			if len(body) > int(limit) {
				t.Fatalf("a body of %d bytes passed a limit of %d", len(body), limit)
			}
			return
		}
		e, ok := errors.AsType[*apierr.Error](err)
		if !ok {
			t.Fatalf("Decode returned %T: %v", err, err)
		}
		if e.Status == http.StatusRequestEntityTooLarge {
			if len(body) <= int(limit) {
				t.Fatalf("a body of %d bytes refused as larger than %d", len(body), limit)
			}
			return
		}
		checkNoEcho(t, body, e)
	})
}

// checkNoEcho fails when e is long, not UTF-8, or repeats a string of
// body longer than openaitest.MaxEcho.
func checkNoEcho(t *testing.T, body []byte, e *apierr.Error) {
	t.Helper()
	for _, s := range []string{e.Message, e.Param} {
		if !utf8.ValidString(s) || len(s) > 256 {
			t.Fatalf("error %q / %q: not UTF-8 or too long", e.Param, e.Message)
		}
	}
	if err := openaitest.CheckNoEcho(body, e.Message, e.Param); err != nil {
		t.Fatal(err)
	}
}
