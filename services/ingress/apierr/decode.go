package apierr

import (
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/terroir-ai/terroir/pkg/admit"
)

// Decode reads r's body, at most limit bytes, strictly into v: malformed
// JSON, trailing data, wrong types and unknown fields are 400 errors that
// name the field; a body over limit is a 413.
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	raw, err := ReadBody(w, r, limit)
	if err != nil {
		return err
	}
	return DecodeBytes(raw, v)
}

// ReadBody reads r's body, at most limit bytes; more is a 413.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, TooLarge(limit)
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil, &Error{Status: http.StatusRequestTimeout, Type: TypeInvalidRequest, Code: "request_timeout", Param: "body",
				Message: "the request body did not arrive within the server's read timeout; send it at once"}
		}
		return nil, Invalid("body", "reading the request body failed")
	}
	return raw, nil
}

// DecodeBytes is Decode on a body already read (admit.Decode, answered
// as an *Error).
func DecodeBytes(raw []byte, v any) error {
	if err := admit.Decode(raw, v); err != nil {
		return As(err)
	}
	return nil
}
