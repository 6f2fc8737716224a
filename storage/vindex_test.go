package storage

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

const annDim = 48

// waitReady waits (bounded) for the store's start-up pass to end.
func waitReady(t testing.TB, s *Store) {
	t.Helper()
	for range 2000 {
		if s.VectorIndexStats().Ready {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("vector index not ready after 10 s: %+v", s.VectorIndexStats())
}

func annKey(i int) []byte { return fmt.Appendf(nil, "t\x00c%05d", i) }

// putVectors writes set's rows as t\x00c<i> at version 10+i, tagged "even"
// for even i, in batches.
func putVectors(t testing.TB, s *Store, set *vindextest.Set) {
	t.Helper()
	for lo := 0; lo < set.Len(); lo += 500 {
		var ws []Write
		for i := lo; i < min(lo+500, set.Len()); i++ {
			tags := []string{"all"}
			if i%2 == 0 {
				tags = append(tags, "even")
			}
			ws = append(ws, Write{Record: Record{Key: annKey(i), Version: uint64(10 + i), Value: EncodeVector(Vector{Model: "m", Tags: tags, Values: set.Row(i)})}})
		}
		if _, err := s.Apply(context.Background(), "vectors", ws); err != nil {
			t.Fatalf("Apply = %v, want nil", err)
		}
	}
}

func matchKeys(ms []Match) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Key)
	}
	return out
}

// recallVsExact asks every query from the index and by the exact scan and
// returns the share of the exact top k the index found. It fails if an
// index answer says Exact.
func recallVsExact(t testing.TB, s *Store, queries *vindextest.Set, k int, tags []string) float64 {
	t.Helper()
	found, total := 0, 0
	for i := range queries.Len() {
		q := TopKQuery{Prefix: []byte("t\x00"), Query: queries.Row(i), K: k, Model: "m", Tags: tags}
		ann, err := s.TopK(context.Background(), "vectors", q)
		if err != nil {
			t.Fatalf("TopK = %v, want nil", err)
		}
		if ann.Exact {
			t.Fatalf("TopK from a ready index said Exact")
		}
		q.Exact = true
		exact, err := s.TopK(context.Background(), "vectors", q)
		if err != nil || !exact.Exact {
			t.Fatalf("TopK(Exact) = %+v, %v; want an exact answer", exact.Exact, err)
		}
		got := matchKeys(ann.Matches)
		for _, w := range matchKeys(exact.Matches) {
			total++
			if slices.Contains(got, w) {
				found++
			}
		}
	}
	return float64(found) / float64(total)
}

func TestVectorIndexRecallAndFilters(t *testing.T) {
	s := openTestStore(t)
	base := vindextest.Clustered(1, 2, 4000, annDim, 40, 1)
	queries := vindextest.Clustered(1, 3, 40, annDim, 40, 1)
	putVectors(t, s, base)
	waitReady(t, s)
	st := s.VectorIndexStats()
	if ix := st.Indexes["vectors"]; len(ix) != 1 || ix[0].Vectors != base.Len() {
		t.Fatalf("indexes = %+v, want one of %d vectors", ix, base.Len())
	}
	if r := recallVsExact(t, s, queries, 10, nil); r < 0.95 {
		t.Errorf("recall@10 = %.3f, want >= 0.95", r)
	}
	if r := recallVsExact(t, s, queries, 10, []string{"even"}); r < 0.95 {
		t.Errorf("recall@10 with tag even = %.3f, want >= 0.95", r)
	}
	// A tag no vector carries finds nothing, and says so exactly.
	res, err := s.TopK(context.Background(), "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: queries.Row(0), K: 10, Model: "m", Tags: []string{"none"}})
	if err != nil || len(res.Matches) != 0 {
		t.Errorf("TopK(tag none) = %+v, %v; want no matches", res, err)
	}
}

func TestVectorIndexNeverReturnsReplacedDeletedOrPurged(t *testing.T) {
	s := openTestStore(t)
	base := vindextest.Clustered(1, 2, 1500, annDim, 20, 1)
	putVectors(t, s, base)
	ctx := context.Background()
	far := make([]float32, annDim)
	far[0] = 1
	// 0 is rewritten far away, 1 deleted, 2 purged.
	if _, err := s.Apply(ctx, "vectors", []Write{
		{Record: Record{Key: annKey(0), Version: 100000, Value: EncodeVector(Vector{Model: "m", Values: far})}},
		{Record: Record{Key: annKey(1), Version: 100000, Tombstone: true}},
	}); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	if _, err := s.Purge(ctx, "vectors", []Record{{Key: annKey(2), Version: 12}}); err != nil {
		t.Fatalf("Purge = %v", err)
	}
	waitReady(t, s)
	for i := range 3 {
		res, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: base.Row(i), K: 10, Model: "m"})
		if err != nil || res.Exact {
			t.Fatalf("TopK = %+v, %v; want an index answer", res.Exact, err)
		}
		for _, m := range res.Matches {
			if string(m.Key) == string(annKey(i)) {
				t.Errorf("TopK(old vector of %q) returned it (version %d) after it was rewritten, deleted or purged", annKey(i), m.Version)
			}
		}
	}
	// The rewritten vector is found where it is now, at its new version.
	res, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: far, K: 1, Model: "m"})
	if err != nil || len(res.Matches) != 1 || string(res.Matches[0].Key) != string(annKey(0)) || res.Matches[0].Version != 100000 {
		t.Errorf("TopK(new vector) = %+v, %v; want %q at version 100000", res.Matches, err, annKey(0))
	}
}

