package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBadQueryEscape: a query string with an invalid percent-encoding is
// a 400 naming the parameter, on every kind of route, in the shape that
// route's clients read; it changes nothing.
func TestBadQueryEscape(t *testing.T) {
	t.Parallel()
	_, base := startSingle(t, filepath.Join(t.TempDir(), "kvdb.db"))
	createTopic(t, base, "q")
	putContext(t, base, "q", "a", map[string]any{"content": map[string]any{"text": "x"}})

	for _, tc := range []struct{ method, path, param string }{
		{"GET", "/api/v1/topics?cursor=%%%garbage", "cursor"},
		{"GET", "/api/v1/topics/q/contexts?limit=2&tag=%zz", "tag"},
		{"GET", "/api/v1/topics/q/contexts/a?x=1&%G1=2", "%G1"},
		{"DELETE", "/api/v1/topics/q/contexts/a?if=%", "if"},
		{"GET", "/api/v1/nope?a=%%", "a"},
		{"GET", "/healthz?probe=%x", "probe"},
		{"GET", "/api/v1/topics?limit=1;cursor=x", "limit"},
	} {
		wantError(t, do(t, tc.method, base+tc.path, nil), 400, "invalid_argument", `"`+tc.param+`"`)
	}
	// Drop-in endpoints answer in their clients' shapes.
	r := do(t, "GET", base+"/ollama/q/a/api/tags?x=%", nil)
	if msg, _ := r.Body["error"].(string); r.Status != 400 || !strings.Contains(msg, `"x"`) {
		t.Errorf("%s = %d %s, want 400 {\"error\":…} naming x", r.Req, r.Status, r.Raw)
	}
	r = do(t, "GET", base+"/openai/q/a/v1/models?after=%q", nil)
	if r.Status != 400 || field(r.Body, "error", "type") != "invalid_request_error" || !strings.Contains(field(r.Body, "error", "message").(string), `"after"`) {
		t.Errorf("%s = %d %s, want 400 in OpenAI's shape naming after", r.Req, r.Status, r.Raw)
	}
	// The DELETE changed nothing; a well-formed query still works.
	mustStatus(t, do(t, "GET", base+"/api/v1/topics/q/contexts/a", nil), 200)
	mustStatus(t, do(t, "GET", base+"/api/v1/topics/q/contexts?limit=1&tag=a%20b", nil), 200)
}

// TestHeaderLimit: a request header just under the router's 64 KB limit
// is served; one over it is a 431 in the API's error shape (or the drop-in
// endpoint's), and one far over is refused by net/http itself.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	_, base := startSingle(t, filepath.Join(t.TempDir(), "kvdb.db"))
	pad := func(n int) []string { return []string{"X-Pad", strings.Repeat("a", n)} }

	mustStatus(t, do(t, "GET", base+"/api/v1/topics", nil, pad(60<<10)...), 200)
	wantError(t, do(t, "GET", base+"/api/v1/topics", nil, pad(65<<10)...), 431, "header_too_large", "65536")
	wantError(t, do(t, "GET", base+"/api/v1/nope", nil, pad(100<<10)...), 431, "header_too_large")
	r := do(t, "GET", base+"/openai/t/c/v1/models", nil, pad(65<<10)...)
	if r.Status != 431 || field(r.Body, "error", "code") != "header_too_large" {
		t.Errorf("%s = %d %s, want 431 in OpenAI's shape", r.Req, r.Status, r.Raw)
	}
	// Far over, net/http's own limit (set at twice the API's, not its
	// default 1 MB) refuses it before the router reads it: plain text.
	if r := do(t, "GET", base+"/api/v1/topics", nil, pad(1<<20)...); r.Status != 431 || r.Body != nil {
		t.Errorf("%s with a 1 MB header = %d %.80s, want net/http's plain 431", r.Req, r.Status, r.Raw)
	}
}
