// Package llmbridge owns everything that speaks to Ollama: embeddings,
// chat (streamed), and raw forwarding for the router's drop-in Ollama
// endpoint. It is built on the official client,
// github.com/ollama/ollama/api, and adds what a database needs of it:
// errors sorted into a few sentinels (ErrUnavailable, ErrModelNotFound,
// ErrInvalid, ErrUpstream) and types that do not leak Ollama's.
//
// The router consumes it through small interfaces of its own (Embedder,
// Chatter, Forwarder); Client satisfies them without importing the router.
//
// # Caveats
//
// A Client never retries: callers decide, since a chat that streamed half
// an answer cannot be retried transparently. It holds no state besides its
// HTTP connection pool, so one Client serves any number of goroutines.
//
// Package llmbridge/ollamatest is a fake Ollama server that speaks the real
// wire format, for the tests of this package and of the router.
package llmbridge