// A store keeps its indexes across a restart, and one whose index files
// are older than its records (writes made while it ran without indexes,
// as after a crash) reconciles them before it answers from them.
func TestVectorIndexRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	base := vindextest.Clustered(1, 2, 2000, annDim, 20, 1)
	queries := vindextest.Clustered(1, 3, 20, annDim, 20, 1)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	putVectors(t, s, base)
	waitReady(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(path+".vindex", "*", "*.vidx")); len(m) != 1 {
		t.Fatalf("index files after Close = %v, want one", m)
	}

	// Without indexes: delete 0, rewrite 1 far away, purge 2. The files stay as
	// they were.
	s, err = Open(path, Options{VectorBuckets: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	far := make([]float32, annDim)
	far[1] = 1
	ctx := context.Background()
	if _, err := s.Apply(ctx, "vectors", []Write{
		{Record: Record{Key: annKey(0), Version: 100000, Tombstone: true}},
		{Record: Record{Key: annKey(1), Version: 100000, Value: EncodeVector(Vector{Model: "m", Values: far})}},
	}); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	if n, err := s.Purge(ctx, "vectors", []Record{{Key: annKey(2), Version: 12}}); n != 1 || err != nil {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	s.Close()

	s = openTestStoreAt(t, path, Options{})
	// Whatever the pass has done, no answer returns the old vectors.
	for round := 0; ; round++ {
		ready := s.VectorIndexStats().Ready
		for i := range 3 {
			res, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: base.Row(i), K: 5, Model: "m"})
			if err != nil {
				t.Fatalf("TopK = %v", err)
			}
			// The pass may end while TopK runs: only an answer given while
			// the store still says not ready, after it as before, must be exact.
			if !ready && !s.VectorIndexStats().Ready && !res.Exact {
				t.Errorf("TopK before the pass ended did not say Exact")
			}
			for _, m := range res.Matches {
				if string(m.Key) == string(annKey(i)) {
					t.Errorf("TopK(old vector of %q) returned it after a restart (ready %v)", annKey(i), ready)
				}
			}
		}
		if ready || round > 2000 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitReady(t, s)
	if r := recallVsExact(t, s, queries, 10, nil); r < 0.95 {
		t.Errorf("recall@10 after restart = %.3f, want >= 0.95", r)
	}
	if ix := s.VectorIndexStats().Indexes["vectors"]; len(ix) != 1 || ix[0].Vectors != base.Len()-2 {
		t.Errorf("indexes after restart = %+v, want one of %d vectors", ix, base.Len()-2)
	}
}

// A value the shard cannot read (sealed by the router) is stored, never
// indexed, and does not disturb the index of the others.
func TestVectorIndexSkipsSealedValues(t *testing.T) {
	s := openTestStore(t)
	base := vindextest.Clustered(1, 2, 300, annDim, 5, 1)
	putVectors(t, s, base)
	ctx := context.Background()
	if _, err := s.Apply(ctx, "vectors", []Write{{Record: Record{Key: annKey(5), Version: 100000, Value: []byte("\xffsealed bytes")}}}); err != nil {
		t.Fatalf("Apply(sealed) = %v, want nil", err)
	}
	waitReady(t, s)
	if ix := s.VectorIndexStats().Indexes["vectors"]; len(ix) != 1 || ix[0].Vectors != base.Len()-1 {
		t.Errorf("indexes = %+v, want one of %d vectors", ix, base.Len()-1)
	}
	res, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: base.Row(5), K: 3, Model: "m"})
	if err != nil || res.Exact || len(res.Matches) != 3 || slices.Contains(matchKeys(res.Matches), string(annKey(5))) {
		t.Errorf("TopK = %+v, %v; want 3 index matches without the sealed key", res, err)
	}
}

