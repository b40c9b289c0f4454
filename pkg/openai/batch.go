package openai

import (
	"time"

	"github.com/terroir-ai/terroir/pkg/events"
)

// Batch is a batch object on the wire, OpenAI's and Azure's: every field
// but model and usage is always present, null when unset. The Batch API
// answers it and a drop's status file holds it.
type Batch struct {
	ID               string             `json:"id"`
	Object           string             `json:"object"`
	Endpoint         string             `json:"endpoint"`
	Errors           *BatchErrors       `json:"errors"`
	InputFileID      string             `json:"input_file_id"`
	CompletionWindow string             `json:"completion_window"`
	Status           events.BatchStatus `json:"status"`
	OutputFileID     *string            `json:"output_file_id"`
	ErrorFileID      *string            `json:"error_file_id"`
	CreatedAt        int64              `json:"created_at"`
	InProgressAt     *int64             `json:"in_progress_at"`
	ExpiresAt        *int64             `json:"expires_at"`
	FinalizingAt     *int64             `json:"finalizing_at"`
	CompletedAt      *int64             `json:"completed_at"`
	FailedAt         *int64             `json:"failed_at"`
	ExpiredAt        *int64             `json:"expired_at"`
	CancellingAt     *int64             `json:"cancelling_at"`
	CancelledAt      *int64             `json:"cancelled_at"`
	RequestCounts    events.BatchCounts `json:"request_counts"`
	Metadata         map[string]string  `json:"metadata"`
	// Model is the deployment the lines name, once known; OpenAI's
	// shape only (Azure's 2024-10-21 batch has no model).
	Model string      `json:"model,omitempty"`
	Usage *BatchUsage `json:"usage,omitempty"`
}

// BatchErrors is a batch's errors: why it failed, a line at a time.
type BatchErrors struct {
	Object string       `json:"object"`
	Data   []BatchError `json:"data"`
}

// BatchError is one entry of errors.data; Line is 1-based, null for the
// file as a whole.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// BatchUsage is the token usage of a batch's finished lines.
type BatchUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

// NewBatch is b as an app sees it; azure is set on Azure's dated paths.
func NewBatch(b events.BatchObject, azure bool) Batch {
	unix := func(t *time.Time) *int64 {
		if t == nil || t.IsZero() {
			return nil
		}
		u := t.Unix()
		return &u
	}
	orNull := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	out := Batch{ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID, CompletionWindow: b.CompletionWindow,
		Status: b.Status, OutputFileID: orNull(b.OutputFileID), ErrorFileID: orNull(b.ErrorFileID), CreatedAt: b.CreatedAt.Unix(),
		InProgressAt: unix(b.InProgressAt), ExpiresAt: unix(&b.ExpiresAt), FinalizingAt: unix(b.FinalizingAt), CompletedAt: unix(b.CompletedAt),
		FailedAt: unix(b.FailedAt), ExpiredAt: unix(b.ExpiredAt), CancellingAt: unix(b.CancellingAt), CancelledAt: unix(b.CancelledAt),
		RequestCounts: b.RequestCounts}
	if len(b.Metadata) > 0 {
		out.Metadata = b.Metadata
	}
	if len(b.Errors) > 0 {
		out.Errors = &BatchErrors{Object: "list", Data: make([]BatchError, len(b.Errors))}
		for i, e := range b.Errors {
			out.Errors.Data[i] = BatchError{Code: e.Code, Message: e.Message, Param: orNull(e.Param)}
			if e.Line > 0 {
				out.Errors.Data[i].Line = &e.Line
			}
		}
	}
	if !azure {
		out.Model = b.Deployment
	}
	if u := b.Usage; u != nil {
		out.Usage = &BatchUsage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
	}
	return out
}
