package events

import (
	"encoding/json"
	"time"
)

// The payload types below are the Go form of the JSON Schemas in the
// repository's schemas/events folder; the package tests marshal each one
// and validate it against its schema. Free-form objects (request and
// response bodies, prompts, specs) are kept as raw JSON so they pass
// through unchanged.

// InferenceRequest is an app's request as accepted by ingress
// (inference.request.v2). It carries customer content and is sealed under
// the resource's data key. Version 2 adds PromptCheck; a v1 payload
// decodes into it unchanged.
type InferenceRequest struct {
	// RequestID is also the record key and the x-request-id header.
	RequestID string `json:"request_id"`
	// Resource is the ID of the resource (tenant) that sent the request.
	Resource string `json:"resource"`
	// HomeGeo is the resource's home geography.
	HomeGeo string `json:"home_geo"`
	// ProcessingGeo is the geography chosen to process the request.
	ProcessingGeo string `json:"processing_geo"`
	// Deployment is the name of the addressed deployment.
	Deployment string `json:"deployment"`
	// SKU is the deployment's type.
	SKU SKU `json:"sku"`
	// Model is the catalog name of the deployment's model.
	Model string `json:"model"`
	// Operation is the requested API operation.
	Operation Operation `json:"operation"`
	// Stream is set when the app asked for a streamed answer.
	Stream bool `json:"stream"`
	// APIFlavor is the wire shape the app spoke.
	APIFlavor APIFlavor `json:"api_flavor"`
	// Body is the OpenAI-shaped request body as sent by the app (a JSON
	// object; required).
	Body json.RawMessage `json:"body"`
	// PromptFilterResults is set by content safety on a non-streamed
	// request it passes on: the prompt's verdict travels with the answer
	// instead of in a reply of its own. Empty means absent.
	PromptFilterResults json.RawMessage `json:"prompt_filter_results,omitempty"`
	// PromptCheck is set by content safety on a request it passes on:
	// what it found in the prompt, carried to its output stage, which
	// writes the request's one safety signal and abuse-monitoring record.
	// Nil means absent.
	PromptCheck *PromptCheck `json:"prompt_check,omitempty"`
	// CreatedAt is when ingress accepted the request.
	CreatedAt time.Time `json:"created_at"`
}

// PromptCheck is content safety's check of a prompt it passed on, carried
// on the request to the model worker and back on its result. It holds no
// text.
type PromptCheck struct {
	// Signal is what filtering found in the prompt.
	Signal Findings `json:"signal"`
	// Log is set when the prompt is recorded for abuse monitoring (the
	// resource's content logging was on when the prompt was checked): the
	// worker then sends the prompt back on its result.
	Log bool `json:"log,omitempty"`
	// FilterResults is the prompt's Azure-shaped prompt_filter_results
	// array, for the abuse-monitoring record of a stream (whose verdict
	// went to the app as a reply of its own); set only when Log is. A
	// non-streamed request carries it in PromptFilterResults instead.
	FilterResults json.RawMessage `json:"filter_results,omitempty"`
}

// Findings is what content filtering found in one text, without the text:
// categories, detections, blocklist IDs and a keyed hash.
type Findings struct {
	// Categories holds the harm-category results.
	Categories Categories `json:"categories"`
	// Detections holds the results of the detectors that ran.
	Detections Detections `json:"detections"`
	// BlocklistHits lists the IDs of the blocklists that matched; empty
	// means none did.
	BlocklistHits []string `json:"blocklist_hits,omitempty"`
	// ContentHash is a keyed 256-bit hash of the text under a
	// per-geography key, as 64 lowercase hex characters.
	ContentHash string `json:"content_hash"`
	// Filtered is set when the text was blocked.
	Filtered bool `json:"filtered"`
	// At is when the text was classified.
	At time.Time `json:"at"`
}

// EventType returns TypeInferenceRequest.
func (InferenceRequest) EventType() Type { return TypeInferenceRequest }

