package router

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newSecureCluster is newTestCluster with the Config adjusted by mod
// before the router starts (security settings, mostly).
func newSecureCluster(t testing.TB, shards int, mod func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{reg: prometheus.NewRegistry()}
	for range shards {
		tc.want = append(tc.want, tc.addShard(t))
	}
	cfg := Config{
		Nodes:          tc.want,
		CacheBytes:     64 << 20,
		RepairInterval: time.Hour,
		Registry:       tc.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	tc.router = tc.newRouter(t, cfg)
	srv := httptest.NewServer(tc.router.Handler())
	t.Cleanup(srv.Close)
	tc.URL = srv.URL
	waitFor(t, "cluster map installed", func() bool { return tc.router.topo.Load().Epoch > 0 })
	return tc
}

func bearerHeader(secret string) []string { return []string{"Authorization", "Bearer " + secret} }
