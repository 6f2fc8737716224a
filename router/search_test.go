package router

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

type searchResult struct {
	Metadata schema.Metadata `json:"metadata"`
	Content  *schema.Content `json:"content"`
	Score    float64         `json:"score"`
}

func searchFor(t testing.TB, tc *testCluster, topic, query string, body any) []searchResult {
	t.Helper()
	res, _ := searchExact(t, tc, topic, query, body)
	return res
}

// searchExact is searchFor that also returns the answer's "exact".
func searchExact(t testing.TB, tc *testCluster, topic, query string, body any) ([]searchResult, bool) {
	t.Helper()
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/"+topic+"/search"+query, body), 200, "search")
	var out struct {
		Results []searchResult
		Exact   *bool
	}
	if err := json.Unmarshal(r.Raw, &out); err != nil || out.Exact == nil {
		t.Fatalf("search answer %s: %v; want results and exact", r.Raw, err)
	}
	return out.Results, *out.Exact
}

// waitIndexes waits until every shard's vector index is ready.
func waitIndexes(t testing.TB, tc *testCluster) {
	t.Helper()
	waitFor(t, "vector indexes ready", func() bool {
		for _, s := range tc.stores {
			if !s.VectorIndexStats().Ready {
				return false
			}
		}
		return true
	})
}

func cosine32(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

// TestSearchMatchesBruteForce stores contexts over three shards, embedded
// by the fake Ollama, and checks that every search answers what ranking
// all of them by hand does.
func TestSearchMatchesBruteForce(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "kb")
	tc.createTopic(t, "other")
	words := strings.Fields("apple banana cherry river mountain ocean forest desert city village robot engine piano violin summer winter")
	rng := rand.New(rand.NewPCG(7, 7))
	texts := map[string]string{}
	tags := map[string][]string{}
	for i := range 60 {
		var ws []string
		for range 3 + rng.IntN(5) {
			ws = append(ws, words[rng.IntN(len(words))])
		}
		id := fmt.Sprintf("ctx-%02d", i)
		texts[id] = strings.Join(ws, " ")
		tags[id] = []string{"all"}
		if i%3 == 0 {
			tags[id] = append(tags[id], "third")
		}
		tc.putContext(t, "kb", id, map[string]any{"metadata": map[string]any{"tags": tags[id]}, "content": map[string]any{"text": texts[id]}})
	}
	tc.putContext(t, "other", "elsewhere", map[string]any{"content": map[string]any{"text": "apple banana cherry"}})
	// Spread over every shard, or the test proves little.
	for i := range tc.stores {
		if countVectors(t, tc, i) == 0 {
			t.Fatalf("shard %d holds no vectors", i)
		}
	}
	// One rewritten and one deleted context: their old vectors must not
	// count.
	texts["ctx-05"] = "piano violin piano"
	tc.putContext(t, "kb", "ctx-05", map[string]any{"metadata": map[string]any{"tags": tags["ctx-05"]}, "content": map[string]any{"text": texts["ctx-05"]}})
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/kb/contexts/ctx-07", nil), 204, "delete")
	delete(texts, "ctx-07")

	brute := func(query string, k int, tag string) []searchResult {
		q := ollamatest.Embed(query, 64)
		var out []searchResult
		for id, text := range texts {
			if tag != "" && !slices.Contains(tags[id], tag) {
				continue
			}
			out = append(out, searchResult{Metadata: schema.Metadata{ID: id}, Score: cosine32(q, ollamatest.Embed(text, 64))})
		}
		slices.SortFunc(out, func(a, b searchResult) int {
			if a.Score != b.Score {
				if a.Score > b.Score {
					return -1
				}
				return 1
			}
			return strings.Compare(a.Metadata.ID, b.Metadata.ID)
		})
		return out[:min(k, len(out))]
	}
	for _, tt := range []struct {
		query string
		k     int
		tag   string
	}{
		{"apple river", 5, ""},
		{"piano violin", 10, ""},
		{"desert robot engine", 1, ""},
		{"summer winter forest", 100, ""},
		{"ocean", 7, "third"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			body := map[string]any{"query": tt.query, "k": tt.k, "mode": "vector"}
			if tt.tag != "" {
				body["tags"] = []string{tt.tag}
			}
			got := searchFor(t, tc, "kb", "", body)
			want := brute(tt.query, tt.k, tt.tag)
			if len(got) != len(want) {
				t.Fatalf("search(%q, k=%d) returned %d results, want %d", tt.query, tt.k, len(got), len(want))
			}
			for i := range want {
				// Equal scores may come in either order; the scores must match.
				if math.Abs(got[i].Score-want[i].Score) > 1e-5 {
					t.Errorf("result %d = %s %.6f, want %s %.6f", i, got[i].Metadata.ID, got[i].Score, want[i].Metadata.ID, want[i].Score)
				}
				if got[i].Content != nil {
					t.Errorf("result %d has content without include=content", i)
				}
				if got[i].Metadata.ID == "elsewhere" {
					t.Errorf("a context of another topic was found")
				}
			}
		})
	}
	// The shards answered from their indexes; a request may ask for the
	// exact scan, and gets the same answer, marked exact.
	waitIndexes(t, tc)
	for _, exact := range []bool{false, true} {
		body := map[string]any{"query": "apple river", "k": 5, "mode": "vector"}
		if exact {
			body["exact"] = true
		}
		got, said := searchExact(t, tc, "kb", "", body)
		want := brute("apple river", 5, "")
		if said != exact || len(got) != len(want) {
			t.Errorf("search(exact %v) = %d results, exact %v; want %d, exact %v", exact, len(got), said, len(want), exact)
			continue
		}
		for i := range want {
			if math.Abs(got[i].Score-want[i].Score) > 1e-5 {
				t.Errorf("search(exact %v) result %d = %s %.6f, want %s %.6f", exact, i, got[i].Metadata.ID, got[i].Score, want[i].Metadata.ID, want[i].Score)
			}
		}
	}
	got := searchFor(t, tc, "kb", "?include=content", map[string]any{"query": "piano violin piano", "k": 1, "mode": "vector"})
	if len(got) != 1 || got[0].Metadata.ID != "ctx-05" || got[0].Content == nil || got[0].Content.Text != texts["ctx-05"] || math.Abs(got[0].Score-1) > 1e-6 {
		t.Errorf("search for the rewritten text = %+v, want ctx-05 with its content, score 1", got)
	}
}

