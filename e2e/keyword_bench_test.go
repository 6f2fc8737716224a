package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// BenchmarkSearchModes100k loads 100,000 contexts (KVDB_BENCH_CONTEXTS
// overrides) into a real three-shard cluster, each with a sentence of 8 to
// 24 words drawn from the packaged fortunes and a clustered 768-dim client
// embedding, then times one client's searches (k = 10) in each mode: the
// latency a user sees, from the router's HTTP answer. Each sub-benchmark
// reports p50 and p99 in milliseconds.
//
//	go test -run XXX -bench SearchModes100k -benchtime 300x ./e2e/
func BenchmarkSearchModes100k(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("KVDB_BENCH_CONTEXTS")); err == nil && v > 0 {
		n = v
	}
	const dim = 768
	words := strings.Fields(strings.Join(fortunes(b), " "))
	c := startCluster(b, 3)
	createTopic(b, c.url(""), "bench")
	base := vindextest.Clustered(11, 12, n, dim, 50, 1)
	queries := vindextest.Clustered(11, 13, 200, dim, 50, 1)
	sentence := func(rng *rand.Rand) string {
		var s strings.Builder
		for range 8 + rng.IntN(17) {
			s.WriteString(words[rng.IntN(len(words))])
			s.WriteByte(' ')
		}
		return s.String()
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for i := int(next.Add(1) - 1); i < n && !b.Failed(); i = int(next.Add(1) - 1) {
				doc := map[string]any{"metadata": map[string]any{"embedding_model": "client"}, "content": map[string]any{"text": sentence(rng), "embeddings": base.Row(i)}}
				body, _ := json.Marshal(doc)
				r, err := send("PUT", ctxURL(c, "bench", fmt.Sprintf("c%06d", i)), body)
				if err != nil || (r.Status != http.StatusCreated && r.Status != http.StatusOK) {
					b.Errorf("PUT c%06d = %v %v; body %s", i, r.Status, err, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.Logf("loaded %d contexts in %v (%.0f/s)", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
	waitIndexesReady(b, c)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, mode := range []string{"keyword", "vector", "hybrid"} {
		b.Run(mode, func(b *testing.B) {
			var lat []time.Duration
			for i := 0; b.Loop(); i++ {
				body := map[string]any{"k": 10, "mode": mode, "model": "client"}
				if mode != "vector" {
					body["query"] = words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))]
				}
				if mode != "keyword" {
					body["embedding"] = queries.Row(i % queries.Len())
				}
				raw, _ := json.Marshal(body)
				t0 := time.Now()
				r, err := send("POST", c.url("/api/v1/topics/bench/search"), raw)
				lat = append(lat, time.Since(t0))
				if err != nil || r.Status != http.StatusOK {
					b.Fatalf("search %s = %v %v %s", raw, r.Status, err, r.Raw)
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
