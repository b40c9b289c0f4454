package apierr_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/terroir-ai/terroir/services/ingress/apierr"
)

type inner struct {
	Name    string `json:"name"`
	Version *int   `json:"version"`
}

// embedded's fields are outer's on the wire, as openai.Sampling's are a
// chat request's.
type embedded struct {
	Limit *int `json:"limit"`
}

type outer struct {
	embedded
	Name       string             `json:"name"`
	Properties *struct{ M inner } `json:"properties"`
	Items      []inner            `json:"items"`
	Tags       map[string]string  `json:"tags"`
	Raw        json.RawMessage    `json:"raw"`
}

func TestDecodeNamesTheField(t *testing.T) {
	cases := []struct {
		name, body, param, msg string
		status                 int
	}{
		{"empty", "  ", "body", "empty", 400},
		{"malformed", `{"name":`, "body", "not valid JSON", 400},
		{"syntax", `{"name" "x"}`, "body", "at byte", 400},
		{"trailing", `{"name":"a"} {}`, "body", "exactly one", 400},
		{"not an object", `[1]`, "body", "must be a JSON object", 400},
		{"wrong type", `{"name":5}`, "name", "name must be a string, not number", 400},
		{"embedded wrong type", `{"limit":1e30}`, "limit", "limit must be an integer", 400},
		{"nested wrong type", `{"properties":{"M":{"version":"one"}}}`, "properties.M.version", "integer", 400},
		{"unknown top", `{"name":"a","nmae":"b"}`, "nmae", "unknown field nmae", 400},
		{"unknown nested", `{"properties":{"M":{"name":"a","colour":1}}}`, "properties.M.colour", "unknown field", 400},
		{"unknown in array", `{"items":[{"name":"a"},{"nam":"b"}]}`, "items[1].nam", "unknown field", 400},
		{"too large", `{"name":"` + strings.Repeat("x", 200) + `"}`, "body", "larger than the limit of 100 bytes", 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(c.body))
			var v outer
			err := apierr.Decode(rec, req, 100, &v)
			var e *apierr.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *apierr.Error", err)
			}
			if e.Status != c.status || e.Param != c.param || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("got %d %q %q, want %d %q containing %q", e.Status, e.Param, e.Message, c.status, c.param, c.msg)
			}
		})
	}
	var v outer
	if err := apierr.DecodeBytes([]byte(`{"name":"a","tags":{"anything":"goes"},"raw":{"x":1},"properties":{"m":{"name":"b"}}}`), &v); err != nil {
		t.Fatalf("valid body refused: %v", err)
	}
}

func TestWriteIsOpenAIShaped(t *testing.T) {
	rec := httptest.NewRecorder()
	apierr.Write(rec, apierr.Invalid("location", "unknown geography"))
	var body map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	e := body["error"]
	if rec.Code != 400 || e["param"] != "location" || e["type"] != "invalid_request_error" || e["code"] != "invalid_value" || e["message"] != "unknown geography" {
		t.Fatalf("%d %v", rec.Code, body)
	}
	rec = httptest.NewRecorder()
	apierr.Write(rec, errors.New("secret detail"))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "secret detail") || !strings.Contains(rec.Body.String(), `"param":null`) {
		t.Fatalf("internal error leaked or misshaped: %d %s", rec.Code, rec.Body)
	}
}