// countVectors counts the live vectors a shard holds.
func countVectors(t testing.TB, tc *testCluster, shard int) int {
	t.Helper()
	res, err := tc.stores[shard].TopK(t.Context(), schema.BucketVectors, storageTopK([]float32{1}, 1))
	if err != nil {
		t.Fatal(err)
	}
	return res.Scanned
}

// TestSearchModelsAndDimensions stores client embeddings under two models
// and two dimensions: a search compares one model and one dimension only.
func TestSearchModelsAndDimensions(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, func(c *LLMConfig) { c.EmbedModel = "" })
	tc.createTopic(t, "v")
	put := func(id, model string, emb []float32) {
		tc.putContext(t, "v", id, map[string]any{"metadata": map[string]any{"embedding_model": model}, "content": map[string]any{"embeddings": emb}})
	}
	put("m3-a", "m", []float32{1, 0, 0})
	put("m3-b", "m", []float32{0.9, 0.1, 0})
	put("m2-a", "m", []float32{1, 0})
	put("n3-a", "n", []float32{1, 0, 0})
	put("anon", "", []float32{1, 0, 0})

	ids := func(rs []searchResult) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Metadata.ID)
		}
		return out
	}
	for _, tt := range []struct {
		body string
		want []string
	}{
		{`{"embedding":[1,0,0],"model":"m"}`, []string{"m3-a", "m3-b"}},
		{`{"embedding":[1,0],"model":"m"}`, []string{"m2-a"}},
		{`{"embedding":[1,0,0],"model":"n"}`, []string{"n3-a"}},
		{`{"embedding":[1,0,0]}`, []string{"anon"}},
		{`{"embedding":[0,1,0],"model":"m","k":1}`, []string{"m3-b"}},
	} {
		if got := ids(searchFor(t, tc, "v", "", tt.body)); !slices.Equal(got, tt.want) {
			t.Errorf("search %s = %v, want %v", tt.body, got, tt.want)
		}
	}
	r := call(t, "POST", tc.URL+"/api/v1/topics/v/search", `{"embedding":[1,0,0,0],"model":"m"}`)
	if r.Status != 400 || !strings.Contains(r.errMessage(), "dimensions") {
		t.Errorf("search with a 4-dimension query = %d %s, want 400 about dimensions", r.Status, r.Raw)
	}
	if rs := searchFor(t, tc, "v", "", `{"embedding":[1,0,0],"model":"nobody"}`); len(rs) != 0 {
		t.Errorf("search under an unknown model = %v, want nothing", rs)
	}
	for _, tt := range []struct{ body, code string }{
		{`{}`, "invalid_argument"},
		{`{"query":"x","embedding":[1]}`, "invalid_argument"},
		{`{"embedding":[1],"k":101}`, "invalid_argument"},
		{`{"embedding":[1],"tags":[""]}`, "invalid_argument"},
		{`{"query":"x","mode":"vector"}`, "invalid_argument"}, // no embedding model on this router, none named
		{`{"query":"x","mode":"hybrid"}`, "invalid_argument"},
		{`{"query":"x","mode":"fuzzy"}`, "invalid_argument"},
		{`{"embedding":[1],"mode":"keyword"}`, "invalid_argument"},
	} {
		if r := call(t, "POST", tc.URL+"/api/v1/topics/v/search", tt.body); r.errCode() != tt.code {
			t.Errorf("search %s = %d %s, want %s", tt.body, r.Status, r.Raw, tt.code)
		}
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/none/search", `{"embedding":[1]}`); r.Status != 404 {
		t.Errorf("search in a missing topic = %d, want 404", r.Status)
	}
	tc.faults[1].down.Store(true)
	if r := call(t, "POST", tc.URL+"/api/v1/topics/v/search", `{"embedding":[1,0,0],"model":"m"}`); r.Status != 503 || !strings.Contains(r.errMessage(), "sh-2") {
		t.Errorf("search with a shard down = %d %s, want 503 naming sh-2", r.Status, r.Raw)
	}
}

