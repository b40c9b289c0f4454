package events_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/events/eventstest"
)

// loadedSchema is one schema file, both as a document and compiled.
type loadedSchema struct {
	doc    map[string]any
	schema *jsonschema.Schema
}

func loadSchema(t *testing.T, typ events.Type) loadedSchema {
	t.Helper()
	doc, sch := eventstest.Load(t, typ)
	return loadedSchema{doc: doc, schema: sch}
}

func validateJSON(sch *jsonschema.Schema, b []byte) error { return eventstest.Validate(sch, b) }

func TestEverySchemaIsWellFormed(t *testing.T) {
	t.Parallel()
	for _, spec := range events.All() {
		t.Run(spec.Type.String(), func(t *testing.T) {
			t.Parallel()
			s := loadSchema(t, spec.Type)
			if got := s.doc["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v, want draft 2020-12", got)
			}
			for _, k := range []string{"title", "description"} {
				if v, _ := s.doc[k].(string); strings.TrimSpace(v) == "" {
					t.Errorf("%s is missing or empty", k)
				}
			}
			if got := s.doc["type"]; got != "object" {
				t.Errorf("type = %v, want object", got)
			}
			if got := s.doc["additionalProperties"]; got != false {
				t.Errorf("additionalProperties = %v, want false", got)
			}
			if got, want := s.doc["x-terroir-protection"], spec.Protection.String(); got != want {
				t.Errorf("x-terroir-protection = %v, registry says %q", got, want)
			}
			req, _ := s.doc["required"].([]any)
			if len(req) == 0 {
				t.Errorf("no required fields")
			}
			props, _ := s.doc["properties"].(map[string]any)
			for _, r := range req {
				if _, ok := props[r.(string)]; !ok {
					t.Errorf("required field %q is not among properties", r)
				}
			}
		})
	}
}

func TestSchemaExamplesValidate(t *testing.T) {
	t.Parallel()
	for _, spec := range events.All() {
		t.Run(spec.Type.String(), func(t *testing.T) {
			t.Parallel()
			s := loadSchema(t, spec.Type)
			examples, _ := s.doc["examples"].([]any)
			if len(examples) == 0 {
				t.Fatal("schema has no examples")
			}
			goType := reflect.TypeOf(samples()[spec.Type][0])
			for i, ex := range examples {
				b, err := json.Marshal(ex)
				if err != nil {
					t.Fatalf("example %d: encoding: %v", i, err)
				}
				if err := validateJSON(s.schema, b); err != nil {
					t.Errorf("example %d does not validate: %v", i, err)
				}
				// The example must also decode into the Go type without
				// unknown fields and survive a round trip.
				v := reflect.New(goType)
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(v.Interface()); err != nil {
					t.Errorf("example %d does not decode into %s: %v", i, goType, err)
					continue
				}
				again, err := json.Marshal(v.Elem().Interface())
				if err != nil {
					t.Fatalf("example %d: re-encoding %s: %v", i, goType, err)
				}
				if err := validateJSON(s.schema, again); err != nil {
					t.Errorf("example %d after a round trip through %s: %v", i, goType, err)
				}
			}
		})
	}
}

func TestNoOrphanSchemas(t *testing.T) {
	t.Parallel()
	schemaDir := eventstest.Dir(t)
	entries, err := os.ReadDir(schemaDir)
	if err != nil {
		t.Fatalf("reading %s: %v", schemaDir, err)
	}
	if len(entries) == 0 {
		t.Fatalf("%s is empty", schemaDir)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			t.Errorf("%s: only <type>.vN.json files belong in %s", e.Name(), schemaDir)
			continue
		}
		typ, err := events.ParseType(name)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if _, ok := events.Lookup(typ); !ok {
			t.Errorf("%s: %s is not a registered event type", e.Name(), typ)
		}
	}
}

func TestGoTypesMatchSchemas(t *testing.T) {
	t.Parallel()
	all := samples()
	registered := map[events.Type]bool{}
	for _, spec := range events.All() {
		registered[spec.Type] = true
	}
	for typ := range all {
		if !registered[typ] {
			t.Errorf("sample table has unregistered type %s", typ)
		}
	}
	for _, spec := range events.All() {
		t.Run(spec.Type.String(), func(t *testing.T) {
			t.Parallel()
			values := all[spec.Type]
			if len(values) == 0 {
				t.Fatalf("no Go sample for %s", spec.Type)
			}
			s := loadSchema(t, spec.Type)
			seen := map[string]bool{}
			for i, v := range values {
				if got := v.EventType(); got != spec.Type {
					t.Errorf("sample %d: %T.EventType() = %s, want %s", i, v, got, spec.Type)
				}
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatalf("sample %d: encoding %T: %v", i, v, err)
				}
				if err := validateJSON(s.schema, b); err != nil {
					t.Errorf("sample %d (%T) does not validate: %v\n%s", i, v, err, b)
				}
				var m map[string]json.RawMessage
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("sample %d: decoding: %v", i, err)
				}
				for k := range m {
					seen[k] = true
				}
			}
			// Validation shows every Go field is in the schema; this shows
			// every schema property has a Go field.
			props, _ := s.doc["properties"].(map[string]any)
			for p := range props {
				if !seen[p] {
					t.Errorf("schema property %q is never written by the Go samples of %T", p, values[0])
				}
			}
		})
	}
}

