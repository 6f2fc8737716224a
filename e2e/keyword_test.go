package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

// fortunes are the packaged fortune files (Debian's fortunes-min), one
// document per fortune: a corpus of real English nobody wrote for this test.
func fortunes(t testing.TB) []string {
	t.Helper()
	var docs []string
	for _, f := range []string{"fortunes", "literature", "riddles"} {
		raw, err := os.ReadFile("/usr/share/games/fortunes/" + f)
		if err != nil {
			t.Skipf("the relevance corpus needs Debian's fortunes-min (apt-get install fortunes-min): %v", err)
		}
		for _, d := range strings.Split(string(raw), "\n%\n") {
			if d = strings.TrimSpace(d); d != "" && len(kwindex.Analyze(d)) > 0 {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

type kwHit struct {
	ID    string
	Score float64
}

func keywordSearch(t testing.TB, c *cluster, topic, query string, k int) []kwHit {
	t.Helper()
	r := do(t, "POST", c.url("/api/v1/topics/"+topic+"/search"), map[string]any{"query": query, "k": k, "mode": "keyword"})
	if r.Status != http.StatusOK {
		t.Fatalf("%s = %d %s, want 200", r.Req, r.Status, r.Raw)
	}
	var out struct {
		Results []struct {
			Metadata struct{ ID string }
			Score    float64
		}
	}
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("search answer %s: %v", r.Raw, err)
	}
	hits := make([]kwHit, len(out.Results))
	for i, x := range out.Results {
		hits[i] = kwHit{x.Metadata.ID, x.Score}
	}
	return hits
}

// textbookBM25 ranks docs for query by Okapi BM25 (k1 = 1.2, b = 0.75,
// idf = ln(1 + (N - n + 0.5) / (n + 0.5))), written out here from the
// formula over the same analysis, and returns the best k ids.
func textbookBM25(docs map[string][]string, query string, k int) []string {
	total := 0
	df := map[string]int{}
	for _, terms := range docs {
		total += len(terms)
		seen := map[string]bool{}
		for _, term := range terms {
			if !seen[term] {
				seen[term] = true
				df[term]++
			}
		}
	}
	n, avgdl := float64(len(docs)), float64(total)/float64(len(docs))
	scores := map[string]float64{}
	qs := map[string]bool{}
	for _, q := range kwindex.Analyze(query) {
		qs[q] = true
	}
	for id, terms := range docs {
		tf := map[string]float64{}
		for _, term := range terms {
			if qs[term] {
				tf[term]++
			}
		}
		for q, f := range tf {
			idf := math.Log(1 + (n-float64(df[q])+0.5)/(float64(df[q])+0.5))
			scores[id] += idf * f * (1.2 + 1) / (f + 1.2*(1-0.75+0.75*float64(len(terms))/avgdl))
		}
	}
	ids := make([]string, 0, len(scores))
	for id := range scores {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if scores[ids[i]] != scores[ids[j]] {
			return scores[ids[i]] > scores[ids[j]]
		}
		return ids[i] < ids[j]
	})
	return ids[:min(k, len(ids))]
}

// relevanceQueries makes a labelled query set from the corpus: for every
// seventh document, three of its own words as written (case, plurals and
// possessives left in); the documents relevant to a query are those that
// hold all three (after analysis), its source among them.
func relevanceQueries(docs map[string][]string, raw map[string]string) (queries []string, relevant []map[string]bool) {
	ids := make([]string, 0, len(raw))
	for id := range raw {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for n, id := range ids {
		if n%7 != 0 {
			continue
		}
		var words []string
		seen := map[string]bool{}
		for _, w := range strings.FieldsFunc(raw[id], func(r rune) bool { return !unicode.IsLetter(r) && r != '\'' }) {
			terms := kwindex.Analyze(w)
			if len(terms) == 1 && !seen[terms[0]] && len(w) > 3 {
				seen[terms[0]] = true
				words = append(words, w)
			}
		}
		if len(words) < 3 {
			continue
		}
		q := []string{words[n%len(words)], words[(n/7+1)%len(words)], words[(n/3+2)%len(words)]}
		terms := kwindex.QueryTerms(strings.Join(q, " "))
		if len(terms) < 2 {
			continue
		}
		rel := map[string]bool{}
		for other, ts := range docs {
			if slices.ContainsFunc(terms, func(t string) bool { return !slices.Contains(ts, t) }) {
				continue
			}
			rel[other] = true
		}
		queries, relevant = append(queries, strings.Join(q, " ")), append(relevant, rel)
	}
	return queries, relevant
}

func recallAt10(found []string, rel map[string]bool) float64 {
	hit := 0
	for _, id := range found[:min(10, len(found))] {
		if rel[id] {
			hit++
		}
	}
	return float64(hit) / float64(min(10, len(rel)))
}

func keywordDocs(t testing.TB, c *cluster) int {
	t.Helper()
	n := 0.0
	for _, s := range c.shards {
		n += shardMetric(t, s, "kvdb_keyword_docs")
	}
	return int(n)
}

// TestKeywordRelevanceAcrossProcesses: over a real three-shard cluster,
// keyword search of the packaged fortunes finds the labelled relevant
// documents at least as well as textbook BM25 computed here (recall@10,
// minus 0.02); a rewritten, deleted or expired context is never
// returned; growing to four shards keeps every ranking and score.
func TestKeywordRelevanceAcrossProcesses(t *testing.T) {
	corpus := fortunes(t)
	c := startCluster(t, 3)
	createTopic(t, c.url(""), "fortunes")
	raw := map[string]string{}
	docs := map[string][]string{}
	for i, text := range corpus {
		id := fmt.Sprintf("f%04d", i)
		raw[id], docs[id] = text, kwindex.Analyze(text)
		putContext(t, c.url(""), "fortunes", id, map[string]any{"content": map[string]any{"text": text}})
	}
	queries, relevant := relevanceQueries(docs, raw)
	if len(queries) < 30 {
		t.Fatalf("%d labelled queries from %d documents, want at least 30", len(queries), len(docs))
	}
	ranking := func() [][]kwHit {
		out := make([][]kwHit, len(queries))
		for i, q := range queries {
			out[i] = keywordSearch(t, c, "fortunes", q, 10)
		}
		return out
	}
	before := ranking()
	var got, book float64
	for i, q := range queries {
		var ids []string
		for _, h := range before[i] {
			ids = append(ids, h.ID)
		}
		got += recallAt10(ids, relevant[i])
		book += recallAt10(textbookBM25(docs, q, 10), relevant[i])
	}
	got, book = got/float64(len(queries)), book/float64(len(queries))
	t.Logf("recall@10 over %d queries, %d documents: keyword search %.3f, textbook BM25 %.3f", len(queries), len(docs), got, book)
	if got < book-0.02 {
		t.Errorf("recall@10 of mode keyword = %.3f, want >= textbook BM25 %.3f - 0.02", got, book)
	}

	// Rewritten, deleted and expiring contexts.
	putContext(t, c.url(""), "fortunes", "f0000", map[string]any{"content": map[string]any{"text": "xylophone quagmire"}})
	mustStatus(t, do(t, "DELETE", c.url("/api/v1/topics/fortunes/contexts/f0001"), nil), http.StatusNoContent)
	putContext(t, c.url(""), "fortunes", "ephemeral", map[string]any{"metadata": map[string]any{"ttl_seconds": 1}, "content": map[string]any{"text": "zqxjvortle zqxjvortle"}})
	if hits := keywordSearch(t, c, "fortunes", "zqxjvortles", 5); len(hits) != 1 || hits[0].ID != "ephemeral" {
		t.Errorf("search before expiry = %v, want ephemeral", hits)
	}
	for _, id := range []string{"f0000", "f0001"} {
		for _, h := range keywordSearch(t, c, "fortunes", raw[id], 20) {
			if h.ID == id {
				t.Errorf("search for the old words of %s returned it after it was rewritten or deleted", id)
			}
		}
	}
	if hits := keywordSearch(t, c, "fortunes", "quagmire", 5); len(hits) != 1 || hits[0].ID != "f0000" {
		t.Errorf("search for f0000's new words = %v, want f0000", hits)
	}
	time.Sleep(1100 * time.Millisecond) // past the TTL
	if hits := keywordSearch(t, c, "fortunes", "zqxjvortle", 5); len(hits) != 0 {
		t.Errorf("search after expiry = %v, want nothing", hits)
	}

	// Grow 3 → 4: once the former owners have dropped what moved, every
	// shard scores with the same statistics as before, so every ranking
	// and score is what it was.
	putContext(t, c.url(""), "fortunes", "f0000", map[string]any{"content": map[string]any{"text": raw["f0000"]}})
	putContext(t, c.url(""), "fortunes", "f0001", map[string]any{"content": map[string]any{"text": raw["f0001"]}})
	mustStatus(t, do(t, "DELETE", c.url("/api/v1/topics/fortunes/contexts/ephemeral"), nil), http.StatusNoContent)
	// A deleted context's words are tombstoned off the request's path: wait
	// for them to leave the statistics.
	if !eventually(clusterTimeout, func() bool { return keywordDocs(t, c) == len(docs) }) {
		t.Fatalf("keyword documents = %d, want %d", keywordDocs(t, c), len(docs))
	}
	before = ranking()
	cv := getCluster(t, c)
	c.addShard(t)
	c.router.signal(t, syscall.SIGHUP)
	waitStable(t, c, cv.Epoch, "sh-1", "sh-2", "sh-3", "sh-4")
	if !eventually(clusterTimeout, func() bool { return keywordDocs(t, c) == len(docs) }) {
		t.Fatalf("keyword documents over 4 shards = %d, want %d", keywordDocs(t, c), len(docs))
	}
	if shardMetric(t, c.shards[3], "kvdb_keyword_docs") == 0 {
		t.Errorf("sh-4 indexed no documents after the rebalance")
	}
	after := ranking()
	for i := range queries {
		if len(after[i]) != len(before[i]) {
			t.Errorf("search %q after 3 → 4 = %v, want %v", queries[i], after[i], before[i])
			continue
		}
		for j := range after[i] {
			if after[i][j].ID != before[i][j].ID || math.Abs(after[i][j].Score-before[i][j].Score) > 1e-6 {
				t.Errorf("search %q after 3 → 4 = %v, want %v", queries[i], after[i], before[i])
				break
			}
		}
	}
}