// InferenceChunk is one piece of a streamed answer (inference.chunk.v1).
// It carries customer content and is sealed under the resource's data key.
type InferenceChunk struct {
	// RequestID is the ID of the request the chunk answers.
	RequestID string `json:"request_id"`
	// Seq is the chunk's position in the stream, from 0 without gaps.
	Seq int `json:"seq"`
	// Attempt names the worker run that wrote the chunk: every chunk and
	// the result of one run carry the same value, and a run that starts
	// the answer again (a redelivered or retried request) has a new one,
	// so consumers tell two answers apart instead of splicing them. Empty
	// means absent.
	Attempt string `json:"attempt,omitempty"`
	// Operation is the operation the chunk answers, so that content
	// safety reads its body by type, not by guessing; empty means absent.
	Operation Operation `json:"operation,omitempty"`
	// Body is one chat.completion.chunk or text completion chunk object.
	Body json.RawMessage `json:"body"`
	// CreatedAt is when the chunk was produced.
	CreatedAt time.Time `json:"created_at"`
}

// EventType returns TypeInferenceChunk.
func (InferenceChunk) EventType() Type { return TypeInferenceChunk }

// InferenceResult is the outcome of an inference request
// (inference.result.v2). It carries customer content and is sealed under
// the resource's data key. Body is set when Status is StatusOK, Error when
// Status is StatusError. Version 2 adds PromptCheck and Prompt, which only
// a worker's result to content safety carries (never a reply); a v1
// payload decodes into it unchanged.
type InferenceResult struct {
	// RequestID is the ID of the request the result answers.
	RequestID string `json:"request_id"`
	// Status is the outcome.
	Status Status `json:"status"`
	// Attempt names the worker run that wrote the result, as on its
	// chunks; empty means absent.
	Attempt string `json:"attempt,omitempty"`
	// Operation is the operation the result answers, so that content
	// safety reads its body by type; empty means absent.
	Operation Operation `json:"operation,omitempty"`
	// Body is the final OpenAI-shaped response object; empty means absent.
	Body json.RawMessage `json:"body,omitempty"`
	// PromptFilterResults is copied from the request's: when set, content
	// safety sent no verdict reply, so its output stage answers from reply
	// sequence 0 and puts them on the response. Empty means absent.
	PromptFilterResults json.RawMessage `json:"prompt_filter_results,omitempty"`
	// PromptCheck is copied from the request's: content safety's output
	// stage writes the request's safety signal and abuse-monitoring record
	// from it. Nil means absent.
	PromptCheck *PromptCheck `json:"prompt_check,omitempty"`
	// Prompt is the request's body, sent back when PromptCheck.Log is set
	// so that the abuse-monitoring record holds it; empty means absent.
	Prompt json.RawMessage `json:"prompt,omitempty"`
	// Error says what went wrong; nil means absent.
	Error *ResultError `json:"error,omitempty"`
	// Usage holds the request's token counts; nil means absent.
	Usage *Usage `json:"usage,omitempty"`
	// CreatedAt is when the result was produced.
	CreatedAt time.Time `json:"created_at"`
}

// EventType returns TypeInferenceResult.
func (InferenceResult) EventType() Type { return TypeInferenceResult }

// Echo copies onto r what content safety put on req to come back with the
// answer: the prompt's filter results, its check and, when the check says
// the prompt is logged, the prompt. Every model worker's final result
// calls it.
func (r *InferenceResult) Echo(req InferenceRequest) {
	r.PromptFilterResults = req.PromptFilterResults
	r.PromptCheck = req.PromptCheck
	if req.PromptCheck != nil && req.PromptCheck.Log {
		r.Prompt = req.Body
	}
}

// ResultError describes a failed request. Its message never contains
// prompt or output text.
type ResultError struct {
	// Kind is the error kind.
	Kind ErrorKind `json:"kind"`
	// Message is a human-readable description; required.
	Message string `json:"message"`
	// Code is the OpenAI error code, such as content_filter; optional.
	Code string `json:"code,omitempty"`
	// Param is the request parameter the error refers to; optional.
	Param string `json:"param,omitempty"`
}

// Usage holds token counts, counted with an OpenAI-compatible tokenizer.
type Usage struct {
	// PromptTokens is the number of tokens in the prompt.
	PromptTokens int `json:"prompt_tokens"`
	// CompletionTokens is the number of tokens generated.
	CompletionTokens int `json:"completion_tokens"`
	// TotalTokens is PromptTokens plus CompletionTokens.
	TotalTokens int `json:"total_tokens"`
}