func TestSchemasRejectInvalidPayloads(t *testing.T) {
	t.Parallel()
	all := samples()

	// Generic cases: every required field must be present and no field
	// outside the schema is allowed.
	for _, spec := range events.All() {
		t.Run(spec.Type.String(), func(t *testing.T) {
			t.Parallel()
			s := loadSchema(t, spec.Type)
			base := all[spec.Type][0]
			req, _ := s.doc["required"].([]any)
			for _, r := range req {
				field := r.(string)
				t.Run("missing "+field, func(t *testing.T) {
					expectInvalid(t, s.schema, base, func(m map[string]any) { delete(m, field) })
				})
			}
			t.Run("unknown field", func(t *testing.T) {
				expectInvalid(t, s.schema, base, func(m map[string]any) { m["prompt_text"] = "hello" })
			})
		})
	}

	// Specific cases: enums, formats, patterns and conditional rules.
	cases := []struct {
		name   string
		base   events.Event
		mutate func(m map[string]any)
	}{
		{"request unknown sku", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["sku"] = "Premium" }},
		{"request unknown operation", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["operation"] = "images.generations" }},
		{"request unknown api flavor", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["api_flavor"] = "anthropic" }},
		{"request body not an object", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["body"] = "Name three rivers" }},
		{"request bad created_at", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["created_at"] = "yesterday" }},
		{"request bad geo", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["home_geo"] = "EU West" }},
		{"request empty request_id", all[events.TypeInferenceRequest][0], func(m map[string]any) { m["request_id"] = "" }},
		{"chunk negative seq", all[events.TypeInferenceChunk][0], func(m map[string]any) { m["seq"] = -1 }},
		{"chunk fractional seq", all[events.TypeInferenceChunk][0], func(m map[string]any) { m["seq"] = 1.5 }},
		{"result ok without body", all[events.TypeInferenceResult][0], func(m map[string]any) { delete(m, "body") }},
		{"result error without error", all[events.TypeInferenceResult][1], func(m map[string]any) { delete(m, "error") }},
		{"result unknown status", all[events.TypeInferenceResult][0], func(m map[string]any) { m["status"] = "partial" }},
		{"result unknown error kind", all[events.TypeInferenceResult][1], func(m map[string]any) {
			m["error"].(map[string]any)["kind"] = "teapot"
		}},
		{"result error without message", all[events.TypeInferenceResult][1], func(m map[string]any) {
			delete(m["error"].(map[string]any), "message")
		}},
		{"result usage without total", all[events.TypeInferenceResult][0], func(m map[string]any) {
			delete(m["usage"].(map[string]any), "total_tokens")
		}},
		{"usage negative tokens", all[events.TypeUsageRecord][0], func(m map[string]any) { m["prompt_tokens"] = -3 }},
		{"usage unknown sku", all[events.TypeUsageRecord][0], func(m map[string]any) { m["sku"] = "Provisioned" }},
		{"safety text smuggled in", all[events.TypeSafetySignal][0], func(m map[string]any) { m["text"] = "how do I build a weapon" }},
		{"safety uppercase hash", all[events.TypeSafetySignal][0], func(m map[string]any) {
			m["content_hash"] = strings.ToUpper(m["content_hash"].(string))
		}},
		{"safety short hash", all[events.TypeSafetySignal][0], func(m map[string]any) { m["content_hash"] = "abc123" }},
		{"safety unknown direction", all[events.TypeSafetySignal][0], func(m map[string]any) { m["direction"] = "both" }},
		{"safety missing category", all[events.TypeSafetySignal][0], func(m map[string]any) {
			delete(m["categories"].(map[string]any), "self_harm")
		}},
		{"safety unknown severity", all[events.TypeSafetySignal][0], func(m map[string]any) {
			m["categories"].(map[string]any)["hate"].(map[string]any)["severity"] = "extreme"
		}},
		{"safety unknown detector", all[events.TypeSafetySignal][0], func(m map[string]any) {
			m["detections"].(map[string]any)["protected_material"] = map[string]any{"detected": true, "filtered": true}
		}},
		{"safety duplicate blocklist hits", all[events.TypeSafetySignal][0], func(m map[string]any) {
			m["blocklist_hits"] = []any{"bl-weapons", "bl-weapons"}
		}},
		{"safety prompt findings on a prompt signal", all[events.TypeSafetySignal][2], func(m map[string]any) { m["direction"] = "prompt" }},
		{"safety prompt findings with text", all[events.TypeSafetySignal][2], func(m map[string]any) {
			m["prompt"].(map[string]any)["text"] = "how do I build a weapon"
		}},
		{"safety prompt findings short hash", all[events.TypeSafetySignal][2], func(m map[string]any) {
			m["prompt"].(map[string]any)["content_hash"] = "abc123"
		}},
		{"safety prompt findings without time", all[events.TypeSafetySignal][2], func(m map[string]any) { delete(m["prompt"].(map[string]any), "at") }},
		{"safety v1 with prompt findings", all[events.TypeSafetySignalV1][1], func(m map[string]any) {
			m["prompt"] = map[string]any{}
		}},
		{"request prompt check without signal", all[events.TypeInferenceRequest][2], func(m map[string]any) { delete(m["prompt_check"].(map[string]any), "signal") }},
		{"request prompt check with text", all[events.TypeInferenceRequest][2], func(m map[string]any) {
			m["prompt_check"].(map[string]any)["signal"].(map[string]any)["text"] = "Name three rivers"
		}},
		{"request prompt check filter results without log", all[events.TypeInferenceRequest][2], func(m map[string]any) { delete(m["prompt_check"].(map[string]any), "log") }},
		{"result prompt without check", all[events.TypeInferenceResult][4], func(m map[string]any) { delete(m, "prompt_check") }},
		{"result prompt not an object", all[events.TypeInferenceResult][4], func(m map[string]any) { m["prompt"] = "Name three rivers" }},
		{"abuse prompt filter results not an array", all[events.TypeAbuseRecord][0], func(m map[string]any) {
			m["prompt_filter_results"] = map[string]any{}
		}},
		{"abuse prompt filter result without index", all[events.TypeAbuseRecord][0], func(m map[string]any) {
			delete(m["prompt_filter_results"].([]any)[0].(map[string]any), "prompt_index")
		}},
		{"abuse prompt not an object", all[events.TypeAbuseRecord][0], func(m map[string]any) { m["prompt"] = "Name three rivers" }},
		{"abuse record with neither prompt nor output", all[events.TypeAbuseRecord][0], func(m map[string]any) {
			delete(m, "prompt")
			delete(m, "output")
		}},
		{"audit first entry with prev hash", all[events.TypeAuditEntry][0], func(m map[string]any) {
			m["prev_hash"] = strings.Repeat("ab", 32)
		}},
		{"audit later entry without prev hash", all[events.TypeAuditEntry][1], func(m map[string]any) { m["prev_hash"] = "" }},
		{"audit seq zero", all[events.TypeAuditEntry][0], func(m map[string]any) { m["seq"] = 0 }},
		{"audit short hash", all[events.TypeAuditEntry][0], func(m map[string]any) { m["hash"] = "deadbeef" }},
		{"audit unknown action", all[events.TypeAuditEntry][0], func(m map[string]any) { m["action"] = "export" }},
		{"audit non-string detail", all[events.TypeAuditEntry][0], func(m map[string]any) {
			m["detail"] = map[string]any{"attempts": 3}
		}},
		{"capacity negative in use", all[events.TypeCapacityReport][0], func(m map[string]any) { m["tokens_per_minute_in_use"] = -1 }},
		{"control deletion with spec", all[events.TypeControlChange][2], func(m map[string]any) {
			m["spec"] = map[string]any{"name": "chat-old"}
		}},
		{"control upsert without spec", all[events.TypeControlChange][0], func(m map[string]any) { delete(m, "spec") }},
		{"control deployment without resource", all[events.TypeControlChange][0], func(m map[string]any) { delete(m, "resource") }},
		{"control api key without resource", all[events.TypeControlChange][1], func(m map[string]any) { delete(m, "resource") }},
		{"control unknown kind", all[events.TypeControlChange][0], func(m map[string]any) { m["kind"] = "secret" }},
		{"control api key in the clear", all[events.TypeControlChange][1], func(m map[string]any) {
			m["spec"].(map[string]any)["hash"] = "0123456789abcdef0123456789abcdef"
		}},
		{"control deployment unknown sku", all[events.TypeControlChange][0], func(m map[string]any) {
			m["spec"].(map[string]any)["sku"] = "Gold"
		}},
		{"control policy without assignment", all[events.TypeControlChange][3], func(m map[string]any) {
			delete(m["spec"].(map[string]any), "assignedTo")
		}},
		{"control filter policy unknown guard failure mode", all[events.TypeControlChange][4], func(m map[string]any) {
			m["spec"].(map[string]any)["prompt"].(map[string]any)["guard"] = map[string]any{"onFailure": "sometimes"}
		}},
		{"datakey other algorithm", all[events.TypeDataKey][0], func(m map[string]any) { m["algorithm"] = "AES-128-GCM" }},
		{"datakey without wrapped key", all[events.TypeDataKey][0], func(m map[string]any) { delete(m, "wrapped") }},
		{"datakey deletion keeps wrapped key", all[events.TypeDataKey][1], func(m map[string]any) {
			m["wrapped"] = "q83vEjRWeJA="
		}},
		{"datakey wrapped not base64", all[events.TypeDataKey][0], func(m map[string]any) { m["wrapped"] = "not base64!" }},
		{"datakey bad kek id", all[events.TypeDataKey][0], func(m map[string]any) { m["kek_id"] = "kek-2" }},
		{"datakey without kek id", all[events.TypeDataKey][0], func(m map[string]any) { delete(m, "kek_id") }},
		{"datakey deletion without kek id", all[events.TypeDataKey][1], func(m map[string]any) { delete(m, "kek_id") }},
		{"resource shredding not a deletion", all[events.TypeDataKey][2], func(m map[string]any) { delete(m, "deleted") }},
		{"file id without its prefix", all[events.TypeFileObject][0], func(m map[string]any) { m["id"] = "181a1cbdcdcf4677ada87f63a0928099" }},
		{"file unknown purpose", all[events.TypeFileObject][0], func(m map[string]any) { m["purpose"] = "vision" }},
		{"file negative size", all[events.TypeFileObject][0], func(m map[string]any) { m["bytes"] = -1 }},
		{"file content smuggled in", all[events.TypeFileObject][0], func(m map[string]any) { m["content"] = "line one" }},
		{"file bad expiry", all[events.TypeFileObject][0], func(m map[string]any) { m["expires_at"] = "next month" }},
		{"resource shredding with a wrapped key", all[events.TypeDataKey][2], func(m map[string]any) { m["wrapped"] = "q83vEjRWeJA=" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := loadSchema(t, tc.base.EventType())
			expectInvalid(t, s.schema, tc.base, tc.mutate)
		})
	}
}

