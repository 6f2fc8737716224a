package apierr

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/go-kvdb/go-kvdb/storage"
)

// Code is an API error code, as it appears in {"error":{"code":…}}.
type Code string

// The API's error codes. Each has one HTTP status (see statusOf).
const (
	CodeInvalidArgument      Code = "invalid_argument"
	CodeNotFound             Code = "not_found"
	CodeAlreadyExists        Code = "already_exists"
	CodeFailedPrecondition   Code = "failed_precondition"
	CodePayloadTooLarge      Code = "payload_too_large"
	CodeUnsupportedMediaType Code = "unsupported_media_type"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeUnauthenticated      Code = "unauthenticated"   // no API key, or one the router does not know
	CodePermissionDenied     Code = "permission_denied" // a key without the role or topic the request needs
	CodeRateLimited          Code = "rate_limited"      // the key's (or client's) requests per second are spent
	CodeHeaderTooLarge       Code = "header_too_large"  // the request's header is over the router's limit
	CodeGone                 Code = "gone"              // a resume point the server no longer holds
	CodeUnavailable          Code = "unavailable"
	CodeInternal             Code = "internal"
)

// statusOf is the one table from error code to HTTP status.
var statusOf = map[Code]int{
	CodeInvalidArgument:      http.StatusBadRequest,
	CodeNotFound:             http.StatusNotFound,
	CodeAlreadyExists:        http.StatusConflict,
	CodeFailedPrecondition:   http.StatusPreconditionFailed,
	CodePayloadTooLarge:      http.StatusRequestEntityTooLarge,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeUnauthenticated:      http.StatusUnauthorized,
	CodePermissionDenied:     http.StatusForbidden,
	CodeRateLimited:          http.StatusTooManyRequests,
	CodeHeaderTooLarge:       http.StatusRequestHeaderFieldsTooLarge,
	CodeGone:                 http.StatusGone,
	CodeUnavailable:          http.StatusServiceUnavailable,
	CodeInternal:             http.StatusInternalServerError,
}

// Error is an error the API reports to its client with a code.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, if any; logged for 5xx, never sent
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Status is the HTTP status for the error's code.
func (e *Error) Status() int {
	if s, ok := statusOf[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FromStorage turns an error from a shard into an API error: an unreachable
// shard is 503 naming the shard, never a 404 or a silent gap.
func FromStorage(what string, err error) *Error {
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrClosed):
		return &Error{Code: CodeUnavailable, Message: what + ": " + err.Error(), Err: err}
	case errors.Is(err, storage.ErrUnauthenticated):
		return &Error{Code: CodeInternal, Message: what + ": the storage daemon refused this router's cluster token (KVDB_CLUSTER_TOKEN, -cluster-token-file)", Err: err}
	case errors.Is(err, storage.ErrInvalid):
		// The router validates before it writes, so a shard refusing a
		// request is our bug, not the client's.
		return &Error{Code: CodeInternal, Message: what + ": internal error", Err: err}
	default:
		return &Error{Code: CodeInternal, Message: what + ": internal error", Err: err}
	}
}
