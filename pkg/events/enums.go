package events

// SKU is a deployment type. It decides where a request may be processed:
// Standard only in the resource's home geography, DataZone types only inside
// the home geography's data zone, Global types in any geography with
// capacity.
type SKU string

// Deployment types, spelled as in the Azure management API.
const (
	SKUStandard         SKU = "Standard"
	SKUDataZoneStandard SKU = "DataZoneStandard"
	SKUGlobalStandard   SKU = "GlobalStandard"
	SKUGlobalBatch      SKU = "GlobalBatch"
	SKUDataZoneBatch    SKU = "DataZoneBatch"
	SKUManagedCompute   SKU = "ManagedCompute"
	SKUServerless       SKU = "Serverless"
)

// Operation is the API operation a request asks for.
type Operation string

// Operations, named after their OpenAI API paths.
const (
	OperationChatCompletions Operation = "chat.completions"
	OperationCompletions     Operation = "completions"
	OperationEmbeddings      Operation = "embeddings"
	OperationResponses       Operation = "responses"
)

// APIFlavor is the wire shape an app spoke; the reply is written in the
// same shape.
type APIFlavor string

// API flavors.
const (
	// APIFlavorOpenAI is the OpenAI API: /v1 paths, Bearer keys.
	APIFlavorOpenAI APIFlavor = "openai"
	// APIFlavorAzure is the Azure OpenAI API: /openai paths, api-key header.
	APIFlavorAzure APIFlavor = "azure"
)

// Status is the outcome of an inference request.
type Status string

// Inference outcomes.
const (
	// StatusOK means the request was answered; the result carries a body.
	StatusOK Status = "ok"
	// StatusFiltered means content filtering blocked the prompt or the output.
	StatusFiltered Status = "filtered"
	// StatusError means the request failed; the result carries an error.
	StatusError Status = "error"
)

// ErrorKind is the closed vocabulary of failures, mapped once at the REST
// edge to an HTTP status and the OpenAI/Azure error body.
type ErrorKind string

// Error kinds.
const (
	ErrorInvalidRequest  ErrorKind = "invalid_request"
	ErrorUnauthorized    ErrorKind = "unauthorized"
	ErrorNotFound        ErrorKind = "not_found"
	ErrorRateLimited     ErrorKind = "rate_limited"
	ErrorContentFiltered ErrorKind = "content_filtered"
	ErrorUpstreamFailed  ErrorKind = "upstream_failed"
	ErrorTimeout         ErrorKind = "timeout"
	ErrorInternal        ErrorKind = "internal"
)

// Direction says which side of an exchange content filtering classified.
type Direction string

// Directions.
const (
	DirectionPrompt     Direction = "prompt"
	DirectionCompletion Direction = "completion"
)

// Severity is the severity a harm-category classifier found, in increasing
// order.
type Severity string

// Severities.
const (
	SeveritySafe   Severity = "safe"
	SeverityLow    Severity = "low"
	SeverityMedium Severity = "medium"
	SeverityHigh   Severity = "high"
)

// AuditAction is what a reviewer or manager did, as recorded in the audit
// log.
type AuditAction string

// Audit actions.
const (
	// AuditAccessRequested: a reviewer asked for access to a flagged record.
	AuditAccessRequested AuditAction = "access_requested"
	// AuditAccessApproved: a manager granted just-in-time access.
	AuditAccessApproved AuditAction = "access_approved"
	// AuditAccessDenied: a manager refused access.
	AuditAccessDenied AuditAction = "access_denied"
	// AuditLookup: a reviewer looked a request ID up.
	AuditLookup AuditAction = "lookup"
	// AuditView: a reviewer saw a record's content.
	AuditView AuditAction = "view"
	// AuditDecision: a reviewer decided a case.
	AuditDecision AuditAction = "decision"
	// AuditCaseOpened: automated detection opened a case, flagging its
	// request IDs for review.
	AuditCaseOpened AuditAction = "case_opened"
)

// ControlKind is the kind of object a control change concerns.
type ControlKind string

// Control-plane object kinds.
const (
	ControlResource         ControlKind = "resource"
	ControlDeployment       ControlKind = "deployment"
	ControlAPIKey           ControlKind = "api_key"
	ControlFilterPolicy     ControlKind = "filter_policy"
	ControlBlocklist        ControlKind = "blocklist"
	ControlDeploymentPolicy ControlKind = "deployment_policy"
	ControlEnforcement      ControlKind = "enforcement"
	ControlAudit            ControlKind = "audit"
)

// DataKeyAlgorithm is the cipher every data key is used with; it is the
// only value DataKey.Algorithm may take.
const DataKeyAlgorithm = "AES-256-GCM"

// FilePurpose is what a file is for, as OpenAI names it.
type FilePurpose string

// File purposes. Apps upload the first four; Terroir writes the outputs.
const (
	FilePurposeBatch            FilePurpose = "batch"
	FilePurposeFineTune         FilePurpose = "fine-tune"
	FilePurposeAssistants       FilePurpose = "assistants"
	FilePurposeUserData         FilePurpose = "user_data"
	FilePurposeBatchOutput      FilePurpose = "batch_output"
	FilePurposeFineTuneResults  FilePurpose = "fine-tune-results"
	FilePurposeAssistantsOutput FilePurpose = "assistants_output"
)

// UploadPurposes are the purposes an app may upload a file with; the
// others are given only to files Terroir writes.
var UploadPurposes = []FilePurpose{FilePurposeBatch, FilePurposeFineTune, FilePurposeAssistants, FilePurposeUserData}

// FileStatus is a file's Azure status.
type FileStatus string

// File statuses.
const (
	FileStatusProcessed FileStatus = "processed"
	FileStatusError     FileStatus = "error"
)
