package openai

import (
	"encoding/json"

	"github.com/terroir-ai/terroir/pkg/events"
)

// ContentFilterResults is Azure's content_filter_results object for one
// prompt (prompt_filter_results[].content_filter_results, or the
// innererror.content_filter_result of a blocked prompt) or one choice.
// The four harm categories are always present; jailbreak only for prompts;
// profanity only when the policy filters profanity in that direction;
// custom_blocklists only when the policy applies blocklists in that
// direction. Fields are in the order the live service sends them.
type ContentFilterResults struct {
	CustomBlocklists *BlocklistFilterResult `json:"custom_blocklists,omitempty"`
	Hate             *CategoryFilterResult  `json:"hate,omitempty"`
	Jailbreak        *DetectionFilterResult `json:"jailbreak,omitempty"`
	Profanity        *DetectionFilterResult `json:"profanity,omitempty"`
	SelfHarm         *CategoryFilterResult  `json:"self_harm,omitempty"`
	Sexual           *CategoryFilterResult  `json:"sexual,omitempty"`
	Violence         *CategoryFilterResult  `json:"violence,omitempty"`
}

// CategoryFilterResult is the result of one harm category.
type CategoryFilterResult struct {
	// Filtered is set when the policy blocked the content for this
	// category.
	Filtered bool `json:"filtered"`
	// Severity is safe, low, medium or high.
	Severity events.Severity `json:"severity"`
}

// DetectionFilterResult is the result of a detector (jailbreak,
// profanity).
type DetectionFilterResult struct {
	Filtered bool `json:"filtered"`
	Detected bool `json:"detected"`
}

// BlocklistFilterResult is the result of the custom blocklists.
type BlocklistFilterResult struct {
	// Filtered is set when any applied list matched.
	Filtered bool `json:"filtered"`
	// Details has one entry per applied list that matched; it is an
	// empty array, never null, when none did.
	Details []BlocklistDetail `json:"details"`
}

// BlocklistDetail names one matched blocklist.
type BlocklistDetail struct {
	Filtered bool `json:"filtered"`
	// ID is the blocklist's name.
	ID string `json:"id"`
}

// PromptFilterResult is one entry of prompt_filter_results.
type PromptFilterResult struct {
	PromptIndex          int                  `json:"prompt_index"`
	ContentFilterResults ContentFilterResults `json:"content_filter_results"`
}

// ContentFilterError is the body of Azure's 400 error for a blocked
// prompt.
type ContentFilterError struct {
	Error ContentFilterErrorDetail `json:"error"`
}

// ContentFilterErrorDetail is the error object of a ContentFilterError.
type ContentFilterErrorDetail struct {
	Message    string          `json:"message"`
	Type       *string         `json:"type"`
	Param      string          `json:"param"`
	Code       string          `json:"code"`
	Status     int             `json:"status"`
	InnerError InnerFilterInfo `json:"innererror"`
}

// InnerFilterInfo is the innererror of a ContentFilterError.
type InnerFilterInfo struct {
	Code                string               `json:"code"`
	ContentFilterResult ContentFilterResults `json:"content_filter_result"`
}

// PromptFilteredMessage is the message of Azure's content-filter error.
const PromptFilteredMessage = "The response was filtered due to the prompt triggering the content management policy of this resource. Please modify your prompt and retry."

// NewContentFilterError is the error body of a prompt that results
// blocked.
func NewContentFilterError(results ContentFilterResults) ContentFilterError {
	return ContentFilterError{Error: ContentFilterErrorDetail{Message: PromptFilteredMessage, Param: "prompt",
		Code: "content_filter", Status: 400, InnerError: InnerFilterInfo{Code: "ResponsibleAIPolicyViolation", ContentFilterResult: results}}}
}

// VerdictChunk is the first chunk of a filtered stream: no choices, only
// the prompt's verdict, as the live service sends it.
type VerdictChunk struct {
	Choices             []json.RawMessage    `json:"choices"`
	Created             int64                `json:"created"`
	ID                  string               `json:"id"`
	Model               string               `json:"model"`
	Object              string               `json:"object"`
	PromptFilterResults []PromptFilterResult `json:"prompt_filter_results"`
}
