package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// putMessageRecords stores n message records of topic/id on st alone, as a
// shard that got an append the others missed would hold them.
func putMessageRecords(t testing.TB, st *storage.Store, topic, id string, n int) {
	t.Helper()
	var ws []storage.Write
	for seq := 1; seq <= n; seq++ {
		ws = append(ws, storage.Write{Record: storage.Record{Key: schema.MessageKey(topic, id, uint64(seq)), Version: uint64(1000 + seq), Value: []byte(fmt.Sprint("turn ", seq))}})
	}
	if _, err := st.Apply(context.Background(), schema.BucketMessages, ws); err != nil {
		t.Fatalf("Apply(messages) = %v", err)
	}
}

// TestMessageRecordsCarried checks that message records go where their
// context goes: repair copies them to every owner, a backup restored into
// another shape puts each on exactly its context's owners, and deleting
// the topic deletes them.
func TestMessageRecordsCarried(t *testing.T) {
	src := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	src.createTopic(t, "t")
	putMessageRecords(t, src.stores[0], "t", "conv1", 30)
	putMessageRecords(t, src.stores[0], "t", "conv10", 5)
	putMessageRecords(t, src.stores[0], "t", "c2", 7)
	want := dump(t, src.stores[0], schema.BucketMessages)
	if len(want) != 42 || len(dump(t, src.stores[1], schema.BucketMessages)) != 0 {
		t.Fatalf("setup: shard 0 holds %d message records, shard 1 %d; want 42 and 0", len(want), len(dump(t, src.stores[1], schema.BucketMessages)))
	}
	must(t, call(t, "POST", src.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	for i, st := range src.stores {
		if got := dump(t, st, schema.BucketMessages); !slices.Equal(got, want) {
			t.Errorf("shard %d after repair holds %d message records, want the %d of shard 0", i, len(got), len(want))
		}
	}

	// Restore into one copy on each of two shards: each record lands on
	// the owner of its context, and only there.
	info, sections := fetchBackup(t, src.URL)
	var all []bucketRecord
	for _, name := range info.Shards[:1] { // every shard holds everything
		all = append(all, sections[name]...)
	}
	dst := newTestCluster(t, clusterOpts{shards: 2})
	if r, _ := postRestore(t, dst.URL, restoreBody(t, all), false); r.Status != 200 {
		t.Fatalf("restore = %d %s", r.Status, r.Raw)
	}
	topo := dst.router.topo.Load()
	convs := map[string]int{"conv1": 30, "conv10": 5, "c2": 7}
	owners := map[string]bool{}
	for id, n := range convs {
		owner := topo.Owners(schema.Placement("t", id)).Union[0].Name
		owners[owner] = true
		for i, st := range dst.stores {
			p, err := st.Scan(context.Background(), schema.BucketMessages, storage.ScanOptions{Prefix: schema.MessagePrefix("t", id), Limit: 100})
			if err != nil {
				t.Fatalf("Scan(messages of %s) = %v", id, err)
			}
			want := 0
			if dst.nodes[i].Name == owner {
				want = n
			}
			if len(p.Records) != want {
				t.Errorf("%s holds %d messages of %s after restore, want %d (its owner is %s)", dst.nodes[i].Name, len(p.Records), id, want, owner)
			}
		}
	}
	if len(owners) < 2 {
		t.Logf("every conversation is owned by one shard: placement is not tested across shards")
	}

	// Deleting the topic deletes its messages on every shard.
	must(t, call(t, "DELETE", src.URL+"/api/v1/topics/t", nil), 204, "DELETE topic")
	for i, st := range src.stores {
		for _, rec := range dump(t, st, schema.BucketMessages) {
			if !strings.HasSuffix(rec, "†") {
				t.Errorf("shard %d holds live message %s after its topic was deleted", i, rec)
			}
		}
	}
}
