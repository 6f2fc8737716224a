package router

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAutoEmbedding(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "docs")

	tc.putContext(t, "docs", "a", map[string]any{"content": map[string]any{"text": "the quick brown fox"}})
	d := documentOf(t, tc, "docs", "a")
	want := ollamatest.Embed("the quick brown fox", 64)
	if d.Metadata.EmbeddingModel != "embed-a" || !slices.Equal(d.Content.Embeddings, want) || d.Metadata.EmbeddingPending {
		t.Errorf("auto-embedded context: model %q, pending %v, %d values; want embed-a, the fake's vector of 64",
			d.Metadata.EmbeddingModel, d.Metadata.EmbeddingPending, len(d.Content.Embeddings))
	}

	// A client's own embeddings are kept, under the model it names.
	calls := len(fake.Requests("/api/embed"))
	tc.putContext(t, "docs", "b", map[string]any{
		"metadata": map[string]any{"embedding_model": "mine"},
		"content":  map[string]any{"text": "x", "embeddings": []float32{1, 2}},
	})
	d = documentOf(t, tc, "docs", "b")
	if d.Metadata.EmbeddingModel != "mine" || !slices.Equal(d.Content.Embeddings, []float32{1, 2}) {
		t.Errorf("client embeddings = %v from %q, want [1 2] from mine", d.Content.Embeddings, d.Metadata.EmbeddingModel)
	}
	if n := len(fake.Requests("/api/embed")); n != calls {
		t.Errorf("Ollama was asked to embed a context that had embeddings (%d calls, want %d)", n, calls)
	}

	// Messages are embedded too, and appending re-embeds.
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/docs/contexts/chat/messages", `{"messages":[{"role":"user","content":"hello"}]}`), 200, "append")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/docs/contexts/chat/messages", `{"messages":[{"role":"assistant","content":"hi there"}]}`), 200, "append")
	d = documentOf(t, tc, "docs", "chat")
	if want := ollamatest.Embed("user: hello\nassistant: hi there", 64); !slices.Equal(d.Content.Embeddings, want) {
		t.Errorf("embedding after two appends does not embed both messages")
	}

	// A context without text is not embedded and not pending.
	tc.putContext(t, "docs", "empty", map[string]any{"metadata": map[string]any{"tags": []string{"x"}}})
	if d := documentOf(t, tc, "docs", "empty"); len(d.Content.Embeddings) != 0 || d.Metadata.EmbeddingPending {
		t.Errorf("empty context: %d values, pending %v; want neither", len(d.Content.Embeddings), d.Metadata.EmbeddingPending)
	}
}

// TestEmbeddingRetried stores contexts while Ollama is down: the writes
// succeed, marked pending; once Ollama is back the retry loop embeds them.
func TestEmbeddingRetried(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "docs")
	fake.SetDown(true)
	for _, id := range []string{"a", "b", "c"} {
		tc.putContext(t, "docs", id, map[string]any{"content": map[string]any{"text": "text of " + id}})
		if d := documentOf(t, tc, "docs", id); !d.Metadata.EmbeddingPending || len(d.Content.Embeddings) != 0 {
			t.Errorf("context %s written while Ollama is down: pending %v, %d values", id, d.Metadata.EmbeddingPending, len(d.Content.Embeddings))
		}
	}
	backlog := tc.router.llm.Metrics().EmbedBacklog
	waitFor(t, "backlog counted", func() bool { return testutil.ToFloat64(backlog) == 3 })
	fake.SetDown(false)
	for _, id := range []string{"a", "b", "c"} {
		waitFor(t, "context "+id+" embedded", func() bool {
			d := documentOf(t, tc, "docs", id)
			return !d.Metadata.EmbeddingPending && slices.Equal(d.Content.Embeddings, ollamatest.Embed("text of "+id, 64))
		})
	}
	waitFor(t, "backlog drained", func() bool { return testutil.ToFloat64(backlog) == 0 })
	// The retried vectors are searchable.
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/docs/search", `{"query":"text of b","k":1}`), 200, "search")
	if res := r.JSON["results"].([]any); len(res) != 1 || res[0].(map[string]any)["metadata"].(map[string]any)["id"] != "b" {
		t.Errorf("search after retry = %s, want b first", r.Raw)
	}
}

// TestEmbeddingSlow: a write does not wait for a slow Ollama past the
// embedding timeout.
func TestEmbeddingSlow(t *testing.T) {
	tc, fake := newLLMCluster(t, 1, func(c *LLMConfig) {
		c.EmbedTimeout = 50 * time.Millisecond
		c.RetryInterval, c.RetryMax = time.Hour, time.Hour // keep the loop out of the way
	})
	tc.createTopic(t, "docs")
	fake.SetDelay(time.Hour)
	tc.putContext(t, "docs", "a", map[string]any{"content": map[string]any{"text": "slow"}})
	if d := documentOf(t, tc, "docs", "a"); !d.Metadata.EmbeddingPending {
		t.Errorf("context written while Ollama hangs: pending %v, want true", d.Metadata.EmbeddingPending)
	}
}

// TestOllamaAbsent: with nothing listening at the Ollama URL every storage
// feature works and the LLM endpoints answer 503 naming the URL.
func TestOllamaAbsent(t *testing.T) {
	url := ollamatest.DeadURL(t)
	cfg := llmConfig(t, url)
	cfg.RetryInterval, cfg.RetryMax = time.Hour, time.Hour
	tc := newTestCluster(t, clusterOpts{llm: cfg})
	tc.createTopic(t, "t")
	tc.putContext(t, "t", "a", map[string]any{"content": map[string]any{"text": "still stored"}})
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/a/messages", `{"messages":[{"role":"user","content":"x"}]}`), 200, "append")
	if d := documentOf(t, tc, "t", "a"); d.Content.Text != "still stored" || !d.Metadata.EmbeddingPending {
		t.Errorf("context = %+v, want it stored and pending", d)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts", nil), 200, "list")
	// A search by vector needs no Ollama.
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/search", `{"embedding":[1,0],"model":"m"}`), 200, "search by vector")

	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/api/v1/topics/t/search", `{"query":"x"}`},
		{"POST", "/api/v1/topics/t/contexts/a/chat", `{"message":"hi"}`},
	} {
		r := call(t, tt.method, tc.URL+tt.path, tt.body)
		if r.Status != 503 || r.errCode() != "unavailable" || !strings.Contains(r.errMessage(), url) {
			t.Errorf("%s %s = %d %s, want 503 unavailable naming %s", tt.method, tt.path, r.Status, r.Raw, url)
		}
	}
	r := call(t, "GET", tc.URL+"/ollama/t/a/api/tags", nil)
	if e, _ := r.JSON["error"].(string); r.Status != 503 || !strings.Contains(e, url) {
		t.Errorf("drop-in GET /api/tags = %d %s, want 503 {\"error\"} naming %s", r.Status, r.Raw, url)
	}
}

func TestLLMOff(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	r := call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/a/chat", `{"message":"hi","model":"m"}`)
	if r.Status != 503 || !strings.Contains(r.errMessage(), "-ollama-url") {
		t.Errorf("chat without a bridge = %d %s, want 503 telling how to configure one", r.Status, r.Raw)
	}
}