// TestSearchReplicated: with every context on three replicas, each shard
// returns it; the merged answer holds it once.
func TestSearchReplicated(t *testing.T) {
	fake := ollamatest.New(t)
	tc := newTestCluster(t, clusterOpts{shards: 3, replicas: 3, llm: llmConfig(t, fake.URL)})
	tc.createTopic(t, "r")
	for i := range 8 {
		tc.putContext(t, "r", fmt.Sprintf("c%d", i), map[string]any{"content": map[string]any{"text": fmt.Sprintf("word%d shared", i)}})
	}
	// A write returns at a Quorum; the last replica follows.
	for i := range tc.stores {
		waitFor(t, fmt.Sprintf("shard %d to hold all 8 vectors", i), func() bool { return countVectors(t, tc, i) == 8 })
	}
	got := searchFor(t, tc, "r", "", `{"query":"shared","k":20}`)
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r.Metadata.ID] {
			t.Errorf("%s found twice", r.Metadata.ID)
		}
		seen[r.Metadata.ID] = true
	}
	if len(got) != 8 {
		t.Errorf("search found %d contexts, want 8", len(got))
	}
}

// TestTopicDeleteRemovesVectors: deleting a topic deletes its contexts'
// vectors too, so a topic recreated under the same name starts empty.
func TestTopicDeleteRemovesVectors(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, func(c *LLMConfig) { c.EmbedModel = "" })
	tc.createTopic(t, "v")
	for i := range 12 {
		tc.putContext(t, "v", fmt.Sprintf("c%d", i), map[string]any{"metadata": map[string]any{"embedding_model": "m"}, "content": map[string]any{"embeddings": []float32{1, float32(i), 0}}})
	}
	if rs := searchFor(t, tc, "v", "", `{"embedding":[1,0,0],"model":"m","k":20}`); len(rs) != 12 {
		t.Fatalf("search before delete found %d contexts, want 12", len(rs))
	}
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/v", nil), 204, "DELETE topic")
	for i, st := range tc.stores {
		for _, rec := range dump(t, st, schema.BucketVectors) {
			if !strings.HasSuffix(rec, "†") {
				t.Errorf("shard %d still holds live vector %s after its topic was deleted", i, rec)
			}
		}
	}
	tc.createTopic(t, "v")
	if rs := searchFor(t, tc, "v", "", `{"embedding":[1,0,0],"model":"m","k":20}`); len(rs) != 0 {
		t.Errorf("search in the recreated topic found %d contexts, want none", len(rs))
	}
}

