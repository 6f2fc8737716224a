package router

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/authfile/authfiletest"
)

// withRates rewrites an auth file with per-role and per-key rate limits.
func withRates(t testing.TB, file string, roles map[authfile.Role]int, keys map[string]int) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := authfile.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.RoleRateLimits = roles
	for i := range f.Keys {
		if n, ok := keys[f.Keys[i].Name]; ok {
			f.Keys[i].RateLimit = &n
		}
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(f); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rates.toml")
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// burst sends n GETs and returns their statuses.
func burst(t testing.TB, url string, n int, header ...string) []int {
	t.Helper()
	var out []int
	for range n {
		r := call(t, "GET", url, nil, header...)
		out = append(out, r.Status)
		if r.Status == 429 {
			if r.errCode() != "rate_limited" || r.Header.Get("Retry-After") == "" {
				t.Errorf("429 = %s, Retry-After %q; want code rate_limited and Retry-After", r.Raw, r.Header.Get("Retry-After"))
			}
		}
	}
	return out
}

func count(statuses []int, code int) int {
	n := 0
	for _, s := range statuses {
		if s == code {
			n++
		}
	}
	return n
}

func TestRateLimitPerKey(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	// -rate-limit 3; readers 2; app unlimited; team-a 1.
	file = withRates(t, file, map[authfile.Role]int{authfile.RoleReader: 2}, map[string]int{"app": 0, "team-a": 1})
	tc := newSecureCluster(t, 1, func(c *Config) {
		c.Security.Auth = authfiletest.Load(t, file)
		c.Security.RateLimit = 3
	})
	url := tc.URL + "/api/v1/topics"
	for _, tt := range []struct {
		key  string
		want int // requests that pass out of 8 sent at once
	}{
		{"root", 3},   // the default
		{"viewer", 2}, // its role's
		{"team-a", 1}, // its own
		{"app", 8},    // its own: none
	} {
		got := burst(t, url, 8, bearerHeader(secrets[tt.key])...)
		if count(got, 200) != tt.want || count(got, 429) != 8-tt.want {
			t.Errorf("%s: statuses %v, want %d × 200 then 429", tt.key, got, tt.want)
		}
	}
	// Probes are never limited.
	for range 10 {
		must(t, call(t, "GET", tc.URL+"/healthz", nil), 200, "healthz under the limit")
	}
}

func TestRateLimitPerIPWhenOpen(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.RateLimit = 2 })
	got := burst(t, tc.URL+"/api/v1/topics", 5)
	if count(got, 200) != 2 || count(got, 429) != 3 {
		t.Errorf("statuses %v, want 2 × 200 then 429", got)
	}
}

// slowPut starts a PUT whose body arrives only when the returned writer
// is written and closed; the answer comes on the channel.
func slowPut(t testing.TB, url string) (*io.PipeWriter, <-chan *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest("PUT", url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- resp
	}()
	return pw, done
}

func TestConcurrencyCap(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.MaxConcurrent = 1 })
	tc.createTopic(t, "t")
	pw, done := slowPut(t, tc.URL+"/api/v1/topics/t/contexts/slow")
	pw.Write([]byte(`{"content":`)) // the handler is now reading the body
	var r response
	waitFor(t, "the cap refuses a second request", func() bool {
		r = call(t, "GET", tc.URL+"/api/v1/topics/t", nil)
		return r.Status == 503
	})
	if r.errCode() != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Errorf("over the cap = %s, Retry-After %q; want unavailable with Retry-After", r.Raw, r.Header.Get("Retry-After"))
	}
	must(t, call(t, "GET", tc.URL+"/healthz", nil), 200, "healthz over the cap")
	pw.Write([]byte(`{"text":"done"}}`))
	pw.Close()
	if resp := <-done; resp == nil || resp.StatusCode != 201 {
		t.Fatalf("the slow PUT = %v, want 201", resp)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t", nil), 200, "after the slow request ended")
}

func TestSlowBodyTimesOut(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.BodyTimeout = 200 * time.Millisecond })
	tc.createTopic(t, "t")
	pw, done := slowPut(t, tc.URL+"/api/v1/topics/t/contexts/slow")
	defer pw.Close()
	pw.Write([]byte(`{"content":{"text":"`))
	go func() {
		// trickle a byte now and then, forever (until the test ends)
		for range 200 {
			time.Sleep(50 * time.Millisecond)
			if _, err := pw.Write([]byte("a")); err != nil {
				return
			}
		}
	}()
	select {
	case resp := <-done:
		if resp != nil && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
			t.Errorf("trickled body = %d, want a 4xx or a closed connection", resp.StatusCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a trickled body held its request for 10 s")
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/slow", nil), 404, "nothing stored from the slow body")
}

// TestStreamOutlivesBodyTimeout: the body deadline is lifted once the body
// is read, so an answer streamed for longer than it runs to its end.
func TestStreamOutlivesBodyTimeout(t *testing.T) {
	fake := ollamatest.New(t)
	tc := newSecureCluster(t, 1, func(c *Config) {
		c.LLM = llmConfig(t, fake.URL)
		c.Security.BodyTimeout = 100 * time.Millisecond
	})
	fake.SetGap(80 * time.Millisecond) // 5 pieces: 400 ms, 4× the body timeout
	tc.createTopic(t, "t")
	resp := postStream(t, context.Background(), tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"one two three","stream":true}`)
	defer resp.Body.Close()
	lines := readLines(t, resp.Body)
	if len(lines) != 6 || lines[5]["done"] != true {
		t.Fatalf("stream = %v, want 5 pieces and a done line", lines)
	}
	if got := messagesOf(t, tc, "t", "c"); len(got) != 2 {
		t.Errorf("stored %d messages, want 2", len(got))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
}
