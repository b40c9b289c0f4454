// Package apierr is the REST edge's error vocabulary: every failure an
// app or operator sees is one of these, written once in the OpenAI error
// shape {"error":{"message","type","param","code"}}. Messages name fields
// and values the caller chose (names, IDs, sizes), never prompt or output
// text.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/terroir-ai/terroir/pkg/admit"
)

// Error is an API error with its HTTP status.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
}

func (e *Error) Error() string { return e.Message }

// The OpenAI error types.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeConflict       = "conflict_error"
	TypeServer         = "server_error"
)

// Invalid is a 400 about param.
func Invalid(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: "invalid_value", Param: param, Message: fmt.Sprintf(format, args...)}
}

// Unauthorized is a 401: no or unknown credentials.
func Unauthorized(message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: "invalid_api_key", Message: message}
}

// Forbidden is a 403 with code.
func Forbidden(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusForbidden, Type: TypePermission, Code: code, Message: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 with code.
func NotFound(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Gone is a 410 with code: the object existed and was deleted.
func Gone(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusGone, Type: TypeNotFound, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Conflict is a 409: the request is well formed but the current state
// does not allow it.
func Conflict(code, param, format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Type: TypeConflict, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// TooLarge is a 413 for a body over limit bytes.
func TooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: "request_too_large", Param: "body",
		Message: fmt.Sprintf("request body is larger than the limit of %d bytes", limit)}
}

// MethodNotAllowed is a 405.
func MethodNotAllowed(method, path string) *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Type: TypeInvalidRequest, Code: "method_not_allowed",
		Message: fmt.Sprintf("%s is not supported on %s", method, path)}
}

// Internal is a 500; its message is generic, the cause goes to the log.
func Internal() *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: "internal_error",
		Message: "the server failed to handle the request; retry, and quote the x-request-id header if it persists"}
}

// Body is the JSON body of an error response.
type Body struct {
	Error BodyError `json:"error"`
}

// BodyError is the error object: param and code are null when unset.
type BodyError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// As returns err as an *Error: itself, or the same status, type, code,
// param and message when it is an admission refusal (*admit.Refusal), or
// Internal() when it is neither.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if r, ok := errors.AsType[*admit.Refusal](err); ok {
		return &Error{Status: r.Status, Type: r.Type, Code: r.Code, Param: r.Param, Message: r.Message}
	}
	return Internal()
}

// Write writes err as an OpenAI-shaped error response.
func Write(w http.ResponseWriter, err error) {
	e := As(err)
	b := Body{Error: BodyError{Message: e.Message, Type: e.Type}}
	if e.Param != "" {
		b.Error.Param = &e.Param
	}
	if e.Code != "" {
		b.Error.Code = &e.Code
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(b)
}