// TestStaleVectorPurgedBySearch: replacing a context without embeddings
// leaves its old vector behind; search ignores it and purges it.
func TestStaleVectorPurgedBySearch(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, func(c *LLMConfig) { c.EmbedModel = "" })
	tc.createTopic(t, "v")
	tc.putContext(t, "v", "a", map[string]any{"metadata": map[string]any{"embedding_model": "m"}, "content": map[string]any{"embeddings": []float32{1, 0, 0}}})
	tc.putContext(t, "v", "b", map[string]any{"metadata": map[string]any{"embedding_model": "m"}, "content": map[string]any{"embeddings": []float32{0.5, 0.5, 0}}})
	tc.putContext(t, "v", "a", map[string]any{"content": map[string]any{"text": "no vector now"}})
	liveVectors := func() (n int) {
		for _, st := range tc.stores {
			for _, rec := range dump(t, st, schema.BucketVectors) {
				if strings.HasPrefix(rec, "v/a@") && !strings.HasSuffix(rec, "†") {
					n++
				}
			}
		}
		return n
	}
	if liveVectors() == 0 {
		t.Fatalf("the replaced context's vector is gone already; the test proves nothing")
	}
	rs := searchFor(t, tc, "v", "", `{"embedding":[1,0,0],"model":"m","k":5}`)
	if len(rs) != 1 || rs[0].Metadata.ID != "b" {
		t.Errorf("search = %v, want only b (a's vector is stale)", rs)
	}
	waitFor(t, "stale vector purged", func() bool { return liveVectors() == 0 })
}

// TestAdminReindex: POST /api/v1/admin/reindex reaches every shard, or
// answers 503 naming the one it could not reach; after the rebuild the
// shards answer from their indexes again, with the same results.
func TestAdminReindex(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "kb")
	for i := range 30 {
		tc.putContext(t, "kb", fmt.Sprintf("c%02d", i), map[string]any{"content": map[string]any{"text": fmt.Sprintf("note %d about rivers %d", i, i*7)}})
	}
	waitIndexes(t, tc)
	body := map[string]any{"query": "rivers 21", "k": 5, "mode": "vector"}
	before, exact := searchExact(t, tc, "kb", "", body)
	if exact || len(before) != 5 {
		t.Fatalf("search = %d results, exact %v; want 5 from the indexes", len(before), exact)
	}

	tc.faults[1].down.Store(true)
	r := call(t, "POST", tc.URL+"/api/v1/admin/reindex", nil)
	if r.Status != 503 {
		t.Errorf("reindex with a shard down = %d %s, want 503", r.Status, r.Raw)
	}
	tc.faults[1].down.Store(false)
	waitFor(t, "reindex accepted", func() bool {
		return call(t, "POST", tc.URL+"/api/v1/admin/reindex", nil).Status == 202
	})
	waitIndexes(t, tc)
	after, exact := searchExact(t, tc, "kb", "", body)
	if exact || len(after) != len(before) {
		t.Fatalf("search after reindex = %d results, exact %v; want %d from the indexes", len(after), exact, len(before))
	}
	for i := range before {
		if after[i].Metadata.ID != before[i].Metadata.ID || math.Abs(after[i].Score-before[i].Score) > 1e-6 {
			t.Errorf("result %d after reindex = %s %.6f, want %s %.6f", i, after[i].Metadata.ID, after[i].Score, before[i].Metadata.ID, before[i].Score)
		}
	}
}

