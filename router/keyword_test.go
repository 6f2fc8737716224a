package router

import (
	"encoding/json"
	"fmt"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

type legResult struct {
	Rank  int
	Score float64
}

type keywordResult struct {
	Metadata struct{ ID string }
	Score    float64
	Legs     map[string]legResult
}

func keywordSearch(t testing.TB, tc *testCluster, topic string, body any) ([]keywordResult, string) {
	t.Helper()
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/"+topic+"/search", body), 200, "search")
	var out struct {
		Results []keywordResult
		Mode    string
	}
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("search answer %s: %v", r.Raw, err)
	}
	return out.Results, out.Mode
}

// bm25 is textbook Okapi BM25 (k1 = 1.2, b = 0.75, idf log(1 + (N - n +
// 0.5) / (n + 0.5))) over docs, computed here from kwindex.Analyze alone:
// the scores every shard must agree on however the documents are spread.
func bm25(docs map[string]string, query string) map[string]float64 {
	tf := map[string]map[string]int{}
	dl := map[string]int{}
	df := map[string]int{}
	total := 0
	for id, text := range docs {
		terms := kwindex.Analyze(text)
		if len(terms) == 0 {
			continue
		}
		tf[id] = map[string]int{}
		for _, term := range terms {
			if tf[id][term] == 0 {
				df[term]++
			}
			tf[id][term]++
		}
		dl[id] = len(terms)
		total += len(terms)
	}
	n := float64(len(tf))
	avgdl := float64(total) / n
	seen := map[string]bool{}
	scores := map[string]float64{}
	for _, q := range kwindex.Analyze(query) {
		if seen[q] {
			continue
		}
		seen[q] = true
		idf := math.Log(1 + (n-float64(df[q])+0.5)/(float64(df[q])+0.5))
		for id, tfs := range tf {
			if f := float64(tfs[q]); f > 0 {
				scores[id] += idf * f * 2.2 / (f + 1.2*(0.25+0.75*float64(dl[id])/avgdl))
			}
		}
	}
	return scores
}

// TestKeywordSearchGlobalStats: through three shards, with one copy of
// each context or three, keyword search answers exactly the ranking and
// the scores of BM25 over the whole topic (the shards score with summed
// statistics, not their own).
func TestKeywordSearchGlobalStats(t *testing.T) {
	words := strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa")
	docs := map[string]string{}
	for i := range 60 {
		var b []string
		for j := range 3 + i%7 {
			b = append(b, words[(i*7+j*j)%len(words)])
		}
		docs[fmt.Sprintf("c%02d", i)] = strings.Join(b, " ")
	}
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprint("replicas=", replicas), func(t *testing.T) {
			tc := newTestCluster(t, clusterOpts{shards: 3, replicas: replicas})
			tc.createTopic(t, "kw")
			for id, text := range docs {
				must(t, tc.putContext(t, "kw", id, map[string]any{"content": map[string]any{"text": text}}), 201, "PUT")
			}
			// A Quorum acknowledged each PUT; the statistics count every
			// copy, so wait for the last replica's too.
			waitFor(t, "the shards hold every copy", func() bool {
				n := 0
				for _, st := range tc.stores {
					n += len(dump(t, st, schema.BucketText))
				}
				return n == len(docs)*replicas
			})
			for _, q := range []string{"alpha", "bravo kilo", "mike papa echo", "Deltas"} {
				want := bm25(docs, q)
				ids := make([]string, 0, len(want))
				for id := range want {
					ids = append(ids, id)
				}
				sort.Slice(ids, func(i, j int) bool {
					if want[ids[i]] != want[ids[j]] {
						return want[ids[i]] > want[ids[j]]
					}
					return ids[i] < ids[j]
				})
				got, mode := keywordSearch(t, tc, "kw", map[string]any{"query": q, "k": 10})
				if mode != "keyword" {
					t.Errorf("mode without an embedding model = %q, want keyword", mode)
				}
				if len(got) != min(10, len(ids)) {
					t.Fatalf("search %q found %d, want %d", q, len(got), min(10, len(ids)))
				}
				for i, r := range got {
					if math.Abs(r.Score-want[r.Metadata.ID]) > 1e-6 || math.Abs(r.Score-want[ids[i]]) > 1e-6 { // rendered with 8 digits
						t.Errorf("search %q result %d = %s %.6f, want %s %.6f", q, i, r.Metadata.ID, r.Score, ids[i], want[ids[i]])
					}
					if l, ok := r.Legs["keyword"]; !ok || l.Rank != i+1 || l.Score != r.Score || len(r.Legs) != 1 {
						t.Errorf("search %q result %d legs = %+v, want keyword rank %d only", q, i, r.Legs, i+1)
					}
				}
			}
		})
	}
}

