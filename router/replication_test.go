package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// dump returns every record of a bucket on one store, tombstones included,
// as "key@version" (with "†" for a tombstone), in key order.
func dump(t testing.TB, st *storage.Store, bucket string) []string {
	t.Helper()
	var out []string
	var after []byte
	for {
		p, err := st.Scan(context.Background(), bucket, storage.ScanOptions{After: after, Limit: 1000, Tombstones: true})
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		for _, r := range p.Records {
			s := fmt.Sprintf("%s@%d", strings.ReplaceAll(string(r.Key), schema.KeySep, "/"), r.Version)
			if r.Tombstone {
				s += "†"
			}
			out = append(out, s)
		}
		if !p.More {
			return out
		}
		after = p.Records[len(p.Records)-1].Key
	}
}

func (tc *testCluster) markDown(t testing.TB, i int, down bool) {
	t.Helper()
	tc.faults[i].down.Store(down)
	name := tc.nodes[i].Name
	waitFor(t, fmt.Sprintf("prober sees %s down=%v", name, down), func() bool {
		n := tc.router.cluster.Node(name)
		return n != nil && n.Up() == !down
	})
}

func text(r response) string {
	c, _ := r.JSON["content"].(map[string]any)
	s, _ := c["text"].(string)
	return s
}

// TestReplicasServeWithOneShardDown: with replicas = 3, any one shard can
// be down and every key still reads and writes.
func TestReplicasServeWithOneShardDown(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1}) // cache off: reads reach the shards
	tc.createTopic(t, "t")
	for i := range 30 {
		tc.putContext(t, "t", fmt.Sprintf("c%d", i), fmt.Sprintf(`{"content":{"text":"v0-%d"}}`, i))
	}
	waitFor(t, "every shard holds all 30 contexts with replicas = 3", func() bool {
		for _, st := range tc.stores {
			if len(dump(t, st, schema.BucketContexts)) != 30 {
				return false
			}
		}
		return true
	})
	for down := range 3 {
		tc.markDown(t, down, true)
		for i := range 30 {
			u := fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i)
			want := fmt.Sprintf("v%d-%d", down, i)
			if g := must(t, call(t, "GET", u, nil), 200, "GET with a shard down"); text(g) != want {
				t.Fatalf("GET c%d with sh-%d down = %q, want %q", i, down+1, text(g), want)
			}
			must(t, call(t, "PUT", u, fmt.Sprintf(`{"content":{"text":"v%d-%d"}}`, down+1, i)), 200, "PUT with a shard down")
		}
		must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts", nil), 200, "list with a shard down")
		must(t, call(t, "GET", tc.URL+"/readyz", nil), 200, "readyz with one of 3 replicas down")
		tc.markDown(t, down, false)
	}
}

