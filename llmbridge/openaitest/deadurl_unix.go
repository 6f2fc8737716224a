//go:build unix

package openaitest

import (
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
)

// DeadURL returns a base URL (ending in /v1) on a loopback port where
// nothing listens until the test ends: see ollamatest.DeadURL.
func DeadURL(t testing.TB) string {
	t.Helper()
	return ollamatest.DeadURL(t) + "/v1"
}