// expectInvalid checks that base validates and that base changed by
// mutate does not.
func expectInvalid(t *testing.T, sch *jsonschema.Schema, base events.Event, mutate func(map[string]any)) {
	t.Helper()
	b, err := json.Marshal(base)
	if err != nil {
		t.Fatalf("encoding %T: %v", base, err)
	}
	if err := validateJSON(sch, b); err != nil {
		t.Fatalf("unchanged %T does not validate: %v", base, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	mutate(m)
	changed, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("re-encoding: %v", err)
	}
	if err := validateJSON(sch, changed); err == nil {
		t.Errorf("schema accepted an invalid payload:\n%s", changed)
	}
}

// samples returns realistic Go payloads for every registered type. The
// first value of each type is the base of the negative cases; further
// values cover fields the first leaves out, so that together they write
// every schema property.
func samples() map[events.Type][]events.Event {
	at := time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)
	expires := at.Add(30 * 24 * time.Hour)
	// hash stands in for the keyed hashes producers compute.
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	check := &events.PromptCheck{
		Signal: events.Findings{
			Categories: events.Categories{Hate: events.CategoryResult{Severity: events.SeveritySafe}, Sexual: events.CategoryResult{Severity: events.SeveritySafe},
				Violence: events.CategoryResult{Severity: events.SeverityLow}, SelfHarm: events.CategoryResult{Severity: events.SeveritySafe}},
			Detections:    events.Detections{Jailbreak: &events.Detection{}, Profanity: &events.Detection{}},
			BlocklistHits: []string{"bl-weapons"},
			ContentHash:   hash("prompt"),
			At:            at,
		},
		Log:           true,
		FilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`),
	}
	m := map[events.Type][]events.Event{
		events.TypeInferenceRequest: {
			events.InferenceRequest{
				RequestID:     "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Resource:      "contoso-eu",
				HomeGeo:       "eu",
				ProcessingGeo: "eu",
				Deployment:    "chat",
				SKU:           events.SKUStandard,
				Model:         "terroir-ngram-small",
				Operation:     events.OperationChatCompletions,
				Stream:        true,
				APIFlavor:     events.APIFlavorAzure,
				Body:          json.RawMessage(`{"messages":[{"role":"user","content":"Name three rivers in France."}],"max_tokens":64,"stream":true}`),
				CreatedAt:     at,
			},
			events.InferenceRequest{
				RequestID:           "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y4",
				Resource:            "contoso-eu",
				HomeGeo:             "eu",
				ProcessingGeo:       "eu",
				Deployment:          "chat",
				SKU:                 events.SKUStandard,
				Model:               "terroir-ngram-small",
				Operation:           events.OperationChatCompletions,
				APIFlavor:           events.APIFlavorOpenAI,
				Body:                json.RawMessage(`{"messages":[{"role":"user","content":"Name three rivers in France."}]}`),
				PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`),
				CreatedAt:           at,
			},
			events.InferenceRequest{
				RequestID:     "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y5",
				Resource:      "contoso-eu",
				HomeGeo:       "eu",
				ProcessingGeo: "eu",
				Deployment:    "chat",
				SKU:           events.SKUStandard,
				Model:         "terroir-ngram-small",
				Operation:     events.OperationChatCompletions,
				Stream:        true,
				APIFlavor:     events.APIFlavorOpenAI,
				Body:          json.RawMessage(`{"messages":[{"role":"user","content":"Name three rivers in France."}],"stream":true}`),
				PromptCheck:   check,
				CreatedAt:     at,
			},
		},
		events.TypeInferenceChunk: {
			events.InferenceChunk{
				RequestID: "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Seq:       0,
				Attempt:   "inference-eu-1-5f2c9a7e",
				Operation: events.OperationChatCompletions,
				Body:      json.RawMessage(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741944413,"model":"terroir-ngram-small","choices":[{"index":0,"delta":{"content":"The Loire"},"finish_reason":null}]}`),
				CreatedAt: at.Add(120 * time.Millisecond),
			},
		},
		events.TypeInferenceResult: {
			events.InferenceResult{
				RequestID: "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Status:    events.StatusOK,
				Attempt:   "inference-eu-1-5f2c9a7e",
				Operation: events.OperationChatCompletions,
				Body:      json.RawMessage(`{"id":"chatcmpl-1","object":"chat.completion","created":1741944413,"model":"terroir-ngram-small","choices":[{"index":0,"message":{"role":"assistant","content":"The Loire, the Seine and the Rhone."},"finish_reason":"stop"}]}`),
				Usage:     &events.Usage{PromptTokens: 24, CompletionTokens: 10, TotalTokens: 34},
				CreatedAt: at.Add(time.Second),
			},
			events.InferenceResult{
				RequestID: "req_01J9Z7A0B1C2D3E4F5G6H7J8K9",
				Status:    events.StatusError,
				Error: &events.ResultError{
					Kind:    events.ErrorInvalidRequest,
					Message: "max_tokens must be a positive integer",
					Code:    "invalid_value",
					Param:   "max_tokens",
				},
				CreatedAt: at,
			},
			events.InferenceResult{
				RequestID: "req_01J9Z7C4D5E6F7G8H9J0K1M2N3",
				Status:    events.StatusFiltered,
				Error: &events.ResultError{
					Kind:    events.ErrorContentFiltered,
					Message: "The response was filtered due to the prompt triggering the content management policy.",
					Code:    "content_filter",
					Param:   "prompt",
				},
				CreatedAt: at,
			},
			events.InferenceResult{
				RequestID:           "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y4",
				Status:              events.StatusOK,
				Body:                json.RawMessage(`{"id":"chatcmpl-2","object":"chat.completion","created":1741944413,"model":"terroir-ngram-small","choices":[{"index":0,"message":{"role":"assistant","content":"The Loire."},"finish_reason":"stop"}]}`),
				PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]`),
				CreatedAt:           at.Add(time.Second),
			},
			events.InferenceResult{
				RequestID:   "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y5",
				Status:      events.StatusOK,
				Body:        json.RawMessage(`{"id":"chatcmpl-3","object":"chat.completion","created":1741944413,"model":"terroir-ngram-small","choices":[{"index":0,"message":{"role":"assistant","content":"The Loire."},"finish_reason":"stop"}]}`),
				PromptCheck: check,
				Prompt:      json.RawMessage(`{"messages":[{"role":"user","content":"Name three rivers in France."}],"stream":true}`),
				CreatedAt:   at.Add(time.Second),
			},
		},
		events.TypeUsageRecord: {
			events.UsageRecord{
				RequestID:        "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Resource:         "contoso-us",
				Deployment:       "embed",
				SKU:              events.SKUGlobalStandard,
				Model:            "terroir-hash-embed",
				ProcessingGeo:    "eu",
				HomeGeo:          "us",
				PromptTokens:     512,
				CompletionTokens: 0,
				TotalTokens:      512,
				RecordedAt:       at,
			},
		},
		events.TypeSafetySignal: {
			events.SafetySignal{
				RequestID:  "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Resource:   "contoso-eu",
				Deployment: "chat",
				HomeGeo:    "eu",
				Direction:  events.DirectionPrompt,
				Categories: events.Categories{
					Hate:     events.CategoryResult{Severity: events.SeveritySafe},
					Sexual:   events.CategoryResult{Severity: events.SeverityLow},
					Violence: events.CategoryResult{Severity: events.SeverityHigh, Filtered: true},
					SelfHarm: events.CategoryResult{Severity: events.SeverityMedium},
				},
				Detections: events.Detections{
					Jailbreak: &events.Detection{Detected: true, Filtered: true},
					Profanity: &events.Detection{},
				},
				BlocklistHits: []string{"bl-weapons"},
				ContentHash:   hash("prompt"),
				Filtered:      true,
				At:            at,
			},
			events.SafetySignal{
				RequestID:   "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Resource:    "contoso-eu",
				Deployment:  "chat",
				HomeGeo:     "eu",
				Direction:   events.DirectionCompletion,
				Categories:  events.Categories{Hate: events.CategoryResult{Severity: events.SeveritySafe}, Sexual: events.CategoryResult{Severity: events.SeveritySafe}, Violence: events.CategoryResult{Severity: events.SeveritySafe}, SelfHarm: events.CategoryResult{Severity: events.SeveritySafe}},
				ContentHash: hash("completion"),
				At:          at,
			},
			events.SafetySignal{
				RequestID:   "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y5",
				Resource:    "contoso-eu",
				Deployment:  "chat",
				HomeGeo:     "eu",
				Direction:   events.DirectionCompletion,
				Categories:  events.Categories{Hate: events.CategoryResult{Severity: events.SeveritySafe}, Sexual: events.CategoryResult{Severity: events.SeveritySafe}, Violence: events.CategoryResult{Severity: events.SeverityHigh, Filtered: true}, SelfHarm: events.CategoryResult{Severity: events.SeveritySafe}},
				ContentHash: hash("completion"),
				Filtered:    true,
				At:          at.Add(time.Second),
				Prompt:      &check.Signal,
			},
		},
		events.TypeAbuseRecord: {
			events.AbuseRecord{
				RequestID:            "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Resource:             "contoso-eu",
				HomeGeo:              "eu",
				ProcessingGeo:        "eu",
				Deployment:           "chat",
				Operation:            events.OperationChatCompletions,
				Prompt:               json.RawMessage(`{"messages":[{"role":"user","content":"Name three rivers in France."}]}`),
				Output:               json.RawMessage(`{"choices":[{"index":0,"message":{"role":"assistant","content":"The Loire, the Seine and the Rhone."},"finish_reason":"stop"}]}`),
				PromptFilterResults:  json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false}}}]`),
				ContentFilterResults: json.RawMessage(`{"hate":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}`),
				CreatedAt:            at,
			},
			events.AbuseRecord{
				RequestID:           "req_01J9Z7C4D5E6F7G8H9J0K1M2N3",
				Resource:            "contoso-eu",
				HomeGeo:             "eu",
				ProcessingGeo:       "eu",
				Deployment:          "legacy",
				Operation:           events.OperationCompletions,
				Prompt:              json.RawMessage(`{"prompt":["Write a story about a heist."]}`),
				PromptFilterResults: json.RawMessage(`[{"prompt_index":0,"content_filter_results":{"violence":{"filtered":true,"severity":"medium"}}}]`),
				CreatedAt:           at,
			},
		},
		events.TypeAuditEntry: {
			events.AuditEntry{
				Geo:      "eu",
				Seq:      1,
				PrevHash: "",
				Hash:     hash("audit-1"),
				Actor:    "CN=ana.reviewer,O=Terroir Trust and Safety,C=IE",
				Action:   events.AuditAccessRequested,
				Subject:  "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				Detail:   map[string]string{"case_id": "case_01J9ZB0C3D"},
				At:       at,
			},
			events.AuditEntry{
				Geo:      "eu",
				Seq:      2,
				PrevHash: hash("audit-1"),
				Hash:     hash("audit-2"),
				Actor:    "CN=jonas.manager,O=Terroir Trust and Safety,C=DE",
				Action:   events.AuditAccessApproved,
				Subject:  "req_01J9Z6R3X8Q2M4N7P5T1V0W2Y3",
				At:       at.Add(19 * time.Second),
			},
		},
		events.TypeCapacityReport: {
			events.CapacityReport{
				Geo:                     "us",
				Instance:                "inference-7f9c4-1",
				Model:                   "terroir-ngram-small",
				TokensPerMinuteCapacity: 120_000,
				TokensPerMinuteInUse:    31_450,
				At:                      at,
			},
		},
		events.TypeControlChange: {
			events.ControlChange{
				Kind:     events.ControlDeployment,
				ID:       "chat",
				Resource: "contoso-eu",
				Actor:    "mgmt:operator@contoso.example",
				At:       at,
				Spec: json.RawMessage(`{"name":"chat","resource":"contoso-eu","model":"terroir-ngram","modelVersion":"1",` +
					`"sku":"Standard","capacity":10,"filterPolicy":"default","createdAt":"2025-03-14T08:00:00Z"}`),
			},
			events.ControlChange{
				Kind:     events.ControlAPIKey,
				ID:       "key1",
				Resource: "contoso-eu",
				Actor:    "mgmt:operator@contoso.example",
				At:       at,
				Spec:     json.RawMessage(`{"name":"key1","hash":"sha256:` + hash("key1") + `","createdAt":"2025-03-14T08:00:05Z"}`),
			},
			events.ControlChange{
				Kind:     events.ControlDeployment,
				ID:       "chat-old",
				Resource: "contoso-eu",
				Actor:    "mgmt:operator@contoso.example",
				At:       at,
				Deleted:  true,
			},
			events.ControlChange{
				Kind:  events.ControlDeploymentPolicy,
				ID:    "default",
				Actor: "mgmt:platform-admin",
				At:    at,
				Spec:  json.RawMessage(`{"name":"default","assignedTo":["*"],"allowedModels":["terroir-ngram"],"curatedOnly":true}`),
			},
			events.ControlChange{
				Kind:     events.ControlFilterPolicy,
				ID:       "strict",
				Resource: "contoso-eu",
				Actor:    "mgmt:operator@contoso.example",
				At:       at,
				Spec: json.RawMessage(`{"name":"strict","resource":"contoso-eu",` +
					`"prompt":{"thresholds":{"hate":"low","sexual":"medium","violence":"medium","self_harm":"low"},"jailbreak":true,"profanity":false,"guard":{"onFailure":"closed"}},` +
					`"completion":{"thresholds":{"hate":"medium","sexual":"medium","violence":"medium","self_harm":"medium"},"jailbreak":false,"profanity":true,"guard":{"off":true}}}`),
			},
		},
		events.TypeDataKey: {
			events.DataKey{
				Geo:       "eu",
				Resource:  "contoso-eu",
				KeyID:     "dk_contoso-eu_01J9Z0K8M2",
				Wrapped:   bytes.Repeat([]byte{0xa5, 0x3c, 0x7e}, 20),
				KEKID:     "eu/kek/v2",
				Algorithm: events.DataKeyAlgorithm,
				CreatedAt: at,
			},
			events.DataKey{
				Geo:       "eu",
				Resource:  "contoso-eu",
				KeyID:     "dk_contoso-eu_01J9Z0K8M2",
				KEKID:     "eu/kek/v2",
				Algorithm: events.DataKeyAlgorithm,
				CreatedAt: at.Add(24 * time.Hour),
				Deleted:   true,
			},
			events.DataKey{
				Geo:              "eu",
				Resource:         "contoso-eu",
				KeyID:            "eu/contoso-eu",
				Algorithm:        events.DataKeyAlgorithm,
				CreatedAt:        at.Add(24 * time.Hour),
				Deleted:          true,
				ResourceShredded: true,
			},
		},
		events.TypeFileObject: {
			events.FileObject{
				ID:        "file-181a1cbdcdcf4677ada87f63a0928099",
				Resource:  "contoso-eu",
				HomeGeo:   "eu",
				Purpose:   events.FilePurposeBatch,
				Filename:  "requests.jsonl",
				Bytes:     1024,
				Status:    events.FileStatusProcessed,
				CreatedAt: at,
				ExpiresAt: &expires,
			},
			events.FileObject{
				ID:            "file-0123456789abcdef0123456789abcdef",
				Resource:      "contoso-eu",
				HomeGeo:       "eu",
				Purpose:       events.FilePurposeBatchOutput,
				Filename:      "batch_output.jsonl",
				Status:        events.FileStatusError,
				StatusDetails: "the output could not be written",
				CreatedAt:     at,
			},
		},
		events.TypeBatchObject: {
			events.BatchObject{
				ID: "batch_72a2792ef7d24ba7b82c7fe4a37e379f", Resource: "contoso-eu", HomeGeo: "eu",
				Endpoint: "/chat/completions", Operation: events.OperationChatCompletions, APIFlavor: events.APIFlavorAzure,
				Source: events.BatchSourceAPI, InputFileID: "file-181a1cbdcdcf4677ada87f63a0928099", CompletionWindow: "24h",
				Status: events.BatchValidating, Metadata: map[string]string{"batch_description": "Evaluation job"},
				CreatedAt: at, ExpiresAt: at.Add(24 * time.Hour),
			},
			events.BatchObject{
				ID: "batch_0123456789abcdef0123456789abcdef", Resource: "contoso-eu", HomeGeo: "eu",
				Endpoint: "/v1/chat/completions", Operation: events.OperationChatCompletions, APIFlavor: events.APIFlavorOpenAI,
				Source: events.BatchSourceDrop, DropName: "chat.questions", InputFileID: "file-181a1cbdcdcf4677ada87f63a0928099",
				CompletionWindow: "24h", Deployment: "chat", Status: events.BatchFailed,
				Errors:       []events.BatchError{{Code: "invalid_json_line", Message: "line 2 is not a JSON object", Param: "body", Line: 2}},
				OutputFileID: "file-0123456789abcdef0123456789abcdef", ErrorFileID: "file-00000000000000000000000000000001",
				RequestCounts:      events.BatchCounts{Total: 3, Completed: 2, Failed: 1},
				Usage:              &events.BatchUsage{InputTokens: 30, OutputTokens: 64, TotalTokens: 94},
				OutputExpiresAfter: 86400, EnqueuedTokens: 30,
				CreatedAt: at, ExpiresAt: at.Add(24 * time.Hour),
				InProgressAt: &at, FinalizingAt: &at, CompletedAt: &at, FailedAt: &at, ExpiredAt: &at, CancellingAt: &at, CancelledAt: &at,
				Version: 7,
			},
		},
		events.TypeBatchCommand: {
			events.BatchCommand{Action: events.BatchActionCancel, Resource: "contoso-eu", HomeGeo: "eu", BatchID: "batch_72a2792ef7d24ba7b82c7fe4a37e379f", At: at},
			events.BatchCommand{Action: events.BatchActionCreate, Resource: "contoso-eu", HomeGeo: "eu", BatchID: "batch_72a2792ef7d24ba7b82c7fe4a37e379f", At: at,
				Batch: &events.BatchObject{ID: "batch_72a2792ef7d24ba7b82c7fe4a37e379f", Resource: "contoso-eu", HomeGeo: "eu", Endpoint: "/v1/embeddings",
					Operation: events.OperationEmbeddings, APIFlavor: events.APIFlavorOpenAI, Source: events.BatchSourceAPI,
					InputFileID: "file-181a1cbdcdcf4677ada87f63a0928099", CompletionWindow: "24h", Status: events.BatchValidating, CreatedAt: at, ExpiresAt: at}},
		},
	}
	// The earlier versions still registered: the current samples without
	// the fields their next version added.
	for _, v := range []struct {
		old, cur events.Type
		as       func() events.Event
	}{
		{events.TypeInferenceRequestV1, events.TypeInferenceRequest, func() events.Event { return &events.InferenceRequestV1{} }},
		{events.TypeInferenceResultV1, events.TypeInferenceResult, func() events.Event { return &events.InferenceResultV1{} }},
		{events.TypeSafetySignalV1, events.TypeSafetySignal, func() events.Event { return &events.SafetySignalV1{} }},
	} {
		for _, e := range m[v.cur] {
			b, _ := json.Marshal(e)
			old := v.as()
			_ = json.Unmarshal(b, old) // drops the newer fields
			m[v.old] = append(m[v.old], reflect.ValueOf(old).Elem().Interface().(events.Event))
		}
	}
	return m
}

// TestSampleTypesAreDistinct guards the sample table: each registered type
// has exactly one Go type, so a payload cannot be published as two types.
func TestSampleTypesAreDistinct(t *testing.T) {
	t.Parallel()
	owner := map[reflect.Type]events.Type{}
	for typ, values := range samples() {
		for _, v := range values {
			rt := reflect.TypeOf(v)
			if prev, ok := owner[rt]; ok && prev != typ {
				t.Errorf("%s is used for both %s and %s", rt, prev, typ)
			}
			owner[rt] = typ
		}
	}
	names := make([]string, 0, len(owner))
	for rt := range owner {
		names = append(names, rt.String())
	}
	slices.Sort(names)
	if len(names) != len(events.All()) {
		t.Errorf("Go payload types %v, want one per registered type (%d)", names, len(events.All()))
	}
}
