package llmbridge

import "errors"

// Sentinel errors. Every error a Client returns wraps one of them, or the
// caller's context error (context.Canceled, context.DeadlineExceeded) when
// the caller gave up first.
var (
	// ErrUnavailable is returned when Ollama cannot be reached, drops the
	// connection, or answers 502, 503 or 504.
	ErrUnavailable = errors.New("ollama unavailable")

	// ErrModelNotFound is returned when Ollama answers 404 for a model: it
	// has not been pulled.
	ErrModelNotFound = errors.New("model not found")

	// ErrInvalid is returned when Ollama refuses the request (400), for
	// example an embedding model asked to chat.
	ErrInvalid = errors.New("request refused by ollama")

	// ErrUpstream is returned for any other failure Ollama reports: a 500,
	// an error line in the middle of a stream, an answer that cannot be
	// decoded.
	ErrUpstream = errors.New("ollama error")
)
