// Package llmbridge owns everything that speaks to a model server:
// embeddings, chat (streamed), the model list, and raw forwarding for the
// router's drop-in endpoints. It speaks two APIs, each through its
// official client:
//
//   - Ollama's, with Client (github.com/ollama/ollama/api);
//   - OpenAI's, with OpenAI (github.com/openai/openai-go/v3), for any
//     OpenAI-compatible server: OpenAI, vLLM, llama.cpp's server, LM
//     Studio, Ollama's own /v1.
//
// Both implement Provider, and Open picks one from a Config (provider,
// URL, API key), so the router sees one small interface and never either
// API. Both add what a database needs of a client: errors sorted into a
// few sentinels (ErrUnavailable, ErrModelNotFound, ErrInvalid,
// ErrUpstream) that name the server, and types that leak neither API's
// (Message, ChatRequest, ChatChunk, Embedding). Token counts come from the
// server: Ollama's prompt_eval_count and eval_count, OpenAI's usage (asked
// for with stream_options.include_usage).
//
// The router consumes it through small interfaces of its own (Embedder,
// Chatter, Forwarder); the clients satisfy them without importing the
// router.
//
// # Credentials
//
// A provider authenticates with its own API key only (OpenAI: sent as
// "Authorization: Bearer"; Ollama takes none). Do drops the credentials of
// the request it relays (Authorization, Proxy-Authorization, Cookie,
// X-Api-Key, Api-Key): on the router they are the caller's Go-KVDB key or
// session, which a model server must never see. The key never appears in
// an error: a 401 or 403 is reported without the server's message, which
// may quote it, and any message quoting it has it replaced.
//
// # Caveats
//
// A provider never retries (the OpenAI client is built with retries off):
// callers decide, since a chat that streamed half an answer cannot be
// retried transparently. It holds no state besides its HTTP connection
// pool, one per provider, so one serves any number of goroutines.
//
// A streamed answer is complete only when its end arrives: Ollama's done
// line, OpenAI's "data: [DONE]". A stream that stops before, even cleanly
// at the HTTP level (a proxy giving up), is ErrUnavailable, and the Done
// chunk is never sent for it.
//
// The OpenAI client reads nothing from the environment (no OPENAI_API_KEY,
// OPENAI_BASE_URL): its URL and key are those it is given. Its base URL
// must end in /v1, and Do's paths are relative to it ("/models").
// ChatRequest.Options use Ollama's names; those with an OpenAI counterpart
// are mapped (see OpenAI.Chat), any other is ErrInvalid.
//
// Packages llmbridge/ollamatest and llmbridge/openaitest are fake servers
// that speak the real wire formats and answer alike, for the tests of this
// package and of the router.
package llmbridge