// txnOnly refuses every write of a derived bucket (vectors, words, pending
// marks) that comes on its own: only a transaction can carry them.
type txnOnly struct {
	searchShard
	streams
	refused atomic.Int64
}

func (f *txnOnly) Apply(ctx context.Context, b string, w []storage.Write) ([]storage.Result, error) {
	if b == schema.BucketVectors || b == schema.BucketText || b == schema.BucketEmbedPending {
		f.refused.Add(1)
		return nil, errDown
	}
	return f.searchShard.Apply(ctx, b, w)
}

// searchShard is a shard that searches, as storage's Store and Client do.
type searchShard interface {
	Shard
	placement.Searcher
	placement.KeywordSearcher
}

// TestVectorInTheContextsTransaction: a context's vector and words go in
// its own transaction, on every owner, so an acknowledged PUT is found by
// vector and keyword search at once, with no second write that a crash of
// the router (here: shards refusing any write of those buckets alone)
// could lose.
func TestVectorInTheContextsTransaction(t *testing.T) {
	tc := &testCluster{reg: prometheus.NewRegistry(), replicas: 2}
	var faults []*txnOnly
	for range 3 {
		n := tc.addShard(t)
		f := &txnOnly{searchShard: n.Shard.(searchShard), streams: streams{n.Shard}}
		n.Shard = f
		faults = append(faults, f)
		tc.want = append(tc.want, n)
	}
	fake := ollamatest.New(t)
	llm := llmConfig(t, fake.URL)
	llm.EmbedModel = ""
	tc.router, tc.URL = tc.startRouter(t, func(c *Config) { c.Registry = tc.reg; c.Replicas = 2; c.LLM = llm })
	tc.createTopic(t, "v")
	rng := rand.New(rand.NewPCG(7, 8))
	vecs := make([][]float32, 20)
	for i := range vecs {
		vecs[i] = make([]float32, 16)
		for j := range vecs[i] {
			vecs[i][j] = rng.Float32() - 0.5
		}
		tc.putContext(t, "v", fmt.Sprintf("c%02d", i), map[string]any{
			"metadata": map[string]any{"embedding_model": "client"},
			"content":  map[string]any{"text": fmt.Sprintf("parcel%02d shipped", i), "embeddings": vecs[i]},
		})
	}
	for i, v := range vecs {
		got := searchFor(t, tc, "v", "", map[string]any{"embedding": v, "model": "client", "k": 1, "mode": "vector", "exact": true})
		if want := fmt.Sprintf("c%02d", i); len(got) != 1 || got[0].Metadata.ID != want {
			t.Errorf("vector search for c%02d's embedding = %+v, want %s", i, got, want)
		}
		got = searchFor(t, tc, "v", "", map[string]any{"query": fmt.Sprintf("parcel%02d", i), "k": 1, "mode": "keyword"})
		if want := fmt.Sprintf("c%02d", i); len(got) != 1 || got[0].Metadata.ID != want {
			t.Errorf("keyword search for parcel%02d = %+v, want %s", i, got, want)
		}
	}
	// Each owner holds the vector at the context's version.
	for s, st := range tc.stores {
		ctxs := storedContexts(t, st)
		for key, rec := range ctxs {
			vec, err := st.Get(t.Context(), schema.BucketVectors, []byte(key))
			if err != nil || vec.Version != rec.Version {
				t.Errorf("shard %d: vector of %q = version %d, %v; want the context's %d", s+1, key, vec.Version, err, rec.Version)
			}
		}
	}
	var refused int64
	for _, f := range faults {
		refused += f.refused.Load()
	}
	if refused != 0 {
		t.Errorf("%d writes of a vector, words or pending mark came alone, want none", refused)
	}
}
