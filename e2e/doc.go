// Package e2e holds Go-KVDB's end-to-end tests: they build the router and
// storaged binaries once, start them as real processes on free loopback
// ports (three storage daemons behind a router, or a router alone in
// single-node mode), talk to them over HTTP as a client would, and stop them
// with SIGTERM, a bounded wait, then SIGKILL. The package has no non-test
// code; it runs as part of `go test ./...`.
package e2e