// UsageRecord is the token usage of one request, for metering and rate
// limiting (usage.record.v1). Plain metadata.
type UsageRecord struct {
	// RequestID is the ID of the metered request.
	RequestID string `json:"request_id"`
	// Resource is the ID of the resource billed.
	Resource string `json:"resource"`
	// Deployment is the name of the deployment that served the request.
	Deployment string `json:"deployment"`
	// SKU is the deployment's type.
	SKU SKU `json:"sku"`
	// Model is the catalog name of the model that served the request.
	Model string `json:"model"`
	// ProcessingGeo is where the request was processed.
	ProcessingGeo string `json:"processing_geo"`
	// HomeGeo is the resource's home geography.
	HomeGeo string `json:"home_geo"`
	// PromptTokens is the number of tokens in the prompt.
	PromptTokens int `json:"prompt_tokens"`
	// CompletionTokens is the number of tokens generated.
	CompletionTokens int `json:"completion_tokens"`
	// TotalTokens is PromptTokens plus CompletionTokens.
	TotalTokens int `json:"total_tokens"`
	// RecordedAt is when the usage was recorded.
	RecordedAt time.Time `json:"recorded_at"`
}

// EventType returns TypeUsageRecord.
func (UsageRecord) EventType() Type { return TypeUsageRecord }

// SafetySignal is what content filtering found in a request
// (safety.signal.v2): in its prompt (Direction prompt), or in its
// completion (Direction completion) and, when Prompt is set, in its prompt
// too. A request has one signal. It never carries the text, only
// categories, detections, blocklist IDs and keyed hashes, so it travels
// plain. Version 2 adds Prompt; a v1 payload decodes into it unchanged.
type SafetySignal struct {
	// RequestID is the ID of the request whose content was classified.
	RequestID string `json:"request_id"`
	// Resource is the ID of the resource that sent the request.
	Resource string `json:"resource"`
	// Deployment is the name of the addressed deployment.
	Deployment string `json:"deployment"`
	// HomeGeo is the resource's home geography.
	HomeGeo string `json:"home_geo"`
	// Direction says whether the prompt or the completion was classified.
	Direction Direction `json:"direction"`
	// Categories holds the harm-category results.
	Categories Categories `json:"categories"`
	// Detections holds the results of the detectors that ran.
	Detections Detections `json:"detections"`
	// BlocklistHits lists the IDs of the blocklists that matched; empty
	// means none did.
	BlocklistHits []string `json:"blocklist_hits,omitempty"`
	// ContentHash is a keyed 256-bit hash of the text under a
	// per-geography key, as 64 lowercase hex characters.
	ContentHash string `json:"content_hash"`
	// Filtered is set when the content was blocked.
	Filtered bool `json:"filtered"`
	// At is when the content was classified.
	At time.Time `json:"at"`
	// Prompt is what filtering found in the request's prompt, on a
	// completion signal (the prompt passed); nil means absent.
	Prompt *Findings `json:"prompt,omitempty"`
}

// EventType returns TypeSafetySignal.
func (SafetySignal) EventType() Type { return TypeSafetySignal }

// Directions splits s into one signal per direction it covers, each as a
// signal of that direction alone (Prompt nil): the prompt's first.
func (s SafetySignal) Directions() []SafetySignal {
	if s.Prompt == nil {
		return []SafetySignal{s}
	}
	p := s
	p.Prompt = nil
	p.Direction = DirectionPrompt
	p.Categories, p.Detections, p.BlocklistHits = s.Prompt.Categories, s.Prompt.Detections, s.Prompt.BlocklistHits
	p.ContentHash, p.Filtered, p.At = s.Prompt.ContentHash, s.Prompt.Filtered, s.Prompt.At
	c := s
	c.Prompt = nil
	return []SafetySignal{p, c}
}

// Categories holds the result of each harm-category classifier.
type Categories struct {
	// Hate is the hate and fairness category.
	Hate CategoryResult `json:"hate"`
	// Sexual is the sexual content category.
	Sexual CategoryResult `json:"sexual"`
	// Violence is the violence category.
	Violence CategoryResult `json:"violence"`
	// SelfHarm is the self-harm category.
	SelfHarm CategoryResult `json:"self_harm"`
}

// CategoryResult is the severity found in one harm category and whether
// the filter policy blocked the content for it.
type CategoryResult struct {
	// Severity is the severity found.
	Severity Severity `json:"severity"`
	// Filtered is set when the policy blocked the content.
	Filtered bool `json:"filtered"`
}

// Detections holds the results of the detectors that ran; a nil field
// means the detector did not run (jailbreak runs on prompts only).
type Detections struct {
	// Jailbreak is the prompt-attack detector.
	Jailbreak *Detection `json:"jailbreak,omitempty"`
	// Profanity is the profanity detector.
	Profanity *Detection `json:"profanity,omitempty"`
}

