package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/internal/chatgen"
	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// benchGet measures GET of one 4 KB context through the router's HTTP
// stack, with the cache on (hits) or off (each GET goes to a shard daemon
// over HTTP).
func benchGet(b *testing.B, cacheBytes int64) {
	tc := newTestCluster(b, clusterOpts{cacheBytes: cacheBytes})
	tc.createTopic(b, "t")
	d := chatgen.Doc4K("")
	const keys = 1000
	for i := range keys {
		tc.putContext(b, "t", fmt.Sprintf("c%d", i), map[string]any{"metadata": map[string]any{"tags": d.Metadata.Tags}, "content": d.Content})
	}
	urls := make([]string, keys)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			resp, err := hc.Get(urls[i%keys])
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("GET = %d", resp.StatusCode)
				return
			}
			i++
		}
	})
}

func BenchmarkRouterGetCacheHit(b *testing.B)  { benchGet(b, 64<<20) }
func BenchmarkRouterGetCacheMiss(b *testing.B) { benchGet(b, 0) }

// BenchmarkRouterPut measures PUT of a 4 KB context through the router's
// HTTP stack to three shard daemons (BoltDB without fsync: this measures
// the router's own cost).
func BenchmarkRouterPut(b *testing.B) {
	tc := newTestCluster(b, clusterOpts{})
	tc.createTopic(b, "t")
	d := chatgen.Doc4K("")
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"tags": d.Metadata.Tags}, "content": d.Content})
	benchPuts(b, tc, func(i int64) (string, []byte) { return fmt.Sprintf("c%d", i%1000), body })
}

// BenchmarkRouterPutVector measures PUT of a context with a 768-dim client
// embedding through the router's HTTP stack to three shard daemons that
// index it (BoltDB without fsync): the index build through the router, per
// vector, with the shards' HNSW inserts on the same CPUs.
func BenchmarkRouterPutVector(b *testing.B) {
	tc := newTestCluster(b, clusterOpts{})
	tc.createTopic(b, "t")
	const dim = 768
	vecs := vindextest.Clustered(1, 2, 4096, dim, 100, 1)
	bodies := make([][]byte, vecs.Len())
	for i := range bodies {
		bodies[i], _ = json.Marshal(map[string]any{"metadata": map[string]any{"embedding_model": "client"}, "content": map[string]any{"text": fmt.Sprintf("vector %d", i), "embeddings": vecs.Row(i)}})
	}
	benchPuts(b, tc, func(i int64) (string, []byte) { return fmt.Sprintf("v%d", i), bodies[i%int64(len(bodies))] })
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "vectors/s")
}

// benchPuts PUTs, from every parallel goroutine, the context doc(i) names
// (its id and body) for i = 1, 2, …, until the benchmark ends.
func benchPuts(b *testing.B, tc *testCluster, doc func(i int64) (id string, body []byte)) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id, body := doc(n.Add(1))
			req, _ := http.NewRequest("PUT", tc.URL+"/api/v1/topics/t/contexts/"+id, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 && resp.StatusCode != 201 {
				b.Errorf("PUT %s = %d", id, resp.StatusCode)
				return
			}
		}
	})
}
