package router

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

func TestAdminRemoveRefusedWithConfigFile(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3})
	r := call(t, "POST", tc.URL+"/api/v1/admin/remove?shard=sh-3", nil)
	if r.Status != http.StatusPreconditionFailed || r.errCode() != "failed_precondition" {
		t.Fatalf("remove in config mode = %d %s, want 412 failed_precondition", r.Status, r.Raw)
	}
	if got := len(tc.router.topo.Load().Cur.Ring.Nodes()); got != 3 {
		t.Errorf("shards after a refused remove = %d, want 3", got)
	}
}

// discoveryCluster is three real shards behind a router in discovery mode
// whose Reload keeps listing all three, as DNS would while the removed
// daemon still runs.
func discoveryCluster(t *testing.T, replicas int) (*testCluster, string) {
	t.Helper()
	tc := &testCluster{reg: prometheus.NewRegistry(), replicas: replicas}
	for range 3 {
		tc.want = append(tc.want, tc.addShard(t))
	}
	tc.router = tc.newRouter(t, Config{Nodes: tc.want, Replicas: replicas, Discovery: true, Registry: tc.reg, RepairInterval: time.Hour})
	srv := httptest.NewServer(tc.router.Handler())
	t.Cleanup(srv.Close)
	tc.URL = srv.URL
	waitFor(t, "cluster map installed", func() bool { return tc.router.topo.Load().Epoch > 0 })
	return tc, srv.URL
}

func shardNames(rt *Router) []string {
	t := rt.topo.Load()
	names := t.Cur.Ring.Names()
	slices.Sort(names)
	return names
}

func TestAdminRemove(t *testing.T) {
	tc, url := discoveryCluster(t, 2)
	tc.createTopic(t, "t")
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		tc.putContext(t, "t", id, map[string]any{"content": map[string]any{"text": id}})
	}

	if r := call(t, "POST", url+"/api/v1/admin/remove?shard=nope", nil); r.Status != http.StatusNotFound {
		t.Errorf("remove unknown = %d %s, want 404", r.Status, r.Raw)
	}
	if r := call(t, "POST", url+"/api/v1/admin/remove", nil); r.Status != http.StatusBadRequest {
		t.Errorf("remove without a name = %d %s, want 400", r.Status, r.Raw)
	}
	r := must(t, call(t, "DELETE", url+"/api/v1/admin/shards/sh-3", nil), http.StatusAccepted, "remove sh-3")
	if _, ok := r.JSON["shards"]; !ok {
		t.Errorf("remove answer %s, want the cluster info", r.Raw)
	}
	waitFor(t, "sh-3 drained", func() bool {
		top := tc.router.topo.Load()
		return top.State == placement.StateStable && slices.Equal(shardNames(tc.router), []string{"sh-1", "sh-2"})
	})
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		must(t, call(t, "GET", url+"/api/v1/topics/t/contexts/"+id, nil), http.StatusOK, "get "+id)
	}
	info, err := tc.stores[2].Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := info.Keys[schema.BucketContexts]; n != 0 {
		t.Errorf("sh-3 holds %d contexts after removal, want 0", n)
	}
	// Idempotent; and two shards for two replicas cannot lose one more.
	must(t, call(t, "POST", url+"/api/v1/admin/remove?shard=sh-3", nil), http.StatusAccepted, "remove sh-3 again")
	if r := call(t, "POST", url+"/api/v1/admin/remove?shard=sh-2", nil); r.Status != http.StatusPreconditionFailed {
		t.Errorf("remove below replicas = %d %s, want 412", r.Status, r.Raw)
	}

	// The removal is in the cluster map, so a router that still sees sh-3
	// (in DNS, in its Reload) never adds it back.
	rec, err := tc.stores[0].Get(context.Background(), storage.ClusterBucket, []byte(storage.MapKey))
	if err != nil {
		t.Fatal(err)
	}
	var m cluster.Map
	if err := json.Unmarshal(rec.Value, &m); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Removed, []string{"sh-3"}) {
		t.Errorf("cluster map removed = %v, want [sh-3]", m.Removed)
	}
	epoch := tc.router.topo.Load().Epoch
	if err := tc.router.Reload(); err != nil {
		t.Fatal(err)
	}
	other := tc.newRouter(t, Config{Nodes: tc.want, Replicas: 2, Discovery: true, Registry: prometheus.NewRegistry(), RepairInterval: time.Hour})
	waitFor(t, "second router adopts the map", func() bool { return other.topo.Load().Epoch >= epoch })
	time.Sleep(300 * time.Millisecond) // room for a wrong rebalance to start
	for _, rt := range []*Router{tc.router, other} {
		if got := rt.topo.Load().Epoch; got != epoch {
			t.Errorf("epoch = %d, want %d: a removed shard was added back", got, epoch)
		}
		if got := shardNames(rt); !slices.Equal(got, []string{"sh-1", "sh-2"}) {
			t.Errorf("shards = %v, want [sh-1 sh-2]", got)
		}
	}
}