// Detection says whether a detector fired and whether the filter policy
// blocked the content for it.
type Detection struct {
	// Detected is set when the detector fired.
	Detected bool `json:"detected"`
	// Filtered is set when the policy blocked the content.
	Filtered bool `json:"filtered"`
}

// AbuseRecord is a request's prompt and output kept for abuse monitoring
// (abuse.record.v1): one record holding both, or (from producers before
// one record per request) two parts sharing the request ID, the prompt
// part and the output part. A request whose prompt was blocked has no
// output. It is sealed under the home geography's
// abuse-monitoring key, not the resource's data key, and expires with the
// abuse log's 30-day retention.
type AbuseRecord struct {
	// RequestID is the ID of the recorded request.
	RequestID string `json:"request_id"`
	// Resource is the ID of the resource that sent the request.
	Resource string `json:"resource"`
	// HomeGeo is the resource's home geography, where the record is kept.
	HomeGeo string `json:"home_geo"`
	// ProcessingGeo is where the request was processed.
	ProcessingGeo string `json:"processing_geo"`
	// Deployment is the name of the addressed deployment.
	Deployment string `json:"deployment"`
	// Operation is the requested API operation.
	Operation Operation `json:"operation"`
	// Prompt is the request's messages or prompt as sent (a JSON object),
	// on the prompt part of a record; empty means absent.
	Prompt json.RawMessage `json:"prompt,omitempty"`
	// Output is the output as returned to the app; empty means absent
	// (the prompt was blocked or nothing was produced).
	Output json.RawMessage `json:"output,omitempty"`
	// PromptFilterResults is the Azure-shaped prompt_filter_results array
	// of the prompt part; empty means absent.
	PromptFilterResults json.RawMessage `json:"prompt_filter_results,omitempty"`
	// ContentFilterResults is the Azure-shaped content_filter_results
	// object of the output; empty means absent.
	ContentFilterResults json.RawMessage `json:"content_filter_results,omitempty"`
	// CreatedAt is when the record was written.
	CreatedAt time.Time `json:"created_at"`
}

// EventType returns TypeAbuseRecord.
func (AbuseRecord) EventType() Type { return TypeAbuseRecord }

// AuditEntry is one entry of a geography's hash-chained, append-only log
// of access to abuse-monitoring records (audit.entry.v1). Plain metadata.
type AuditEntry struct {
	// Geo is the geography whose audit log holds the entry.
	Geo string `json:"geo"`
	// Seq is the entry's position in the chain, from 1 without gaps.
	Seq int64 `json:"seq"`
	// PrevHash is the hash of entry Seq-1 as 64 lowercase hex characters,
	// or "" when Seq is 1.
	PrevHash string `json:"prev_hash"`
	// Hash is the hash of this entry, covering PrevHash, as 64 lowercase
	// hex characters.
	Hash string `json:"hash"`
	// Actor is the identity of the reviewer or manager who acted.
	Actor string `json:"actor"`
	// Action is what the actor did.
	Action AuditAction `json:"action"`
	// Subject is what the action concerned, such as a request or case ID.
	Subject string `json:"subject"`
	// Detail holds further facts about the action; never content.
	Detail map[string]string `json:"detail,omitempty"`
	// At is when the action happened.
	At time.Time `json:"at"`
}

// EventType returns TypeAuditEntry.
func (AuditEntry) EventType() Type { return TypeAuditEntry }

// CapacityReport is a model worker instance's capacity and load for one
// model (capacity.report.v1). Plain metadata.
type CapacityReport struct {
	// Geo is the geography the instance serves.
	Geo string `json:"geo"`
	// Instance is the reporting instance's ID.
	Instance string `json:"instance"`
	// Model is the catalog name of the model the figures apply to.
	Model string `json:"model"`
	// TokensPerMinuteCapacity is the tokens per minute the instance can
	// serve for the model.
	TokensPerMinuteCapacity int64 `json:"tokens_per_minute_capacity"`
	// TokensPerMinuteInUse is the tokens per minute being served, averaged
	// over the last minute.
	TokensPerMinuteInUse int64 `json:"tokens_per_minute_in_use"`
	// At is when the figures were measured.
	At time.Time `json:"at"`
}

// EventType returns TypeCapacityReport.
func (CapacityReport) EventType() Type { return TypeCapacityReport }