// Reindex, asked over the wire, rebuilds the graphs and reruns the pass;
// the index answers as before once it ends.
func TestVectorIndexReindex(t *testing.T) {
	s := openTestStore(t)
	base := vindextest.Clustered(1, 2, 1500, annDim, 20, 1)
	queries := vindextest.Clustered(1, 3, 20, annDim, 20, 1)
	putVectors(t, s, base)
	ctx := context.Background()
	if _, err := s.Apply(ctx, "vectors", []Write{{Record: Record{Key: annKey(3), Version: 100000, Tombstone: true}}}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	srv := httptest.NewServer(NewHandler(s, nil))
	defer srv.Close()
	if err := NewClient("sh", srv.URL, nil).Reindex(ctx); err != nil {
		t.Fatalf("Reindex = %v, want nil", err)
	}
	waitReady(t, s)
	for range 2000 {
		if ix := s.VectorIndexStats().Indexes["vectors"]; len(ix) == 1 && !ix[0].Building {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	ix := s.VectorIndexStats().Indexes["vectors"]
	if len(ix) != 1 || ix[0].Vectors != base.Len()-1 || ix[0].Deleted != 0 || ix[0].Building {
		t.Fatalf("indexes after reindex = %+v, want one of %d vectors, no deleted slots, built", ix, base.Len()-1)
	}
	if r := recallVsExact(t, s, queries, 10, nil); r < 0.95 {
		t.Errorf("recall@10 after reindex = %.3f, want >= 0.95", r)
	}
}

// A Txn's vector writes (several buckets in one transaction) reach the
// index as Apply's do.
func TestVectorIndexTxn(t *testing.T) {
	s := openTestStore(t)
	base := vindextest.Clustered(1, 2, 300, annDim, 5, 1)
	putVectors(t, s, base)
	waitReady(t, s)
	far := make([]float32, annDim)
	far[2] = 1
	ctx := context.Background()
	if _, err := s.Txn(ctx, []TxnWrite{
		{Bucket: "contexts", Write: Write{Record: Record{Key: annKey(7), Version: 100000, Value: []byte("doc")}}},
		{Bucket: "vectors", Write: Write{Record: Record{Key: annKey(7), Version: 100000, Value: EncodeVector(Vector{Model: "m", Values: far})}}},
		{Bucket: "vectors", Write: Write{Record: Record{Key: annKey(8), Version: 100000, Tombstone: true}}},
	}); err != nil {
		t.Fatalf("Txn = %v, want nil", err)
	}
	res, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: far, K: 1, Model: "m"})
	if err != nil || res.Exact || len(res.Matches) != 1 || string(res.Matches[0].Key) != string(annKey(7)) {
		t.Errorf("TopK(the Txn's vector) = %+v, %v; want %q from the index", res, err, annKey(7))
	}
	if ix := s.VectorIndexStats().Indexes["vectors"]; len(ix) != 1 || ix[0].Vectors != base.Len()-1 {
		t.Errorf("indexes after the Txn = %+v, want %d vectors", ix, base.Len()-1)
	}
}
