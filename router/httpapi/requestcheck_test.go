package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBadQuery(t *testing.T) {
	for _, tc := range []struct {
		raw, name string // name "" when the query is good
	}{
		{"", ""},
		{"limit=10&cursor=abc%3D", ""},
		{"tag=a+b&&x", ""},
		{"cursor=%%%garbage", "cursor"},
		{"limit=1&tag=%zz", "tag"},
		{"%G1=2", "%G1"},
		{"a%20b=%", "a b"},
		{"limit=1;cursor=x", "limit"},
	} {
		name, err := badQuery(tc.raw)
		if name != tc.name || (err != nil) != (tc.name != "") {
			t.Errorf("badQuery(%q) = %q, %v; want %q", tc.raw, name, err, tc.name)
		}
	}
}

// TestHeaderBytes: the measure counts what came on the wire, within the
// few bytes net/http's own count differs by.
func TestHeaderBytes(t *testing.T) {
	wire := "GET /api/v1/topics?limit=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Pad: " + strings.Repeat("a", 1000) + "\r\nAccept: */*\r\n"
	req := httptest.NewRequest(http.MethodGet, "/api/v1/topics?limit=1", nil)
	req.Host = "127.0.0.1:8080"
	req.Header.Set("X-Pad", strings.Repeat("a", 1000))
	req.Header.Set("Accept", "*/*")
	if got := headerBytes(req); got != len(wire) {
		t.Errorf("headerBytes = %d, want %d", got, len(wire))
	}
}

func TestOpenAIShaped(t *testing.T) {
	for p, want := range map[string]bool{
		"/openai/t/c/v1/chat/completions": true,
		"/openai/t/c/v1/nope":             true,
		"/ollama/t/c/v1/chat/completions": true,
		"/ollama/t/c/v1":                  true,
		"/ollama/t/c/api/chat":            false,
		"/ollama/t/v1":                    false,
		"/api/v1/topics":                  false,
	} {
		if got := openaiShaped(p); got != want {
			t.Errorf("openaiShaped(%q) = %v, want %v", p, got, want)
		}
	}
}

// BenchmarkRequestCheck measures the checks every request pays (header
// measure and query check) beside the anchor of one url.Query parse, which
// a handler reading a parameter pays anyway.
func BenchmarkRequestCheck(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/api/v1/topics/docs/contexts?limit=100&cursor=eyJrIjoiYWJjIn0%3D&tag=a+b", nil)
	req.Header.Set("Authorization", "Bearer kvdb_0123456789abcdef0123456789abcdef")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "kvdb-go/1.0")
	b.Run("anchor=url.Query", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = req.URL.Query()
		}
	})
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if headerBytes(req) > MaxHeaderBytes {
				b.Fatal("over")
			}
			if _, err := badQuery(req.URL.RawQuery); err != nil {
				b.Fatal(err)
			}
		}
	})
}
