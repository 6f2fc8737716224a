package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// The shards' vector indexes, end to end: real storage daemons and a real
// router, client embeddings (so no model is needed), answers checked
// against the exact scan every shard still offers ("exact": true).

const vecDim = 32

func vecID(i int) string { return fmt.Sprintf("v%04d", i) }

func vecDoc(vec []float32, tags []string, ttl int) map[string]any {
	meta := map[string]any{"embedding_model": "client", "tags": tags}
	if ttl > 0 {
		meta["ttl_seconds"] = ttl
	}
	return map[string]any{"metadata": meta, "content": map[string]any{"text": "a vector", "embeddings": vec}}
}

func vecTags(i int) []string {
	if i%2 == 0 {
		return []string{"all", "even"}
	}
	return []string{"all"}
}

// putVecs stores set's rows as contexts vecID(i) with a few goroutines.
func putVecs(t testing.TB, c *cluster, topic string, set *vindextest.Set) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < set.Len() && !t.Failed(); i = int(next.Add(1) - 1) {
				body, _ := json.Marshal(vecDoc(set.Row(i), vecTags(i), 0))
				r, err := send("PUT", ctxURL(c, topic, vecID(i)), body)
				if err != nil || (r.Status != http.StatusCreated && r.Status != http.StatusOK) {
					t.Errorf("PUT %s = %v %v; body %s", vecID(i), r.Status, err, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

type hit struct {
	ID    string
	Score float64
}

// search asks the router for the k nearest of vec and returns the hits and
// the answer's "exact".
func search(t testing.TB, c *cluster, topic string, vec []float32, k int, tags []string, exact bool) ([]hit, bool) {
	t.Helper()
	body := map[string]any{"embedding": vec, "model": "client", "k": k}
	if tags != nil {
		body["tags"] = tags
	}
	if exact {
		body["exact"] = true
	}
	r := do(t, "POST", c.url("/api/v1/topics/"+topic+"/search"), body)
	if r.Status != http.StatusOK {
		t.Fatalf("%s = %d %s, want 200", r.Req, r.Status, r.Raw)
	}
	var out struct {
		Results []struct {
			Metadata struct{ ID string }
			Score    float64
		}
		Exact *bool
	}
	if err := json.Unmarshal(r.Raw, &out); err != nil || out.Exact == nil {
		t.Fatalf("search answer %s: %v; want results and exact", r.Raw, err)
	}
	hits := make([]hit, len(out.Results))
	for i, x := range out.Results {
		hits[i] = hit{x.Metadata.ID, x.Score}
	}
	return hits, *out.Exact
}

// shardMetric reads one unlabelled gauge from a storage daemon's /metrics.
func shardMetric(t testing.TB, s *shard, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get(s.url("/metrics"))
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", s.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s %s: %v", s.name, name, err)
			}
			return f
		}
	}
	t.Fatalf("%s /metrics has no %s", s.name, name)
	return 0
}

