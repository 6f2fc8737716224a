package llmbridge

import "errors"

// Sentinel errors. Every error a Provider returns wraps one of them, or the
// caller's context error (context.Canceled, context.DeadlineExceeded) when
// the caller gave up first. The error's text names the server, never the
// API key.
var (
	// ErrUnavailable is returned when the model server cannot be reached,
	// drops the connection, ends a streamed answer before its end (Ollama's
	// done line, OpenAI's "data: [DONE]"), or answers 502, 503 or 504 (and,
	// from an OpenAI-compatible server, 408 or 429: it is busy or out of
	// quota, which the caller cannot fix either).
	ErrUnavailable = errors.New("model server unavailable")

	// ErrModelNotFound is returned when the server answers 404 for a model
	// (or an OpenAI error with code model_not_found): Ollama has not
	// pulled it, or the OpenAI-compatible server does not serve it.
	ErrModelNotFound = errors.New("model not found")

	// ErrInvalid is returned when the server refuses the request (400 and
	// the other 4xx not named above), for example an embedding model asked
	// to chat, or when the request cannot be put into the provider's terms
	// (an option or role it does not have).
	ErrInvalid = errors.New("request refused by the model server")

	// ErrUpstream is returned for any other failure the server reports: a
	// 500, an error in the middle of a stream, an answer that cannot be
	// decoded, and an OpenAI-compatible server refusing the router's own
	// API key (401, 403): a fault of the router's configuration, not of
	// the caller's request.
	ErrUpstream = errors.New("model server error")
)