// TestKeywordSearchFollowsWrites: a rewritten context is found by its new
// words only, a deleted or expired one not at all, by keyword or hybrid;
// tags filter; a query of stop words finds nothing.
func TestKeywordSearchFollowsWrites(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3, expiryInterval: 50 * time.Millisecond})
	tc.createTopic(t, "w")
	put := func(id, text string, extra map[string]any) {
		doc := map[string]any{"content": map[string]any{"text": text}}
		if extra != nil {
			doc["metadata"] = extra
		}
		if r := tc.putContext(t, "w", id, doc); r.Status != 201 && r.Status != 200 {
			t.Fatalf("PUT %s = %d %s", id, r.Status, r.Raw)
		}
	}
	ids := func(body any) []string {
		t.Helper()
		rs, _ := keywordSearch(t, tc, "w", body)
		var out []string
		for _, r := range rs {
			out = append(out, r.Metadata.ID)
		}
		return out
	}
	put("a", "invoice ZX-9041 for the blue kettle", map[string]any{"tags": []string{"billing"}})
	put("b", "the red kettle was shipped", nil)
	put("c", "order ZX-9041 cancelled", nil)
	put("gone", "kettle warranty", map[string]any{"ttl_seconds": 1})
	put("conv", "", nil)
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/w/contexts/conv", map[string]any{"content": map[string]any{"messages": []map[string]string{{"role": "user", "content": "where is my kettle"}, {"role": "assistant", "content": "it left the depot"}}}}), 200, "PUT conversation")
	if got := ids(map[string]any{"query": "kettles", "k": 10}); !sameSet(got, []string{"a", "b", "gone", "conv"}) {
		t.Errorf("search kettles = %q, want a, b, gone, conv", got)
	}
	if got := ids(map[string]any{"query": "depot"}); !slices.Equal(got, []string{"conv"}) {
		t.Errorf("search depot (a message's words) = %q, want conv", got)
	}
	if got := ids(map[string]any{"query": "zx-9041", "tags": []string{"billing"}}); !slices.Equal(got, []string{"a"}) {
		t.Errorf("search zx-9041 tags=billing = %q, want a", got)
	}
	if got := ids(map[string]any{"query": "the and of"}); len(got) != 0 {
		t.Errorf("search of stop words = %q, want none", got)
	}
	put("b", "a green teapot", nil)
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/w/contexts/c", nil), 204, "DELETE c")
	waitFor(t, "the TTL to pass", func() bool {
		return !slices.Contains(ids(map[string]any{"query": "warranty"}), "gone")
	})
	for _, mode := range []string{"keyword", ""} {
		if got := ids(map[string]any{"query": "kettle ZX-9041 shipped", "mode": mode}); !sameSet(got, []string{"a", "conv"}) {
			t.Errorf("search mode %q after rewrite, delete, expiry = %q, want a, conv", mode, got)
		}
	}
	if got := ids(map[string]any{"query": "teapot"}); !slices.Equal(got, []string{"b"}) {
		t.Errorf("search teapot = %q, want b (its new words)", got)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/w/search", map[string]any{"query": "x", "mode": "semantic"}); r.Status != 400 || r.errCode() != "invalid_argument" {
		t.Errorf("search with a bad mode = %d %s, want 400 invalid_argument", r.Status, r.Raw)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestHybridSearchLegs: with an embedding model, a query searches both
// legs by default and fuses them by reciprocal rank; each result names
// the legs that found it.
func TestHybridSearchLegs(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "h")
	for i, text := range []string{"apple river stone", "apple orchard", "river delta", "quantum flux", "apple apple apple"} {
		must(t, tc.putContext(t, "h", fmt.Sprintf("c%d", i), map[string]any{"content": map[string]any{"text": text}}), 201, "PUT")
	}
	got, mode := keywordSearch(t, tc, "h", map[string]any{"query": "apple river", "k": 5})
	if mode != "hybrid" {
		t.Fatalf("default mode with an embedding model = %q, want hybrid", mode)
	}
	vec, _ := keywordSearch(t, tc, "h", map[string]any{"query": "apple river", "k": 13, "mode": "vector"})
	kw, _ := keywordSearch(t, tc, "h", map[string]any{"query": "apple river", "k": 13, "mode": "keyword"})
	rank := func(rs []keywordResult, id string) int {
		for i, r := range rs {
			if r.Metadata.ID == id {
				return i + 1
			}
		}
		return 0
	}
	for i, r := range got {
		want := 0.0
		for leg, rs := range map[string][]keywordResult{"vector": vec, "keyword": kw} {
			rk := rank(rs, r.Metadata.ID)
			l, ok := r.Legs[leg]
			if ok != (rk > 0) || (ok && l.Rank != rk) {
				t.Errorf("result %d (%s) leg %s = %+v (%v), want rank %d", i, r.Metadata.ID, leg, l, ok, rk)
			}
			if rk > 0 {
				want += 1 / float64(60+rk)
			}
		}
		if math.Abs(r.Score-want) > 1e-7 {
			t.Errorf("result %d (%s) score = %v, want the fused %v", i, r.Metadata.ID, r.Score, want)
		}
		if i > 0 && r.Score > got[i-1].Score {
			t.Errorf("result %d scores above result %d", i, i-1)
		}
	}
	if len(got) == 0 || got[0].Metadata.ID != "c0" || len(got[0].Legs) != 2 {
		t.Errorf("hybrid best = %+v, want c0 found by both legs", got)
	}
}

