// Package client is the Go client of Go-KVDB's REST API: one typed method
// per endpoint of the router (topics, contexts, messages, search, chat,
// cluster and admin), each taking a context.Context.
//
// # Basics
//
// New returns a Client for a router's base URL; WithAPIKey sends an API
// key (Authorization: Bearer) when the router requires one. A Client is
// safe for concurrent use.
//
// Every error the router answers is an *Error carrying its HTTP status,
// its code and its message, and matches one sentinel with errors.Is:
//
//	if errors.Is(err, client.ErrNotFound) { … }
//
// A router that cannot be reached matches ErrUnavailable too, like the
// router's own 503.
//
// Contexts iterates over every context of a topic, following the pages'
// cursors; ChatStream iterates over the pieces of a streamed answer.
//
// Backup writes an archive of the whole cluster (see package backup for
// its format); Restore verifies an archive completely, then replays its
// records in batches. Both are what kvdbctl backup and restore run.
//
// # Caveats
//
// The drop-in Ollama endpoint (/ollama/{topic}/{context}/…) speaks
// Ollama's API, not this one: point an Ollama client at it instead.
package client
