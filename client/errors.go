package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinel errors: every *Error matches exactly one of them with
// errors.Is, chosen by the API's error code (or, for an answer without
// one, by its HTTP status).
var (
	// ErrInvalidArgument: malformed JSON, a bad name, id, limit or cursor (400).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnauthenticated: no API key, or one the router does not know (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the key lacks the role or topic the request needs (403).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotFound: no such topic, context or route (404).
	ErrNotFound = errors.New("not found")
	// ErrMethodNotAllowed: the route exists with another method (405).
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrAlreadyExists: the topic or context id is taken (409).
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: If-Match or If-None-Match did not hold, or an
	// admin operation cannot run in this configuration (412).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrPayloadTooLarge: the request body is over the router's limit (413).
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrUnsupportedMediaType: a body of the wrong Content-Type (415).
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrRateLimited: the key's requests per second are spent (429); see
	// Error.RetryAfter.
	ErrRateLimited = errors.New("rate limited")
	// ErrGone: a change feed's resume point is older than the shards keep
	// (410): list the topic, then Watch from the token in the message.
	ErrGone = errors.New("gone")
	// ErrInternal: the router failed (500).
	ErrInternal = errors.New("internal error")
	// ErrUnavailable: a shard, a quorum or Ollama cannot be reached (503),
	// or the router itself cannot be.
	ErrUnavailable = errors.New("unavailable")
)

// codes maps the API's error codes to the sentinels.
var codes = map[string]error{
	"invalid_argument":       ErrInvalidArgument,
	"unauthenticated":        ErrUnauthenticated,
	"permission_denied":      ErrPermissionDenied,
	"not_found":              ErrNotFound,
	"method_not_allowed":     ErrMethodNotAllowed,
	"already_exists":         ErrAlreadyExists,
	"failed_precondition":    ErrFailedPrecondition,
	"payload_too_large":      ErrPayloadTooLarge,
	"unsupported_media_type": ErrUnsupportedMediaType,
	"rate_limited":           ErrRateLimited,
	"gone":                   ErrGone,
	"internal":               ErrInternal,
	"unavailable":            ErrUnavailable,
}

// statuses maps HTTP statuses to the sentinels, for answers without a
// code (a proxy in front of the router, say).
var statuses = map[int]error{
	http.StatusBadRequest:            ErrInvalidArgument,
	http.StatusUnauthorized:          ErrUnauthenticated,
	http.StatusForbidden:             ErrPermissionDenied,
	http.StatusNotFound:              ErrNotFound,
	http.StatusMethodNotAllowed:      ErrMethodNotAllowed,
	http.StatusConflict:              ErrAlreadyExists,
	http.StatusPreconditionFailed:    ErrFailedPrecondition,
	http.StatusRequestEntityTooLarge: ErrPayloadTooLarge,
	http.StatusUnsupportedMediaType:  ErrUnsupportedMediaType,
	http.StatusTooManyRequests:       ErrRateLimited,
	http.StatusGone:                  ErrGone,
	http.StatusInternalServerError:   ErrInternal,
	http.StatusBadGateway:            ErrUnavailable,
	http.StatusServiceUnavailable:    ErrUnavailable,
	http.StatusGatewayTimeout:        ErrUnavailable,
}

// Error is an error answer of the router:
// {"error":{"code":…,"message":…}} with its HTTP status.
type Error struct {
	StatusCode int    // HTTP status
	Code       string // the API's code, e.g. "not_found"
	Message    string // the router's explanation
	// RetryAfter is how long the router asked to wait (Retry-After), for
	// rate-limited and unavailable answers; zero when it did not say.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("%s (%d): %s", code, e.StatusCode, e.Message)
}

// Is matches the sentinel of the error's code, or of its status.
func (e *Error) Is(target error) bool {
	if s, ok := codes[e.Code]; ok {
		return s == target
	}
	if s, ok := statuses[e.StatusCode]; ok {
		return s == target
	}
	return e.StatusCode >= 500 && target == ErrInternal
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}