// TestTwoOfThreeDown: writes answer 503, never 2xx; reads answer 503 or
// the right value, never a wrong one.
func TestTwoOfThreeDown(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "t")
	for i := range 10 {
		tc.putContext(t, "t", fmt.Sprintf("c%d", i), fmt.Sprintf(`{"content":{"text":"v-%d"}}`, i))
	}
	tc.markDown(t, 0, true)
	tc.markDown(t, 2, true)
	for i := range 10 {
		u := fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i)
		if w := call(t, "PUT", u, `{"content":{"text":"lost?"}}`); w.Status != 503 || w.errCode() != "unavailable" {
			t.Errorf("PUT with 2 of 3 down = %d %s, want 503 unavailable", w.Status, w.Raw)
		}
		if g := call(t, "GET", u, nil); g.Status != 503 && !(g.Status == 200 && text(g) == fmt.Sprintf("v-%d", i)) {
			t.Errorf("GET with 2 of 3 down = %d %s, want 503 or the stored value", g.Status, g.Raw)
		}
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"new"}`); r.Status != 503 {
		t.Errorf("create topic with 2 of 3 down = %d %s, want 503", r.Status, r.Raw)
	}
	if r := call(t, "GET", tc.URL+"/api/v1/topics/t/contexts", nil); r.Status != 503 {
		t.Errorf("list with 2 of 3 down = %d, want 503", r.Status)
	}
	must(t, call(t, "GET", tc.URL+"/readyz", nil), 503, "readyz with 2 of 3 down")
	tc.markDown(t, 0, false)
	tc.markDown(t, 2, false)
	// The refused writes may have reached one replica; whatever a read now
	// returns must be a value some client wrote, and the next write wins.
	for i := range 10 {
		u := fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i)
		must(t, call(t, "PUT", u, `{"content":{"text":"after"}}`), 200, "PUT after recovery")
		if g := must(t, call(t, "GET", u, nil), 200, "GET after recovery"); text(g) != "after" {
			t.Errorf("GET c%d = %q, want after", i, text(g))
		}
	}
}

// TestRepairConverges: a shard that missed writes and deletes holds the
// same records as the others after one repair pass, and no delete comes
// back.
func TestRepairConverges(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "t")
	for i := range 50 {
		tc.putContext(t, "t", fmt.Sprintf("old%d", i), `{"content":{"text":"x"}}`)
	}
	tc.markDown(t, 2, true)
	for i := range 200 {
		tc.putContext(t, "t", fmt.Sprintf("new%d", i), `{"content":{"text":"y"}}`)
	}
	for i := range 20 {
		must(t, call(t, "DELETE", fmt.Sprintf("%s/api/v1/topics/t/contexts/old%d", tc.URL, i), nil), 204, "DELETE")
	}
	a, c := dump(t, tc.stores[0], schema.BucketContexts), dump(t, tc.stores[2], schema.BucketContexts)
	if slices.Equal(a, c) {
		t.Fatalf("the shard that was down holds the same records already; the test proves nothing")
	}
	tc.markDown(t, 2, false)
	r := must(t, call(t, "POST", tc.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	t.Logf("repair: %s", r.Raw)
	want := dump(t, tc.stores[0], schema.BucketContexts)
	for i, st := range tc.stores {
		if got := dump(t, st, schema.BucketContexts); !slices.Equal(got, want) {
			t.Errorf("shard %d after repair holds %d records, shard 0 holds %d", i, len(got), len(want))
		}
	}
	tc.markDown(t, 0, true) // reads now need the repaired shard
	for i := range 20 {
		must(t, call(t, "GET", fmt.Sprintf("%s/api/v1/topics/t/contexts/old%d", tc.URL, i), nil), 404, "GET deleted after repair")
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/new199", nil), 200, "GET written while down")
}

// TestTombstonesCollected: once every replica holds a tombstone older than
// the repair interval, a pass removes it everywhere.
func TestTombstonesCollected(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1, repairInterval: 100 * time.Millisecond})
	tc.createTopic(t, "t")
	for i := range 10 {
		tc.putContext(t, "t", fmt.Sprintf("c%d", i), `{"content":{}}`)
		must(t, call(t, "DELETE", fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i), nil), 204, "DELETE")
	}
	time.Sleep(150 * time.Millisecond)
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	for i, st := range tc.stores {
		if got := dump(t, st, schema.BucketContexts); len(got) != 0 {
			t.Errorf("shard %d still holds %v after collection", i, got)
		}
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil), 404, "GET collected")
}

// checkPlacement checks that every context key held on stores lives on
// exactly its owners in the router's Topology. Writes acknowledged at a
// Quorum may still be landing on the last replica, so it retries for a
// while before it reports the problems.
func checkPlacement(t testing.TB, tc *testCluster, stores []*storage.Store, names []string, skip func(key string) bool) {
	t.Helper()
	var problems []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		problems = placementProblems(t, tc, stores, names, skip)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func placementProblems(t testing.TB, tc *testCluster, stores []*storage.Store, names []string, skip func(string) bool) []string {
	topo := tc.router.topo.Load()
	held := map[string][]string{}
	for i, st := range stores {
		for _, rec := range dump(t, st, schema.BucketContexts) {
			k := rec[:strings.LastIndexByte(rec, '@')]
			if skip == nil || !skip(k) {
				held[k] = append(held[k], names[i])
			}
		}
	}
	var problems []string
	for k, on := range held {
		var want []string
		for _, n := range topo.Owners(k).Union {
			want = append(want, n.Name)
		}
		slices.Sort(want)
		slices.Sort(on)
		if !slices.Equal(on, want) {
			problems = append(problems, fmt.Sprintf("key %s lives on %v, want exactly its owners %v", k, on, want))
		}
	}
	slices.Sort(problems)
	return problems
}

// TestRebalanceGrowAndShrink grows 3 → 4 shards and shrinks back under a
// read and write load: no failed read of an existing key, no lost write,
// keys end on exactly their owners, and growing moves about 1/4 of them.
func TestRebalanceGrowAndShrink(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			tc := newTestCluster(t, clusterOpts{replicas: replicas})
			tc.createTopic(t, "t")
			const keys = 400
			for i := range keys {
				tc.putContext(t, "t", fmt.Sprintf("k%03d", i), fmt.Sprintf(`{"content":{"text":"%d"}}`, i))
			}
			four := append(slices.Clone(tc.want), tc.addShard(t))
			ownersBefore := map[string]string{}
			for i := range keys {
				pk := schema.Placement("t", fmt.Sprintf("k%03d", i))
				ownersBefore[pk] = tc.router.topo.Load().Cur.Ring.Owner(pk).Name
			}

			var stop atomic.Bool
			var failed, written atomic.Int64
			var wg sync.WaitGroup
			var mu sync.Mutex
			acked := map[string]string{} // key → last acknowledged text
			wg.Go(func() {               // reader of existing keys
				for i := 0; !stop.Load(); i++ {
					u := fmt.Sprintf("%s/api/v1/topics/t/contexts/k%03d", tc.URL, i%keys)
					if r := call(t, "GET", u, nil); r.Status != 200 {
						failed.Add(1)
						t.Errorf("GET k%03d during rebalance = %d %s", i%keys, r.Status, r.Raw)
					}
				}
			})
			wg.Go(func() { // writer of new keys
				for i := 0; !stop.Load(); i++ {
					id := fmt.Sprintf("w%05d", i)
					r := call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/"+id, fmt.Sprintf(`{"content":{"text":"%s"}}`, id))
					if r.Status == 201 {
						mu.Lock()
						acked[id] = id
						mu.Unlock()
						written.Add(1)
					}
				}
			})

			epoch := tc.router.topo.Load().Epoch
			tc.setShape(four, replicas)
			must(t, call(t, "POST", tc.URL+"/api/v1/admin/reload", nil), 202, "reload to 4 shards")
			waitFor(t, "rebalance to 4 shards", func() bool {
				tp := tc.router.topo.Load()
				return tp.State == placement.StateStable && tp.Epoch > epoch && len(tp.Cur.Ring.Nodes()) == 4
			})
			moved := 0
			for pk, before := range ownersBefore {
				if tc.router.topo.Load().Cur.Ring.Owner(pk).Name != before {
					moved++
				}
			}
			t.Logf("grow 3 → 4: %d of %d keys changed primary owner (%.1f%%, ideal 25%%)", moved, keys, 100*float64(moved)/keys)
			if f := float64(moved) / keys; f < 0.15 || f > 0.35 {
				t.Errorf("grow moved %.2f of the keys, want about 0.25", f)
			}
			// Keys the writer is still writing may be landing: check the rest.
			checkPlacement(t, tc, tc.stores, []string{"sh-1", "sh-2", "sh-3", "sh-4"}, func(k string) bool { return strings.HasPrefix(k, "t/w") })

			epoch = tc.router.topo.Load().Epoch
			tc.setShape(four[:3], replicas)
			must(t, call(t, "POST", tc.URL+"/api/v1/admin/reload", nil), 202, "reload to 3 shards")
			waitFor(t, "rebalance back to 3 shards", func() bool {
				tp := tc.router.topo.Load()
				return tp.State == placement.StateStable && tp.Epoch > epoch && len(tp.Cur.Ring.Nodes()) == 3
			})
			stop.Store(true)
			wg.Wait()
			checkPlacement(t, tc, tc.stores[:3], []string{"sh-1", "sh-2", "sh-3"}, nil)
			if left := dump(t, tc.stores[3], schema.BucketContexts); len(left) != 0 {
				t.Errorf("removed shard still holds %d contexts", len(left))
			}
			if failed.Load() > 0 {
				t.Errorf("%d reads of existing keys failed during rebalances", failed.Load())
			}
			mu.Lock()
			defer mu.Unlock()
			for id, want := range acked {
				if g := call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/"+id, nil); g.Status != 200 || text(g) != want {
					t.Errorf("acknowledged write %s = %d %q, want %q", id, g.Status, text(g), want)
				}
			}
			t.Logf("%d writes acknowledged during the rebalances, all read back", written.Load())
		})
	}
}

// TestStaleRouterIsFenced: a second router that has not seen a membership
// change cannot write to the old owners: the shards refuse its epoch, it
// reloads the map, and its write lands where the new Ring says.
func TestStaleRouterIsFenced(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	b := tc.newRouter(t, Config{Nodes: tc.want, Registry: nil, CacheBytes: 0})
	waitFor(t, "router B loads the map", func() bool { return b.topo.Load().Epoch > 0 })
	// Freeze B's view: stop its background work so it does not notice the
	// change by itself, as a router that is slow to probe would not.
	b.bgCancel()
	b.bgWG.Wait()

	four := append(slices.Clone(tc.want), tc.addShard(t))
	epoch := tc.router.topo.Load().Epoch
	tc.setShape(four, 1)
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/reload", nil), 202, "reload")
	waitFor(t, "rebalance", func() bool {
		tp := tc.router.topo.Load()
		return tp.State == placement.StateStable && tp.Epoch > epoch
	})
	if b.topo.Load().Epoch != epoch {
		t.Fatalf("router B moved on by itself; the test proves nothing")
	}
	for i := range 40 {
		id := fmt.Sprintf("b%d", i)
		if _, _, err := b.coord.Write(context.Background(), schema.Placement("t", id), schema.BucketContexts, []byte(schema.ContextKey("t", id)), false, mustEncode(t, tc.router, id), storage.CondNone, 0); err != nil {
			t.Fatalf("write through router B: %v", err)
		}
	}
	if b.topo.Load().Epoch <= epoch {
		t.Errorf("router B still at epoch %d after its writes were refused", b.topo.Load().Epoch)
	}
	for i := range 40 {
		must(t, call(t, "GET", fmt.Sprintf("%s/api/v1/topics/t/contexts/b%d", tc.URL, i), nil), 200, "GET through router A of a write through B")
	}
	checkPlacement(t, tc, tc.stores, []string{"sh-1", "sh-2", "sh-3", "sh-4"}, nil)
}

func mustEncode(t testing.TB, r *Router, id string) []byte {
	t.Helper()
	v, err := r.codec.EncodeDocument(&schema.Document{Metadata: schema.Metadata{ID: id, CreatedAt: "2024-01-01T00:00:00Z"}, Content: schema.Content{Text: id}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConditionalWritesReplicated: creates and If-Match replaces keep their
// meaning with replicas. With the key's primary down they answer 503 and
// store nothing (no other owner decides for it: see TestWriteTxnTwoPrimaries
// in package coord), while unconditional writes, deletes and reads go on;
// once it is back they work again.
func TestConditionalWritesReplicated(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "t")
	base := tc.URL + "/api/v1/topics/t/contexts"
	for round := range 3 {
		id := fmt.Sprintf("c%d", round)
		primary := tc.router.topo.Load().Owners(schema.Placement("t", id)).Union[0]
		idx := slices.IndexFunc(tc.nodes, func(n placement.Node) bool { return n.Name == primary.Name })
		switch round {
		case 1: // the primary is down and the router knows it
			tc.markDown(t, idx, true)
		case 2: // the primary just died: the router has not noticed yet (it takes 3 probes of 50 ms)
			for i := range tc.faults {
				tc.markDown(t, i, false)
			}
			tc.faults[idx].down.Store(true)
		}
		if round > 0 {
			if r := call(t, "POST", base, fmt.Sprintf(`{"metadata":{"id":"%s"},"content":{"text":"0"}}`, id)); r.Status != 503 || r.errCode() != "unavailable" {
				t.Fatalf("round %d: create with the primary down = %d %s, want 503 unavailable", round, r.Status, r.Raw)
			}
			must(t, call(t, "GET", base+"/"+id, nil), 404, "GET after a refused create")
			must(t, call(t, "PUT", base+"/"+id, `{"content":{"text":"blind"}}`), 201, "unconditional PUT with the primary down")
			g := must(t, call(t, "GET", base+"/"+id, nil), 200, "GET with the primary down")
			if r := call(t, "PUT", base+"/"+id, `{"content":{"text":"x"}}`, "If-Match", g.Header.Get("ETag")); r.Status != 503 {
				t.Errorf("round %d: If-Match PUT with the primary down = %d %s, want 503", round, r.Status, r.Raw)
			}
			must(t, call(t, "DELETE", base+"/"+id, nil), 204, "DELETE with the primary down")
			tc.markDown(t, idx, false)
			tc.faults[idx].down.Store(false)
			waitFor(t, "the router sees the primary back", primary.Up)
		}
		must(t, call(t, "POST", base, fmt.Sprintf(`{"metadata":{"id":"%s"},"content":{"text":"1"}}`, id)), 201, "create")
		must(t, call(t, "POST", base, fmt.Sprintf(`{"metadata":{"id":"%s"},"content":{"text":"2"}}`, id)), 409, "create again")
		g := must(t, call(t, "GET", base+"/"+id, nil), 200, "GET")
		must(t, call(t, "PUT", base+"/"+id, `{"content":{"text":"3"}}`, "If-Match", g.Header.Get("ETag")), 200, "PUT If-Match current")
		must(t, call(t, "PUT", base+"/"+id, `{"content":{"text":"4"}}`, "If-Match", g.Header.Get("ETag")), 412, "PUT If-Match stale")
		if g := must(t, call(t, "GET", base+"/"+id, nil), 200, "GET"); text(g) != "3" {
			t.Errorf("round %d: GET = %q, want 3", round, text(g))
		}
		must(t, call(t, "DELETE", base+"/"+id, nil), 204, "DELETE")
		must(t, call(t, "DELETE", base+"/"+id, nil), 404, "DELETE again")
	}
}

// TestConditionalWriteAcrossEpochChange: a conditional write applied at its
// primary whose replication the other replicas refuse (they hold a newer
// cluster map) is replicated again under that map, not decided again, which
// would find the write itself and report a conflict (409 for a create, 404
// for a delete).
func TestConditionalWriteAcrossEpochChange(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	// moveOn installs another router's map of the same Shape, one epoch
	// on, on every shard but pk's primary, as if this router were about to
	// learn of it.
	moveOn := func(pk string) {
		t.Helper()
		cur := tc.router.topo.Load()
		primary := cur.Owners(pk).Union[0]
		m := tc.router.cluster.MapOf(cur)
		m.Epoch++
		for j, n := range tc.nodes {
			if n.Name == primary.Name {
				continue
			}
			w := storage.Write{Record: storage.Record{Key: []byte(storage.MapKey), Version: m.Epoch, Value: m.Encode()}}
			if _, err := tc.stores[j].Apply(context.Background(), storage.ClusterBucket, []storage.Write{w}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 3 {
		name := fmt.Sprintf("t%d", i)
		moveOn(name)
		must(t, call(t, "POST", tc.URL+"/api/v1/topics", fmt.Sprintf(`{"name":%q}`, name)), 201, "create topic as the map moves on")
		u := tc.URL + "/api/v1/topics/" + name + "/contexts/c"
		must(t, call(t, "PUT", u, `{"content":{"text":"x"}}`), 201, "PUT")
		moveOn(name + "/c")
		must(t, call(t, "DELETE", u, nil), 204, "DELETE as the map moves on")
		must(t, call(t, "GET", u, nil), 404, "GET after DELETE")
	}
}

// gatedShard holds reads of the cluster map until gate is closed: a router
// over it cannot load the map.
type gatedShard struct {
	Shard
	streams
	gate chan struct{}
}

func (g *gatedShard) Get(ctx context.Context, b string, k []byte) (storage.Record, error) {
	if b == storage.ClusterBucket {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return storage.Record{}, ctx.Err()
		}
	}
	return g.Shard.Get(ctx, b, k)
}

// TestRepairWaitsForClusterMap: a repair asked of a router that has not
// loaded the cluster map yet waits for it. Run at once, it would copy under
// epoch 0, which the shards refuse, and place keys by the config file
// rather than by the map.
func TestRepairWaitsForClusterMap(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "t")
	// A record sh-3 missed.
	missed := storage.Write{Record: storage.Record{Key: []byte(schema.ContextKey("t", "c")), Version: tc.router.clock.Next(), Value: mustEncode(t, tc.router, "c")}}
	for _, st := range tc.stores[:2] {
		if _, err := st.Apply(context.Background(), schema.BucketContexts, []storage.Write{missed}); err != nil {
			t.Fatal(err)
		}
	}

	gate := make(chan struct{})
	var nodes []placement.Node
	for _, n := range tc.nodes {
		nodes = append(nodes, placement.Node{Name: n.Name, Address: n.Address, Shard: &gatedShard{Shard: n.Shard, streams: streams{n.Shard}, gate: gate}})
	}
	r2 := tc.newRouter(t, Config{Nodes: nodes, Replicas: 3, CacheBytes: 1, RepairInterval: time.Hour})
	done := make(chan error, 1)
	go func() {
		_, err := r2.cluster.Repair(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("repair before the cluster map is loaded returned at once (err %v), want it to wait for the map", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("repair once the map is loaded: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("repair did not finish within 10s of the map loading")
	}
	if got := dump(t, tc.stores[2], schema.BucketContexts); !slices.Equal(got, []string{fmt.Sprintf("t/c@%d", missed.Version)}) {
		t.Errorf("sh-3 after repair holds %q, want t/c@%d", got, missed.Version)
	}
}

// TestPutAfterMissedDeleteIsCreate: a replica that missed a delete still
// holds the old record; a PUT after the delete creates (201) all the same.
func TestPutAfterMissedDeleteIsCreate(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "t")
	tc.putContext(t, "t", "k", `{"content":{"text":"one"}}`)
	waitFor(t, "all replicas hold k", func() bool {
		for _, st := range tc.stores {
			if len(dump(t, st, schema.BucketContexts)) != 1 {
				return false
			}
		}
		return true
	})
	// Fail the replica for the delete only, too briefly for the prober to
	// mark it down (3 missed probes of 50 ms): no repair runs when it is back.
	tc.faults[2].down.Store(true)
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/t/contexts/k", nil), 204, "DELETE with a replica failing")
	tc.faults[2].down.Store(false)
	if d := dump(t, tc.stores[2], schema.BucketContexts); len(d) != 1 || strings.HasSuffix(d[0], "†") {
		t.Fatalf("the replica that was down holds %v; want the old live record", d)
	}
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/k", `{"content":{"text":"two"}}`), 201, "PUT after the delete")
}
