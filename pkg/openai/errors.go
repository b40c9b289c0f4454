package openai

import (
	"net/http"

	"github.com/terroir-ai/terroir/pkg/events"
)

// errorKinds maps the kind of a failed result to the HTTP status and the
// OpenAI error type an app is answered with.
var errorKinds = map[events.ErrorKind]struct {
	status int
	typ    string
}{
	events.ErrorInvalidRequest:  {http.StatusBadRequest, "invalid_request_error"},
	events.ErrorUnauthorized:    {http.StatusUnauthorized, "authentication_error"},
	events.ErrorNotFound:        {http.StatusNotFound, "not_found_error"},
	events.ErrorRateLimited:     {http.StatusTooManyRequests, "rate_limit_error"},
	events.ErrorContentFiltered: {http.StatusBadRequest, "invalid_request_error"},
	events.ErrorUpstreamFailed:  {http.StatusBadGateway, "server_error"},
	events.ErrorTimeout:         {http.StatusGatewayTimeout, "server_error"},
	events.ErrorInternal:        {http.StatusInternalServerError, "server_error"},
}

// ErrorStatus is the HTTP status and OpenAI error type of a result that
// failed with kind: what the real-time API answers, and what a batch
// line's response carries. An unknown kind is a 500 server_error.
func ErrorStatus(kind events.ErrorKind) (status int, typ string) {
	if k, ok := errorKinds[kind]; ok {
		return k.status, k.typ
	}
	return http.StatusInternalServerError, "server_error"
}
