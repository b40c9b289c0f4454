package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/openai"
)

// lineRequestID is the request ID of line index of a batch: the same for
// every send of the line, so its answers can be matched to it whichever
// instance reads them.
func lineRequestID(batchID string, index int) string {
	return batchID + "-" + strconv.Itoa(index)
}

// parseLineRequestID reverses lineRequestID.
func parseLineRequestID(id string) (batchID string, index int, ok bool) {
	b, n, found := strings.Cut(id, "-")
	if !found || !strings.HasPrefix(b, "batch_") {
		return "", 0, false
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 {
		return "", 0, false
	}
	return b, i, true
}

// derivedID is a stable ID of 32 hex digits for what of a batch, so a
// job resumed after a crash writes the same output lines and files
// again instead of new ones.
func derivedID(batchID, what string) string {
	h := sha256.Sum256([]byte(batchID + "/" + what))
	return hex.EncodeToString(h[:16])
}

// errorBody is the OpenAI error object.
func errorBody(message, typ, param, code string) json.RawMessage {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	e := inner{Message: message, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	b, _ := json.Marshal(struct {
		Error inner `json:"error"`
	}{e})
	return b
}

// answerOf is the answer a line's result gives: its body with 200, the
// content filter's error (code content_filter) with 400, or the error.
func answerOf(requestID string, res events.InferenceResult) answer {
	a := answer{RequestID: requestID}
	switch {
	case res.Status == events.StatusOK:
		a.StatusCode, a.Body = http.StatusOK, res.Body
	case res.Status == events.StatusFiltered && len(res.Body) > 0:
		a.StatusCode, a.Body = http.StatusBadRequest, res.Body
	case res.Error != nil:
		var typ string
		a.StatusCode, typ = openai.ErrorStatus(res.Error.Kind)
		a.Body = errorBody(res.Error.Message, typ, res.Error.Param, res.Error.Code)
	default:
		a.StatusCode, a.Body = http.StatusInternalServerError, errorBody("the request failed", "server_error", "", "internal_error")
	}
	return a
}

// outputLine is a line of a batch's output or error file.
type outputLine struct {
	ID       string        `json:"id"`
	CustomID string        `json:"custom_id"`
	Response *lineResponse `json:"response"`
	Error    *lineError    `json:"error"`
}

type lineResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