// TestKeywordSearchEncrypted: with encryption at rest the shards hold the
// words sealed and index nothing; the router ranks them itself, with the
// same scores as a shard's index would give.
func TestKeywordSearchEncrypted(t *testing.T) {
	tc := newSecureCluster(t, 3, func(c *Config) { c.Security.Keyring = keyring(t, newKey(t)); c.CacheBytes = 0 })
	tc.createTopic(t, "s")
	docs := map[string]string{"a": "zanzibar pepper trade", "b": "pepper mill", "c": "zanzibar zanzibar", "d": "nothing here"}
	for id, text := range docs {
		must(t, tc.putContext(t, "s", id, map[string]any{"content": map[string]any{"text": text}}), 201, "PUT")
	}
	got, _ := keywordSearch(t, tc, "s", map[string]any{"query": "zanzibar pepper"})
	want := bm25(docs, "zanzibar pepper")
	if len(got) != 3 {
		t.Fatalf("search = %+v, want a, b, c", got)
	}
	for i, r := range got {
		if math.Abs(r.Score-want[r.Metadata.ID]) > 1e-6 || (i > 0 && r.Score > got[i-1].Score) {
			t.Errorf("result %d = %s %v, want score %v, best first", i, r.Metadata.ID, r.Score, want[r.Metadata.ID])
		}
	}
	for i, st := range tc.stores {
		ks, err := st.KeywordIndexStats()
		if err != nil || ks["text"].Docs != 0 {
			t.Errorf("shard %d keyword index = %+v, %v, want nothing indexed", i, ks, err)
		}
	}
}

// TestHybridWithClientEmbedding: a router without an embedding model runs
// a hybrid search from the client's embedding and words.
func TestHybridWithClientEmbedding(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3})
	tc.createTopic(t, "c")
	for i, text := range []string{"lemon tart", "lemon", "cherry pie"} {
		doc := map[string]any{"metadata": map[string]any{"embedding_model": "m"}, "content": map[string]any{"text": text, "embeddings": []float32{1, float32(i), 0}}}
		must(t, tc.putContext(t, "c", fmt.Sprintf("c%d", i), doc), 201, "PUT")
	}
	got, mode := keywordSearch(t, tc, "c", map[string]any{"query": "lemons", "embedding": []float32{0, 1, 0}, "model": "m", "mode": "hybrid"})
	if mode != "hybrid" || len(got) != 3 {
		t.Fatalf("hybrid = %s %+v, want 3 results", mode, got)
	}
	// c2 is the closest vector, c1 the best keyword match (shorter) and
	// second vector: fused, c1 leads.
	if got[0].Metadata.ID != "c1" || len(got[0].Legs) != 2 || got[0].Legs["vector"].Rank != 2 || got[0].Legs["keyword"].Rank != 1 {
		t.Errorf("hybrid best = %+v, want c1 (vector rank 2, keyword rank 1)", got[0])
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/c/search", map[string]any{"query": "lemons", "embedding": []float32{0, 1, 0}}); r.Status != 400 {
		t.Errorf("query and embedding without mode hybrid = %d, want 400", r.Status)
	}
}