// waitIndexesReady waits until every shard says its indexes are ready.
func waitIndexesReady(t testing.TB, c *cluster) {
	t.Helper()
	if !eventually(clusterTimeout, func() bool {
		for _, s := range c.shards {
			if shardMetric(t, s, "kvdb_vindex_ready") != 1 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("vector indexes not ready within %s", clusterTimeout)
	}
}

// indexedVectors sums the live vectors every shard's indexes hold.
func indexedVectors(t testing.TB, c *cluster) int {
	t.Helper()
	n := 0.0
	for _, s := range c.shards {
		n += shardMetric(t, s, "kvdb_vindex_vectors")
	}
	return int(n)
}

// recall searches every query from the indexes and by the exact scan, and
// returns the share of the exact top 10 the indexes found.
func recall(t testing.TB, c *cluster, topic string, queries *vindextest.Set, tags []string) float64 {
	t.Helper()
	found, total := 0, 0
	for i := range queries.Len() {
		ann, exact := search(t, c, topic, queries.Row(i), 10, tags, false)
		if exact {
			t.Fatalf("search from ready indexes said exact")
		}
		want, exact := search(t, c, topic, queries.Row(i), 10, tags, true)
		if !exact {
			t.Fatalf("search asking exact did not say exact")
		}
		for _, w := range want {
			total++
			if slices.ContainsFunc(ann, func(h hit) bool { return h.ID == w.ID }) {
				found++
			}
		}
		for _, h := range ann {
			if tags != nil && vecTagsOf(h.ID)[len(vecTagsOf(h.ID))-1] != tags[0] {
				t.Errorf("search with tags %v returned %s (tags %v)", tags, h.ID, vecTagsOf(h.ID))
			}
		}
	}
	return float64(found) / float64(total)
}

func vecTagsOf(id string) []string {
	i, _ := strconv.Atoi(strings.TrimPrefix(id, "v"))
	return vecTags(i)
}

// findsEachOnce searches every live vector by itself: it must come first
// (score 1), exactly once, from the indexes.
func findsEachOnce(t testing.TB, c *cluster, topic string, set *vindextest.Set, live func(i int) bool, what string) {
	t.Helper()
	bad := 0
	for i := range set.Len() {
		if !live(i) {
			continue
		}
		hits, exact := search(t, c, topic, set.Row(i), 3, nil, false)
		n := 0
		for _, h := range hits {
			if h.ID == vecID(i) {
				n++
			}
		}
		if exact || len(hits) == 0 || hits[0].ID != vecID(i) || math.Abs(hits[0].Score-1) > 1e-4 || n != 1 {
			if bad++; bad <= 5 {
				t.Errorf("%s: search for %s = %v (exact %v); want it first, once, from the indexes", what, vecID(i), hits, exact)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d vectors not found exactly once", what, bad)
	}
}

func TestVectorIndexAcrossProcesses(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c.url(""), "kb")
	base := vindextest.Clustered(5, 6, 1500, vecDim, 15, 1)
	queries := vindextest.Clustered(5, 7, 30, vecDim, 15, 1)
	putVecs(t, c, "kb", base)

	// v0000 rewritten far away, v0001 deleted.
	far := make([]float32, vecDim)
	far[0] = 1
	putContext(t, c.url(""), "kb", vecID(0), vecDoc(far, vecTags(0), 0))
	mustStatus(t, do(t, "DELETE", ctxURL(c, "kb", vecID(1)), nil), http.StatusNoContent)
	waitIndexesReady(t, c)
	if n := indexedVectors(t, c); n != base.Len()-1 {
		t.Errorf("indexed vectors = %d, want %d", n, base.Len()-1)
	}

	if r := recall(t, c, "kb", queries, nil); r < 0.95 {
		t.Errorf("recall@10 = %.3f, want >= 0.95", r)
	} else {
		t.Logf("recall@10 = %.3f", r)
	}
	if r := recall(t, c, "kb", queries, []string{"even"}); r < 0.95 {
		t.Errorf("recall@10 with tag even = %.3f, want >= 0.95", r)
	}
	for i := range 2 {
		hits, _ := search(t, c, "kb", base.Row(i), 10, nil, false)
		for _, h := range hits {
			if h.ID == vecID(i) {
				t.Errorf("search for the old vector of %s returned it (%v) after it was rewritten or deleted", vecID(i), h)
			}
		}
	}

	// Grow 3 → 4: every vector indexed on its new owner, dropped from the
	// former one.
	before := getCluster(t, c)
	c.addShard(t)
	c.router.signal(t, syscall.SIGHUP)
	waitStable(t, c, before.Epoch, "sh-1", "sh-2", "sh-3", "sh-4")
	waitIndexesReady(t, c)
	if n := indexedVectors(t, c); n != base.Len()-1 {
		t.Errorf("indexed vectors over 4 shards after the rebalance = %d, want %d", n, base.Len()-1)
	}
	if shardMetric(t, c.shards[3], "kvdb_vindex_vectors") == 0 {
		t.Errorf("sh-4 indexed no vectors after the rebalance")
	}
	findsEachOnce(t, c, "kb", base, func(i int) bool { return i > 1 }, "after 3 → 4")

	// Restart every storage daemon: answers stay right meanwhile (exact
	// until a shard is ready), and the indexes come back.
	for _, s := range c.shards {
		s.proc.stopClean(t)
	}
	for _, s := range c.shards {
		c.startShard(t, s)
	}
	want, _ := search(t, c, "kb", queries.Row(0), 10, nil, true)
	for range 50 {
		got, exact := search(t, c, "kb", queries.Row(0), 10, nil, false)
		if exact && !slices.Equal(got, want) {
			t.Errorf("exact search during the restart = %v, want %v", got, want)
		}
		if !exact {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitIndexesReady(t, c)
	if n := indexedVectors(t, c); n != base.Len()-1 {
		t.Errorf("indexed vectors after the restart = %d, want %d", n, base.Len()-1)
	}
	if r := recall(t, c, "kb", queries, nil); r < 0.95 {
		t.Errorf("recall@10 after the restart = %.3f, want >= 0.95", r)
	}
	// An expired context is never returned: the router drops it before the purge
	// tombstones it (storage tests cover the index's side of that).
	putContext(t, c.url(""), "kb", "expiring", vecDoc(base.Row(10), nil, 1))
	if hits, _ := search(t, c, "kb", base.Row(10), 1, nil, false); len(hits) != 1 || hits[0].ID != "expiring" && hits[0].ID != vecID(10) {
		t.Errorf("search before expiry = %v, want expiring or %s first", hits, vecID(10))
	}
	time.Sleep(1100 * time.Millisecond) // past the TTL; the purge runs every minute
	for range 3 {
		hits, _ := search(t, c, "kb", base.Row(10), 5, nil, false)
		if slices.ContainsFunc(hits, func(h hit) bool { return h.ID == "expiring" }) {
			t.Errorf("search after expiry returned the expired context: %v", hits)
		}
	}
}

// A replica that missed writes is repaired through its store, so its
// index holds exactly the live vectors afterwards: asked directly (no
// other replica to mask a gap), it finds each one, at its newest value,
// and none of the deleted.
func TestVectorIndexAfterRepair(t *testing.T) {
	c := startReplicated(t, 3, 3)
	createTopic(t, c.url(""), "kb")
	base := vindextest.Clustered(8, 9, 400, vecDim, 8, 1)
	putVecs(t, c, "kb", base)
	victim := c.shards[1]
	victim.proc.stopClean(t)
	waitShardState(t, c, victim.name, "down")

	// While it is down: 0..39 rewritten (to the rows of a fresh set),
	// 40..59 deleted.
	fresh := vindextest.Clustered(8, 10, 40, vecDim, 8, 1)
	for i := range 40 {
		putContext(t, c.url(""), "kb", vecID(i), vecDoc(fresh.Row(i), vecTags(i), 0))
	}
	for i := 40; i < 60; i++ {
		mustStatus(t, do(t, "DELETE", ctxURL(c, "kb", vecID(i)), nil), http.StatusNoContent)
	}
	c.startShard(t, victim)
	waitShardState(t, c, victim.name, "up")
	mustStatus(t, do(t, "POST", c.url("/api/v1/admin/repair?wait=true"), nil), http.StatusOK)
	waitIndexesReady(t, c)
	for _, s := range c.shards {
		if n := shardMetric(t, s, "kvdb_vindex_vectors"); int(n) != base.Len()-20 {
			t.Errorf("%s indexes %v vectors after the repair, want %d", s.name, n, base.Len()-20)
		}
	}

	sh := storage.NewClient(victim.name, victim.addr, nil)
	top1 := func(vec []float32) (string, bool) {
		res, err := sh.TopK(t.Context(), "vectors", storage.TopKQuery{Prefix: []byte("kb\x00"), Query: vec, K: 1, Model: "client"})
		if err != nil || len(res.Matches) != 1 {
			t.Fatalf("TopK on %s = %+v, %v; want one match", victim.name, res, err)
		}
		return strings.TrimPrefix(string(res.Matches[0].Key), "kb\x00"), res.Exact
	}
	bad := 0
	for i := range base.Len() {
		vec := base.Row(i)
		if i < 40 {
			vec = fresh.Row(i)
		}
		got, exact := top1(vec)
		switch {
		case i >= 40 && i < 60 && got == vecID(i):
			t.Errorf("%s returned %s, deleted while it was down", victim.name, got)
		case (i < 40 || i >= 60) && (got != vecID(i) || exact):
			if bad++; bad <= 5 {
				t.Errorf("%s: top 1 for %s = %s (exact %v), want it from the index", victim.name, vecID(i), got, exact)
			}
		}
	}
}
