package httpapi

import (
	"fmt"
	"net/http"
	"testing"
)

// TestPickHeaders checks each of the relay's header rules on its own: the
// allow list, the Connection header's hop-by-hop names, and the secret.
func TestPickHeaders(t *testing.T) {
	h := http.Header{
		"Content-Type":  {"application/json"},
		"Accept":        {"application/x-ndjson"},
		"User-Agent":    {"ollama/0.17 (carrying kvdb_abc_secret)"},
		"Authorization": {"Bearer kvdb_abc_secret"},
		"Connection":    {"keep-alive, Accept"},
	}
	for _, tc := range []struct {
		name   string
		allow  []string
		secret string
		want   http.Header
	}{
		{"allow list", []string{"Content-Type"}, "", http.Header{"Content-Type": {"application/json"}}},
		{"named in Connection", []string{"Content-Type", "Accept"}, "", http.Header{"Content-Type": {"application/json"}}},
		{"carries the secret", []string{"Content-Type", "User-Agent"}, "kvdb_abc_secret", http.Header{"Content-Type": {"application/json"}}},
		{"no secret given", []string{"User-Agent"}, "", http.Header{"User-Agent": h["User-Agent"]}},
	} {
		if got := pickHeaders(h, tc.allow, tc.secret); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: pickHeaders(%v, %q) = %v, want %v", tc.name, tc.allow, tc.secret, got, tc.want)
		}
	}
	if got := pickHeaders(h, forwardHeaders, ""); got.Get("Authorization") != "" {
		t.Errorf("pickHeaders(forwardHeaders) relays Authorization %q", got.Get("Authorization"))
	}
}
