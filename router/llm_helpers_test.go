package router

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// TopK lets the fault switch cover searches too.
func (f *faultyShard) TopK(ctx context.Context, b string, q storage.TopKQuery) (storage.TopKResult, error) {
	if f.down.Load() {
		return storage.TopKResult{}, errDown
	}
	return f.Shard.(placement.Searcher).TopK(ctx, b, q)
}

// KeywordStats and Keyword let the fault switch cover keyword searches.
func (f *faultyShard) KeywordStats(ctx context.Context, b string, prefix []byte, terms []string) (storage.KeywordStats, error) {
	if f.down.Load() {
		return storage.KeywordStats{}, errDown
	}
	return f.Shard.(placement.KeywordSearcher).KeywordStats(ctx, b, prefix, terms)
}

func (f *faultyShard) Keyword(ctx context.Context, b string, q storage.KeywordQuery) (storage.TopKResult, error) {
	if f.down.Load() {
		return storage.TopKResult{}, errDown
	}
	return f.Shard.(placement.KeywordSearcher).Keyword(ctx, b, q)
}

// llmConfig is a bridge to the Ollama at url with the fake's models, a
// fast retry loop, and a short embedding timeout.
func llmConfig(t testing.TB, url string) LLMConfig {
	t.Helper()
	c, err := llmbridge.New(url, llmbridge.Options{})
	if err != nil {
		t.Fatalf("llmbridge.New(%q) = %v", url, err)
	}
	return LLMConfig{
		Client:        c,
		EmbedModel:    "embed-a",
		ChatModel:     "chat-model",
		SummaryModel:  "summary-model",
		EmbedTimeout:  2 * time.Second,
		RetryInterval: 20 * time.Millisecond,
		RetryMax:      100 * time.Millisecond,
	}
}

// newLLMCluster is a test cluster of shards in front of a fake Ollama;
// tweak, when set, changes the bridge's configuration.
func newLLMCluster(t testing.TB, shards int, tweak func(*LLMConfig)) (*testCluster, *ollamatest.Server) {
	t.Helper()
	fake := ollamatest.New(t)
	cfg := llmConfig(t, fake.URL)
	if tweak != nil {
		tweak(&cfg)
	}
	return newTestCluster(t, clusterOpts{shards: shards, llm: cfg}), fake
}

// messagesOf returns the stored messages of a context.
func messagesOf(t testing.TB, tc *testCluster, topic, id string) []schema.Message {
	t.Helper()
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/"+topic+"/contexts/"+id+"/messages", nil), 200, "GET messages")
	var out struct{ Messages []schema.Message }
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("messages answer %s: %v", r.Raw, err)
	}
	return unseq(t, out.Messages, 1)
}

// unseq checks that msgs carry the seqs first, first+1, … and returns them
// without, to compare with what was written.
func unseq(t testing.TB, msgs []schema.Message, first uint64) []schema.Message {
	t.Helper()
	out := make([]schema.Message, len(msgs))
	for i, m := range msgs {
		if m.Seq != first+uint64(i) {
			t.Errorf("message %d has seq %d, want %d", i, m.Seq, first+uint64(i))
		}
		m.Seq = 0
		out[i] = m
	}
	return out
}

// documentOf reads a context through the API.
func documentOf(t testing.TB, tc *testCluster, topic, id string) schema.Document {
	t.Helper()
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/"+topic+"/contexts/"+id, nil), 200, "GET context "+id)
	var d schema.Document
	if err := json.Unmarshal(r.Raw, &d); err != nil {
		t.Fatalf("context %s: %v", r.Raw, err)
	}
	return d
}

// postStream posts body and returns the response, whose body the caller
// reads and closes.
func postStream(t testing.TB, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// readLines reads an NDJSON body to its end, line by line.
func readLines(t testing.TB, body io.Reader) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func storageTopK(q []float32, k int) storage.TopKQuery {
	return storage.TopKQuery{Query: q, K: k, Model: "\x00none"}
}
