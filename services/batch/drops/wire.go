package drops

import (
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
)

// Batch is a batch in the Batch API's wire shape (OpenAI's batch
// object), as a drop's status file shows it. Nullable fields are
// pointers, written as null when unset, as the API writes them.
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Errors           *BatchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    RequestCounts     `json:"request_counts"`
	Usage            *BatchUsage       `json:"usage,omitempty"`
	Metadata         map[string]string `json:"metadata"`
}

// BatchErrors is a batch's errors: why it failed, a line at a time.
type BatchErrors struct {
	Object string       `json:"object"`
	Data   []BatchError `json:"data"`
}

// BatchError is one entry of errors.data; Line is 1-based.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// RequestCounts are a batch's request_counts.
type RequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchUsage is the token usage of a batch's finished lines.
type BatchUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// Done is the number of lines that finished, well or not.
func (c RequestCounts) Done() int { return c.Completed + c.Failed }

// Terminal reports whether the batch has ended.
func (b Batch) Terminal() bool { return events.BatchStatus(b.Status).Terminal() }

// WireBatch renders b in the Batch API's wire shape.
func WireBatch(b events.BatchObject) Batch {
	unix := func(t *time.Time) *int64 {
		if t == nil || t.IsZero() {
			return nil
		}
		u := t.Unix()
		return &u
	}
	str := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	out := Batch{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID,
		CompletionWindow: b.CompletionWindow, Status: string(b.Status),
		OutputFileID: str(b.OutputFileID), ErrorFileID: str(b.ErrorFileID),
		CreatedAt: b.CreatedAt.Unix(), InProgressAt: unix(b.InProgressAt), ExpiresAt: unix(&b.ExpiresAt),
		FinalizingAt: unix(b.FinalizingAt), CompletedAt: unix(b.CompletedAt), FailedAt: unix(b.FailedAt),
		ExpiredAt: unix(b.ExpiredAt), CancellingAt: unix(b.CancellingAt), CancelledAt: unix(b.CancelledAt),
		RequestCounts: RequestCounts(b.RequestCounts),
		Metadata:      b.Metadata,
	}
	if b.Usage != nil {
		u := BatchUsage(*b.Usage)
		out.Usage = &u
	}
	if len(b.Errors) > 0 {
		out.Errors = &BatchErrors{Object: "list", Data: make([]BatchError, len(b.Errors))}
		for i, e := range b.Errors {
			be := BatchError{Code: e.Code, Message: e.Message, Param: str(e.Param)}
			if e.Line > 0 {
				l := e.Line
				be.Line = &l
			}
			out.Errors.Data[i] = be
		}
	}
	return out
}