// ControlChange is a change to control-plane state, published on the
// compacted control topic (control.change.v1). It never carries secrets:
// API keys appear only as hashes. An upsert carries the full Spec; a
// deletion sets Deleted and leaves Spec empty.
type ControlChange struct {
	// Kind is the kind of the changed object.
	Kind ControlKind `json:"kind"`
	// ID is the object's ID, unique within its kind.
	ID string `json:"id"`
	// Resource is the ID of the owning resource; required for deployments
	// and API keys, empty for objects that belong to no resource.
	Resource string `json:"resource,omitempty"`
	// Actor is the identity of the operator or service that made the
	// change.
	Actor string `json:"actor"`
	// At is when the change was made.
	At time.Time `json:"at"`
	// Spec is the object's full new state as a JSON object; empty for
	// deletions.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Deleted is set when the object was deleted.
	Deleted bool `json:"deleted"`
}

// EventType returns TypeControlChange.
func (ControlChange) EventType() Type { return TypeControlChange }

// DataKey is a resource's data key wrapped under the geography's
// key-encryption key (keys.datakey.v1). It travels plain because the key
// is already wrapped. A deletion (crypto-shredding) sets Deleted and
// leaves Wrapped empty; a resource's shredding also sets ResourceShredded.
type DataKey struct {
	// Geo is the geography whose key-encryption key wrapped the key.
	Geo string `json:"geo"`
	// Resource is the ID of the resource the key belongs to.
	Resource string `json:"resource"`
	// KeyID is the data key's ID, carried in the header of every record
	// sealed under it.
	KeyID string `json:"key_id"`
	// Wrapped is the encrypted data key, standard base64 on the wire;
	// empty for deletions.
	Wrapped []byte `json:"wrapped,omitempty"`
	// KEKID is the key-encryption key's ID, such as "eu/kek/v2".
	KEKID string `json:"kek_id,omitempty"`
	// Algorithm is always DataKeyAlgorithm.
	Algorithm string `json:"algorithm"`
	// CreatedAt is when the key was created, or for a deletion when it
	// was deleted.
	CreatedAt time.Time `json:"created_at"`
	// Deleted is set when the key was deleted.
	Deleted bool `json:"deleted,omitempty"`
	// ResourceShredded marks the record (keyed "<geo>/<resource>", with
	// Deleted and no KEKID) that shreds every key of Resource in Geo for
	// good: no key of it may be made again until a tombstone lifts it.
	ResourceShredded bool `json:"resource_shredded,omitempty"`
}

// EventType returns TypeDataKey.
func (DataKey) EventType() Type { return TypeDataKey }

// FileObject is the metadata of an uploaded or service-written file
// (file.object.v1), a record of the compacted files stream of the
// resource's home geography keyed "<resource>/<file id>"; deleting the
// file writes a tombstone. It never carries the file's bytes, which live
// sealed in the blob store. It is sealed under the resource's data key
// all the same, because the filename is the customer's own text (it can
// name a person or a project), and a resource's shredding then makes its
// file list unreadable too.
type FileObject struct {
	// ID is the file's ID, "file-" and 32 hexadecimal digits.
	ID string `json:"id"`
	// Resource is the ID of the resource that owns the file.
	Resource string `json:"resource"`
	// HomeGeo is the resource's home geography, where the bytes are.
	HomeGeo string `json:"home_geo"`
	// Purpose is the file's OpenAI purpose.
	Purpose FilePurpose `json:"purpose"`
	// Filename is the name the file was uploaded under.
	Filename string `json:"filename"`
	// Bytes is the size of the content.
	Bytes int64 `json:"bytes"`
	// Status is the file's Azure status: "processed" once its content is
	// stored, "error" when it could not be.
	Status FileStatus `json:"status"`
	// StatusDetails explains an error status; empty otherwise.
	StatusDetails string `json:"status_details,omitempty"`
	// CreatedAt is when the file was stored.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the file expires; nil means never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// EventType returns TypeFileObject.
func (FileObject) EventType() Type { return TypeFileObject }

// Every payload type is an Event.
var (
	_ Event = InferenceRequest{}
	_ Event = InferenceChunk{}
	_ Event = InferenceResult{}
	_ Event = UsageRecord{}
	_ Event = SafetySignal{}
	_ Event = AbuseRecord{}
	_ Event = AuditEntry{}
	_ Event = CapacityReport{}
	_ Event = ControlChange{}
	_ Event = DataKey{}
	_ Event = FileObject{}
	_ Event = BatchObject{}
	_ Event = BatchCommand{}
)
