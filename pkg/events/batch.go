package events

import "time"

// BatchStatus is a batch's state, as OpenAI names it.
type BatchStatus string

// The states of a batch: validating → in_progress → finalizing →
// completed, or failed (its input did not validate), expired (its
// completion window passed; finished lines are kept), cancelling →
// cancelled.
const (
	BatchValidating BatchStatus = "validating"
	BatchFailed     BatchStatus = "failed"
	BatchInProgress BatchStatus = "in_progress"
	BatchFinalizing BatchStatus = "finalizing"
	BatchCompleted  BatchStatus = "completed"
	BatchExpired    BatchStatus = "expired"
	BatchCancelling BatchStatus = "cancelling"
	BatchCancelled  BatchStatus = "cancelled"
)

// Terminal reports whether s is a final state.
func (s BatchStatus) Terminal() bool {
	switch s {
	case BatchCompleted, BatchFailed, BatchExpired, BatchCancelled:
		return true
	}
	return false
}

// BatchSource is how a batch was created.
type BatchSource string

const (
	// BatchSourceAPI is a batch created with POST /batches.
	BatchSourceAPI BatchSource = "api"
	// BatchSourceDrop is a batch made from a file written into the
	// resource's drop location.
	BatchSourceDrop BatchSource = "drop"
)

// BatchError is one entry of a batch's errors.data: a line of the input
// that failed validation (Line is 1-based; 0 for the file as a whole), or
// why the batch failed.
type BatchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    int    `json:"line,omitempty"`
}

// BatchCounts are a batch's request_counts.
type BatchCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Done is the number of lines that finished, well or not.
func (c BatchCounts) Done() int { return c.Completed + c.Failed }

// BatchUsage is the token usage of a batch's finished lines.
type BatchUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// BatchObject is a batch (batch.object.v1): a record of the compacted
// batches stream of the resource's home geography keyed
// "<resource>/<batch id>", written by ingress when the batch is created
// and by the batch service as it runs, which every ingress instance
// materialises to answer the Batch API. It never carries a line of the
// input or output, which live sealed in the blob store; it is sealed
// under the resource's data key all the same, because metadata and the
// drop's file name are the customer's text.
type BatchObject struct {
	// ID is the batch's ID, "batch_" and 32 hexadecimal digits.
	ID string `json:"id"`
	// Resource is the ID of the resource that owns the batch.
	Resource string `json:"resource"`
	// HomeGeo is the resource's home geography, where its files and
	// progress are kept.
	HomeGeo string `json:"home_geo"`
	// Endpoint is the endpoint every line calls, as the app named it
	// ("/v1/chat/completions", or Azure's "/chat/completions").
	Endpoint string `json:"endpoint"`
	// Operation is the API operation of Endpoint.
	Operation Operation `json:"operation"`
	// APIFlavor is the API the batch was created through; output lines
	// are written in its shape.
	APIFlavor APIFlavor `json:"api_flavor"`
	// Source says how the batch was created; DropName is the drop file's
	// name (without .jsonl) for a drop.
	Source   BatchSource `json:"source"`
	DropName string      `json:"drop_name,omitempty"`
	// InputFileID is the file of purpose batch holding the lines.
	InputFileID string `json:"input_file_id"`
	// CompletionWindow is always "24h".
	CompletionWindow string `json:"completion_window"`
	// Deployment is the deployment the lines name, once validation found
	// it (empty before).
	Deployment string `json:"deployment,omitempty"`
	// Status is the batch's state; Errors why it failed.
	Status BatchStatus  `json:"status"`
	Errors []BatchError `json:"errors,omitempty"`
	// OutputFileID and ErrorFileID are the batch_output files written
	// when the batch ends (empty before).
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`
	// RequestCounts move while the batch runs.
	RequestCounts BatchCounts `json:"request_counts"`
	// Usage sums the usage of finished lines; nil before any.
	Usage *BatchUsage `json:"usage,omitempty"`
	// Metadata is the app's up to 16 key-value pairs.
	Metadata map[string]string `json:"metadata,omitempty"`
	// OutputExpiresAfter is the lifetime of the output and error files
	// in seconds after their creation; 0 means the default.
	OutputExpiresAfter int64 `json:"output_expires_after,omitempty"`
	// EnqueuedTokens estimates the input tokens of the lines, which
	// count against the deployment's enqueued-token limit until the
	// batch ends.
	EnqueuedTokens int64 `json:"enqueued_tokens,omitempty"`
	// The times each state was entered; nil before.
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	InProgressAt *time.Time `json:"in_progress_at,omitempty"`
	FinalizingAt *time.Time `json:"finalizing_at,omitempty"`
	CompletedAt  *time.Time `json:"completed_at,omitempty"`
	FailedAt     *time.Time `json:"failed_at,omitempty"`
	ExpiredAt    *time.Time `json:"expired_at,omitempty"`
	CancellingAt *time.Time `json:"cancelling_at,omitempty"`
	CancelledAt  *time.Time `json:"cancelled_at,omitempty"`
	// Version orders the records of one batch: each record the batch
	// service writes has a higher one, so a view keeps the newest.
	Version int64 `json:"version"`
}

// EventType returns TypeBatchObject.
func (BatchObject) EventType() Type { return TypeBatchObject }

// BatchAction is what a batch command asks.
type BatchAction string

const (
	// BatchActionCreate starts a batch: Batch is its object as created
	// (status validating).
	BatchActionCreate BatchAction = "create"
	// BatchActionCancel asks a batch to stop: lines not yet finished
	// are dropped and what finished is written out.
	BatchActionCancel BatchAction = "cancel"
)

// BatchCommand (batch.command.v1) is a request to the batch service,
// published by ingress (or the drop watcher) on the batch-jobs stream of
// the resource's home geography keyed "<resource>/<batch id>". The
// batch service consumes it as a group and keeps the job's progress in
// the home geography's Redis, so a job outlives any one process.
type BatchCommand struct {
	Action   BatchAction `json:"action"`
	Resource string      `json:"resource"`
	HomeGeo  string      `json:"home_geo"`
	BatchID  string      `json:"batch_id"`
	// Batch is the batch as created, for BatchActionCreate.
	Batch *BatchObject `json:"batch,omitempty"`
	// At is when the command was given.
	At time.Time `json:"at"`
}

// EventType returns TypeBatchCommand.
func (BatchCommand) EventType() Type { return TypeBatchCommand }
