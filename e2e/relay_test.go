package e2e

import (
	"bytes"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
)

// TestRelayKeepsCredentials runs a real router with an auth file in front
// of a fake Ollama and sends every kind of request the drop-in endpoint
// relays, each carrying the client's Go-KVDB key, a cookie, proxy
// credentials and hop-by-hop headers. The model server must see none of
// them, and the answers must still arrive, streams included.
func TestRelayKeepsCredentials(t *testing.T) {
	t.Parallel()
	fake := ollamatest.New(t)
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth.toml")
	keygen := func(name, role string) string {
		out, err := exec.Command(bin.router, "keygen", "-auth-file="+authFile, "-name="+name, "-role="+role, "-topics=relay").Output()
		if err != nil {
			t.Fatalf("router keygen -name=%s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	writer, admin := keygen("app", "writer"), keygen("ops", "admin")
	_, base := startSingle(t, filepath.Join(dir, "kvdb.db"), "-auth-file="+authFile, "-ollama-url="+fake.URL, "-chat-model=chat-model")
	prefix := base + "/ollama/relay/session"

	// What a careless or hostile client might send along. The router must
	// relay none of it: credentials are the router's business, and
	// hop-by-hop headers (RFC 9110 §7.6.1) end at the first hop. X-Hop is
	// hop-by-hop because Connection names it.
	hostile := func(secret string) []string {
		return []string{
			"Authorization", "Bearer " + secret,
			"Cookie", "kvdb_session=" + secret,
			"Proxy-Authorization", "Basic " + secret,
			"Connection", "keep-alive, X-Hop",
			"Keep-Alive", "timeout=5",
			"X-Hop", "hop-value",
			"TE", "trailers",
			"Trailer", "X-Checksum",
			"X-Api-Key", secret,
			"User-Agent", "relay-test/1.0",
			"Accept", "application/json",
		}
	}
	forbidden := []string{"Authorization", "Cookie", "Proxy-Authorization", "Connection", "Keep-Alive",
		"X-Hop", "Te", "Trailer", "Upgrade", "Proxy-Connection", "X-Api-Key"}

	chat := `{"model":"chat-model","messages":[{"role":"user","content":"hello there"}],"stream":%s}`
	cases := []struct {
		method, path, body string
		want               int
		contains           string // in the relayed answer
		stream             bool   // the answer is NDJSON of several lines
		admin              bool   // a path only an admin key may use
		// upstream is the path the model server sees when it is not the
		// relayed path: the OpenAI chat is asked through the provider
		// interface (Ollama's /api/chat, the router's own User-Agent).
		upstream string
		// openai sends the request to the drop-in OpenAI endpoint
		// (path is below its /v1) instead of the Ollama one.
		openai bool
	}{
		{"GET", "/api/version", "", 200, ollamatest.Version, false, false, "", false},
		{"GET", "/api/tags", "", 200, "chat-model", false, false, "", false},
		{"GET", "/api/ps", "", 200, "models", false, false, "", false},
		{"POST", "/api/show", `{"model":"chat-model"}`, 200, "fake", false, false, "", false},
		{"POST", "/api/show", `{"model":"nope"}`, 404, "not found", false, false, "", false},
		{"POST", "/api/generate", `{"model":"chat-model","prompt":"why not"}`, 200, `"done":true`, true, false, "", false},
		{"POST", "/api/generate", `{"model":"chat-model","prompt":"why","stream":false}`, 200, "You said: why", false, false, "", false},
		{"POST", "/api/embed", `{"model":"embed-a","input":"hi"}`, 200, "embeddings", false, false, "", false},
		{"POST", "/api/embeddings", `{"model":"embed-a","prompt":"hi"}`, 200, "embedding", false, false, "", false},
		{"POST", "/api/chat", strings.Replace(chat, "%s", "true", 1), 200, `"done":true`, true, false, "", false},
		{"POST", "/api/chat", strings.Replace(chat, "%s", "false", 1), 200, "hello there", false, false, "", false},
		{"GET", "/v1/models", "", 0, "", false, false, "", false},
		{"POST", "/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":true}`, 200, "data: [DONE]", true, false, "/api/chat", false},
		{"POST", "/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}`, 200, "You said: hi", false, false, "/api/chat", false},
		{"POST", "/v1/embeddings", `{"model":"embed-a","input":"hi"}`, 0, "", false, false, "", false},
		{"DELETE", "/api/delete", `{"model":"chat-model"}`, 0, "", false, true, "", false},
		{"POST", "/api/pull", `{"model":"chat-model","stream":false}`, 0, "", false, true, "", false},
		{"POST", "/", "", 0, "", false, true, "", false},

		// The drop-in OpenAI endpoint, Ollama behind it: chat through the
		// provider interface, the rest relayed to Ollama's own /v1.
		{"POST", "/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":true}`, 200, "data: [DONE]", true, false, "/api/chat", true},
		{"POST", "/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}`, 200, "You said: hi", false, false, "/api/chat", true},
		{"GET", "/models", "", 0, "", false, false, "/v1/models", true},
		{"POST", "/embeddings", `{"model":"embed-a","input":"hi"}`, 0, "", false, false, "/v1/embeddings", true},
	}
	for _, tc := range cases {
		before := len(fake.Requests(""))
		var body any
		if tc.body != "" {
			body = tc.body
		}
		secret := writer
		if tc.admin {
			secret = admin
		}
		url := prefix + tc.path
		if tc.openai {
			url = base + "/openai/relay/session/v1" + tc.path
		}
		r := do(t, tc.method, url, body, hostile(secret)...)
		got := fake.Requests("")
		if len(got) != before+1 {
			t.Errorf("%s = %d %s: the model server saw %d requests, want 1", r.Req, r.Status, r.Raw, len(got)-before)
			continue
		}
		seen := got[len(got)-1]
		wantPath := tc.path
		if tc.upstream != "" {
			wantPath = tc.upstream
		}
		if seen.Method != tc.method || seen.Path != wantPath {
			t.Errorf("%s reached the model server as %s %s", r.Req, seen.Method, seen.Path)
		}
		for _, h := range forbidden {
			if v := seen.Header.Values(h); len(v) > 0 {
				t.Errorf("%s: the model server saw %s: %q, want it dropped", r.Req, h, v)
			}
		}
		for k, vs := range seen.Header {
			for _, v := range vs {
				if strings.Contains(v, secret) {
					t.Errorf("%s: the model server saw the client's secret in %s", r.Req, k)
				}
			}
		}
		if bytes.Contains(seen.Body, []byte(secret)) || strings.Contains(seen.Query, secret) {
			t.Errorf("%s: the model server saw the client's secret in the request", r.Req)
		}
		// End-to-end headers the model server needs still arrive.
		if got := seen.Header.Get("User-Agent"); tc.upstream != "/api/chat" && got != "relay-test/1.0" {
			t.Errorf("%s: the model server saw User-Agent %q, want the client's", r.Req, got)
		}
		if tc.body != "" && seen.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: the model server saw Content-Type %q, want application/json", r.Req, seen.Header.Get("Content-Type"))
		}
		if tc.want == 0 {
			continue // the fake answers as gin does for a route it lacks; any answer is relayed
		}
		if r.Status != tc.want {
			t.Errorf("%s = %d %s, want %d", r.Req, r.Status, r.Raw, tc.want)
		}
		if !bytes.Contains(r.Raw, []byte(tc.contains)) {
			t.Errorf("%s = %s, want it to contain %q", r.Req, r.Raw, tc.contains)
		}
		if lines := bytes.Count(bytes.TrimSpace(r.Raw), []byte("\n")) + 1; tc.stream && lines < 2 {
			t.Errorf("%s answered %d line(s), want a stream of several", r.Req, lines)
		}
		for _, h := range []string{"Connection-Specific", "Keep-Alive", "Trailer", "Upgrade"} {
			if v := r.Header.Get(h); v != "" {
				t.Errorf("%s answered with %s: %q, want no hop-by-hop header relayed", r.Req, h, v)
			}
		}
	}

	// The root is answered by the router itself, as Ollama does; it is not
	// relayed.
	before := len(fake.Requests(""))
	if r := do(t, "GET", prefix+"/", nil, hostile(writer)...); r.Status != http.StatusOK || string(r.Raw) != "Ollama is running" {
		t.Errorf("%s = %d %q, want 200 \"Ollama is running\"", r.Req, r.Status, r.Raw)
	}
	if n := len(fake.Requests("")) - before; n != 0 {
		t.Errorf("GET / reached the model server %d times, want none", n)
	}

	// The key still guards the endpoint: without it nothing is relayed.
	before = len(fake.Requests(""))
	if r := do(t, "GET", prefix+"/api/tags", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("%s without a key = %d, want 401", r.Req, r.Status)
	}
	if n := len(fake.Requests("")) - before; n != 0 {
		t.Errorf("an unauthenticated request reached the model server %d times, want none", n)
	}
}
