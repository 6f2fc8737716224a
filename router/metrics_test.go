package router

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLintAfterRebalance lints the router's registry once every
// family has series: replicated writes, cache hits and misses, a repair,
// a rebalance onto a fourth shard, and compressible bodies.
func TestMetricsLintAfterRebalance(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3, replicas: 3})
	tc.createTopic(t, "m")
	text := strings.Repeat("the same words again and again ", 20)
	for i := range 20 {
		tc.putContext(t, "m", fmt.Sprintf("c%02d", i), map[string]any{"content": map[string]any{"text": text}})
		must(t, call(t, "GET", fmt.Sprintf("%s/api/v1/topics/m/contexts/c%02d", tc.URL, i), nil), 200, "get")
	}
	call(t, "GET", tc.URL+"/api/v1/topics/m/contexts/nope", nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	tc.setShape(append(tc.want, tc.addShard(t)), 3)
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/reload", nil), 202, "reload")
	waitFor(t, "rebalance onto sh-4", func() bool {
		top := tc.router.topo.Load()
		return top.State == placement.StateStable && len(top.Cur.Ring.Nodes()) == 4
	})

	problems, err := testutil.GatherAndLint(tc.reg)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	// Every request to a shard reports how many calls it carried (the
	// series exist from the start: count the observations).
	families, err := tc.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	batched := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "kvdb_shard_batch_calls" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				batched[l.GetValue()] += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if batched["get"] == 0 || batched["apply"] == 0 {
		t.Errorf("kvdb_shard_batch_calls observations = %v, want gets and applies counted", batched)
	}
	in, out := testutil.ToFloat64(tc.router.m.CodecInputBytes), testutil.ToFloat64(tc.router.m.CodecOutputBytes)
	if in == 0 || out == 0 || out >= in {
		t.Errorf("codec bytes in, out = %v, %v; want both counted and compression on repetitive text", in, out)
	}
	for _, name := range []string{
		"kvdb_sync_keys_scanned_total", "kvdb_sync_keys_copied_total", "kvdb_sync_rebalance_running",
		"kvdb_cluster_epoch", "kvdb_cache_hits_total", "kvdb_cache_misses_total", "kvdb_cache_entries",
		"kvdb_shard_up", "kvdb_shard_request_duration_seconds", "kvdb_replication_read_repairs_total",
		"kvdb_codec_input_bytes_total", "kvdb_codec_output_bytes_total",
		"kvdb_codec_dictionary_id", "kvdb_codec_dictionary_trainings_total",
	} {
		if n, err := testutil.GatherAndCount(tc.reg, name); err != nil || n == 0 {
			t.Errorf("GatherAndCount(%s) = %d, %v; want series", name, n, err)
		}
	}
}
