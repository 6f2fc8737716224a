package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// BenchmarkVectorBuildBulk loads KVDB_BENCH_VECTORS (default 20,000)
// clustered 768-dim vectors through a real router into KVDB_BENCH_SHARDS
// (default 1) real storage daemons with the bulk endpoint (250 contexts a
// request, 4 at once, as a loader would), durably, and reports the index
// build rate: vectors stored and indexed per second, in all and per shard.
// Every vector is in its shard's index when its bulk answers (the index is
// applied before a write is acknowledged). The router, the daemons and
// the loader share the machine's CPUs.
//
//	go test -run XXX -bench VectorBuildBulk -benchtime 1x ./e2e/
func BenchmarkVectorBuildBulk(b *testing.B) {
	n, shards := 20_000, 1
	if v, err := strconv.Atoi(os.Getenv("KVDB_BENCH_VECTORS")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("KVDB_BENCH_SHARDS")); err == nil && v > 0 {
		shards = v
	}
	const dim, bulkSize, conns = 768, 250, 4
	base := vindextest.Clustered(21, 22, n, dim, 100, 1)
	for range b.N {
		b.StopTimer()
		c := startCluster(b, shards)
		createTopic(b, c.url(""), "vec")
		bodies := make([][]byte, 0, n/bulkSize+1)
		for lo := 0; lo < n; lo += bulkSize {
			var docs []map[string]any
			for i := lo; i < min(lo+bulkSize, n); i++ {
				docs = append(docs, map[string]any{"metadata": map[string]any{"id": fmt.Sprintf("v%07d", i), "embedding_model": "client"},
					"content": map[string]any{"text": fmt.Sprintf("vector %d", i), "embeddings": base.Row(i)}})
			}
			body, _ := json.Marshal(map[string]any{"contexts": docs})
			bodies = append(bodies, body)
		}
		b.StartTimer()
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(bodies) && !b.Failed(); i = int(next.Add(1) - 1) {
					r, err := send("POST", c.url("/api/v1/topics/vec/contexts/_bulk"), bodies[i])
					if err != nil || r.Status != http.StatusOK {
						b.Errorf("bulk %d = %v %v %.200s", i, r.Status, err, r.Raw)
					}
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		b.StopTimer()
		if b.Failed() {
			b.FailNow()
		}
		b.ReportMetric(float64(n)/took.Seconds(), "vectors/s")
		b.ReportMetric(float64(n)/took.Seconds()/float64(shards), "vectors/s/shard")
		c.stop(b)
		b.StartTimer()
	}
}
