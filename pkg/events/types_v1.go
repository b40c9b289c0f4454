package events

import (
	"encoding/json"
	"time"
)

// The payload types of earlier versions that are still registered. They
// are the frozen Go form of their schemas, for the schema tests and for
// tools that must write an old version; services read old payloads into
// the current types, whose versions only added optional fields.

// InferenceRequestV1 is inference.request.v1: InferenceRequest without
// PromptCheck.
type InferenceRequestV1 struct {
	RequestID           string          `json:"request_id"`
	Resource            string          `json:"resource"`
	HomeGeo             string          `json:"home_geo"`
	ProcessingGeo       string          `json:"processing_geo"`
	Deployment          string          `json:"deployment"`
	SKU                 SKU             `json:"sku"`
	Model               string          `json:"model"`
	Operation           Operation       `json:"operation"`
	Stream              bool            `json:"stream"`
	APIFlavor           APIFlavor       `json:"api_flavor"`
	Body                json.RawMessage `json:"body"`
	PromptFilterResults json.RawMessage `json:"prompt_filter_results,omitempty"`
	CreatedAt           time.Time       `json:"created_at"`
}

// EventType returns TypeInferenceRequestV1.
func (InferenceRequestV1) EventType() Type { return TypeInferenceRequestV1 }

// InferenceResultV1 is inference.result.v1: InferenceResult without
// PromptCheck and Prompt.
type InferenceResultV1 struct {
	RequestID           string          `json:"request_id"`
	Status              Status          `json:"status"`
	Attempt             string          `json:"attempt,omitempty"`
	Operation           Operation       `json:"operation,omitempty"`
	Body                json.RawMessage `json:"body,omitempty"`
	PromptFilterResults json.RawMessage `json:"prompt_filter_results,omitempty"`
	Error               *ResultError    `json:"error,omitempty"`
	Usage               *Usage          `json:"usage,omitempty"`
	CreatedAt           time.Time       `json:"created_at"`
}

// EventType returns TypeInferenceResultV1.
func (InferenceResultV1) EventType() Type { return TypeInferenceResultV1 }

// SafetySignalV1 is safety.signal.v1: one signal per classified prompt or
// completion, SafetySignal without Prompt.
type SafetySignalV1 struct {
	RequestID     string     `json:"request_id"`
	Resource      string     `json:"resource"`
	Deployment    string     `json:"deployment"`
	HomeGeo       string     `json:"home_geo"`
	Direction     Direction  `json:"direction"`
	Categories    Categories `json:"categories"`
	Detections    Detections `json:"detections"`
	BlocklistHits []string   `json:"blocklist_hits,omitempty"`
	ContentHash   string     `json:"content_hash"`
	Filtered      bool       `json:"filtered"`
	At            time.Time  `json:"at"`
}

// EventType returns TypeSafetySignalV1.
func (SafetySignalV1) EventType() Type { return TypeSafetySignalV1 }

var (
	_ Event = InferenceRequestV1{}
	_ Event = InferenceResultV1{}
	_ Event = SafetySignalV1{}
)
