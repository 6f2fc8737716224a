package router

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkCrossRouterStaleness measures issue 13's target: after a write
// is acknowledged through router A, how long router B (same three shards,
// replicas = 3, both caching) goes on serving the old version. Each op
// writes through A, then polls B until it answers the new version (bounded
// at 5 s); it reports the p50 and p99 of that window. The anchor,
// no-cache, polls with Cache-Control: no-cache (a quorum read every
// time, never stale): its window is the cost of one read, the floor of
// what polling can measure.
func BenchmarkCrossRouterStaleness(b *testing.B) {
	b.Run("cached", func(b *testing.B) { benchStaleness(b) })
	b.Run("no-cache", func(b *testing.B) { benchStaleness(b, "Cache-Control", "no-cache") })
}

func benchStaleness(b *testing.B, header ...string) {
	tc := newTestCluster(b, clusterOpts{replicas: 3})
	rb := tc.newRouter(b, Config{Nodes: tc.want, Replicas: 3, CacheBytes: 64 << 20, RepairInterval: time.Hour, ExpiryInterval: time.Hour, Logger: quietLogger()})
	srvB := httptest.NewServer(rb.Handler())
	b.Cleanup(srvB.Close)
	waitFor(b, "router B follows", func() bool { return rb.topo.Load().Epoch > 0 && rb.CacheCoherent() })
	tc.createTopic(b, "bench")
	path := "/api/v1/topics/bench/contexts/c"
	tc.putContext(b, "bench", "c", `{"content":{"text":"v0"}}`)
	call(b, "GET", srvB.URL+path, nil) // B caches v0
	windows := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		want := fmt.Sprintf(`"text":"v%d"`, i+1)
		tc.putContext(b, "bench", "c", `{"content":{`+want+`}}`)
		acked := time.Now()
		for {
			if r := call(b, "GET", srvB.URL+path, nil, header...); strings.Contains(string(r.Raw), want) {
				break
			}
			if time.Since(acked) > 5*time.Second {
				b.Fatalf("router B still serves an older version than %s after 5s", want)
			}
		}
		windows = append(windows, time.Since(acked))
	}
	b.StopTimer()
	slices.Sort(windows)
	b.ReportMetric(float64(windows[len(windows)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(windows[(len(windows)*99)/100].Microseconds())/1000, "p99-ms")
}
