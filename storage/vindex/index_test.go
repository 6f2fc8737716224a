package vindex

import (
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

func TestRecallAgainstBruteForce(t *testing.T) {
	base, queries := testSet(6000, 1), testSet(200, 2)
	x := newTestIndex(t, base)
	exact := vindextest.Exact(base, queries, 10, nil)
	for _, tc := range []struct {
		ef        int
		minRecall float64
	}{{DefaultEf, 0.95}, {128, 0.98}} {
		got := make([][]string, queries.Len())
		want := make([][]string, queries.Len())
		for q := range queries.Len() {
			res := search(t, x, Query{Vector: queries.Row(q), K: 10, Ef: tc.ef})
			if res.Exact || len(res.Hits) != 10 {
				t.Fatalf("Search(ef %d) = %d hits, exact %v; want 10, false", tc.ef, len(res.Hits), res.Exact)
			}
			if !slices.IsSortedFunc(res.Hits, func(a, b Hit) int { return -cmpFloat(a.Score, b.Score) }) {
				t.Fatalf("Search(ef %d) hits not best first: %v", tc.ef, res.Hits)
			}
			got[q], want[q] = keysOf(res.Hits), exactKeys(exact[q])
		}
		if r := recallKeys(got, want); r < tc.minRecall {
			t.Errorf("recall@10 at ef %d = %.4f, want ≥ %.2f", tc.ef, r, tc.minRecall)
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestScoresAreCosines(t *testing.T) {
	base := testSet(500, 1)
	x := newTestIndex(t, base)
	q := make([]float32, testDim)
	for i := range q {
		q[i] = 3 * base.Row(17)[i] // not unit length: the index normalises
	}
	res := search(t, x, Query{Vector: q, K: 3})
	if len(res.Hits) != 3 || res.Hits[0].Key != keyOf(17) || math.Abs(res.Hits[0].Score-1) > 1e-5 {
		t.Fatalf("Search(3 × vector 17) = %v, want %s first with score 1", res.Hits, keyOf(17))
	}
	for _, h := range res.Hits {
		var id int
		for id = range base.Len() {
			if keyOf(id) == h.Key {
				break
			}
		}
		var want float64
		for j, f := range base.Row(id) {
			want += float64(f) * float64(base.Row(17)[j])
		}
		if math.Abs(h.Score-want) > 1e-5 {
			t.Errorf("Score(%s) = %v, want %v", h.Key, h.Score, want)
		}
	}
}

// A deleted or rewritten key is never returned with a vector it no longer
// has, whatever the query.
func TestDeletedAndReplacedNeverReturned(t *testing.T) {
	base, fresh := testSet(3000, 1), testSet(3000, 9)
	x := newTestIndex(t, base)
	deleted := map[string]bool{}
	replaced := map[string]bool{}
	for i := 0; i < 600; i++ {
		if ok, err := x.Delete(keyOf(i), 2); !ok || err != nil {
			t.Fatalf("Delete(%q, 2) = %v, %v; want true, nil", keyOf(i), ok, err)
		}
		deleted[keyOf(i)] = true
	}
	for i := 600; i < 1200; i++ {
		if ok, err := x.Add(keyOf(i), 3, fresh.Row(i)); !ok || err != nil {
			t.Fatalf("Add(%q, 3) = %v, %v; want true, nil", keyOf(i), ok, err)
		}
		replaced[keyOf(i)] = true
	}
	// Query with the old vectors themselves: the likeliest to surface.
	for i := 0; i < 1200; i += 7 {
		for _, ef := range []int{10, 64} {
			res := search(t, x, Query{Vector: base.Row(i), K: 10, Ef: ef})
			for _, h := range res.Hits {
				switch {
				case deleted[h.Key]:
					t.Fatalf("Search(old vector %d) returned deleted %s", i, h.Key)
				case replaced[h.Key] && h.Version != 3:
					t.Fatalf("Search(old vector %d) returned %s at version %d, want 3", i, h.Key, h.Version)
				case replaced[h.Key] && h.Key == keyOf(i) && h.Score > 0.99:
					t.Fatalf("Search(old vector %d) matched its replaced vector: %v", i, h)
				}
			}
		}
	}
	// The new vectors are found.
	for i := 600; i < 1200; i += 50 {
		res := search(t, x, Query{Vector: fresh.Row(i), K: 1})
		if len(res.Hits) != 1 || res.Hits[0].Key != keyOf(i) || res.Hits[0].Version != 3 {
			t.Errorf("Search(new vector %d) = %v, want %s at version 3", i, res.Hits, keyOf(i))
		}
	}
	if s := x.Stats(); s.Vectors != 2400 {
		t.Errorf("Stats().Vectors = %d, want 2400", s.Vectors)
	}
}

func TestVersionsOrderWrites(t *testing.T) {
	vs := testSet(3, 1)
	x, err := New(Config{Dim: testDim})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	steps := []struct {
		name    string
		do      func() (bool, error)
		applied bool
		version uint64
		live    bool
	}{
		{"add v5", func() (bool, error) { return x.Add("a", 5, vs.Row(0)) }, true, 5, true},
		{"add v4 (older)", func() (bool, error) { return x.Add("a", 4, vs.Row(1)) }, false, 5, true},
		{"add v5 again", func() (bool, error) { return x.Add("a", 5, vs.Row(1)) }, false, 5, true},
		{"delete v3 (older)", func() (bool, error) { return x.Delete("a", 3) }, false, 5, true},
		{"delete v7", func() (bool, error) { return x.Delete("a", 7) }, true, 7, false},
		{"add v6 after delete v7", func() (bool, error) { return x.Add("a", 6, vs.Row(1)) }, false, 7, false},
		{"add v8", func() (bool, error) { return x.Add("a", 8, vs.Row(2)) }, true, 8, true},
		{"zero vector v9", func() (bool, error) { return x.Add("a", 9, make([]float32, testDim)) }, true, 9, false},
		{"remove", func() (bool, error) { return x.Remove("a") }, true, 0, false},
		{"add v1 after remove", func() (bool, error) { return x.Add("a", 1, vs.Row(0)) }, true, 1, true},
	}
	for _, s := range steps {
		applied, err := s.do()
		if err != nil || applied != s.applied {
			t.Fatalf("%s = %v, %v; want %v, nil", s.name, applied, err, s.applied)
		}
		if v, live, _ := x.Version("a"); v != s.version || live != s.live {
			t.Fatalf("after %s: Version(a) = %d, live %v; want %d, %v", s.name, v, live, s.version, s.live)
		}
		res := search(t, x, Query{Vector: vs.Row(0), K: 3})
		if got := len(res.Hits); got != map[bool]int{true: 1, false: 0}[s.live] {
			t.Fatalf("after %s: Search = %v, want live %v", s.name, res.Hits, s.live)
		}
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	base := testSet(100, 1)
	x := newTestIndex(t, base)
	nan := slices.Clone(base.Row(0))
	nan[3] = float32(math.NaN())
	inf := slices.Clone(base.Row(0))
	inf[5] = float32(math.Inf(1))
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"short vector", second(x.Add("new", 2, base.Row(0)[:10]))},
		{"NaN", second(x.Add(keyOf(1), 2, nan))},
		{"Inf", second(x.Add(keyOf(1), 2, inf))},
		{"empty key", second(x.Add("", 2, base.Row(0)))},
		{"k 0", second(x.Search(Query{Vector: base.Row(0), K: 0}))},
		{"k too big", second(x.Search(Query{Vector: base.Row(0), K: MaxK + 1}))},
		{"query dim", second(x.Search(Query{Vector: base.Row(0)[:5], K: 1}))},
	} {
		if !errors.Is(tc.err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, tc.err)
		}
	}
	if v, live, _ := x.Version(keyOf(1)); v != 1 || !live || x.Len() != 100 {
		t.Errorf("after bad input: Version(%s) = %d, %v, Len %d; want 1, true, 100", keyOf(1), v, live, x.Len())
	}
	if _, err := New(Config{Dim: 0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New(Dim 0) err = %v, want ErrInvalid", err)
	}
	res := search(t, x, Query{Vector: make([]float32, testDim), K: 5})
	if len(res.Hits) != 0 || res.Exact {
		t.Errorf("Search(zero vector) = %v, exact %v; want nothing", res.Hits, res.Exact)
	}
}

func second[T any](_ T, err error) error { return err }

// Filters against brute force: an unselective filter keeps ANN recall; a
// selective one either answers in full or says Exact, and the caller's
// exact answer (simulated here by brute force) is then right.
func TestFilterAgainstBruteForce(t *testing.T) {
	base, queries := testSet(6000, 1), testSet(100, 2)
	x := newTestIndex(t, base)
	for _, tc := range []struct {
		name      string
		every     int // keys i with i%every == 0 pass
		ef        int
		minRecall float64
		mayExact  bool
		mustExact bool
	}{
		{"half", 2, 0, 0.95, false, false},
		{"a tenth", 10, 0, 0.95, false, false},
		{"one in 200", 200, 0, 1, true, false},
		{"one in 2000", 2000, 0, 1, true, false},
		// Six pass and ef is 10: the walk would cover the whole graph for
		// fewer than k hits, so it gives up past half and says Exact.
		{"one in 1000, small ef", 1000, 10, 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep := func(i int) bool { return i%tc.every == 0 }
			exact := vindextest.Exact(base, queries, 10, keep)
			filter := func(key string) bool {
				var i int
				for j := 1; j < len(key); j++ {
					i = i*10 + int(key[j]-'0')
				}
				return keep(i)
			}
			got := make([][]string, queries.Len())
			want := make([][]string, queries.Len())
			exacts := 0
			for q := range queries.Len() {
				res := search(t, x, Query{Vector: queries.Row(q), K: 10, Ef: tc.ef, Filter: filter})
				if tc.mustExact && !res.Exact {
					t.Fatalf("Search with filter %s: %d hits after walking %d of %d, not exact", tc.name, len(res.Hits), res.Walked, x.Len())
				}
				for _, h := range res.Hits {
					if !filter(h.Key) {
						t.Fatalf("Search returned %s, which the filter rejects", h.Key)
					}
				}
				want[q] = exactKeys(exact[q])
				got[q] = keysOf(res.Hits)
				if res.Exact {
					if !tc.mayExact {
						t.Fatalf("Search with filter %s: exact fallback after %d walked", tc.name, res.Walked)
					}
					exacts++
					got[q] = want[q] // the caller scans
				}
			}
			if r := recallKeys(got, want); r < tc.minRecall {
				t.Errorf("recall@10 with filter %s = %.4f (%d exact fallbacks), want ≥ %.2f", tc.name, r, exacts, tc.minRecall)
			}
		})
	}
}

// Deleting past the share rebuilds the graph in the background; answers
// stay right before, during and after, and the deleted slots are gone.
func TestRebuildDropsDeletedSlots(t *testing.T) {
	base, queries := testSet(4000, 1), testSet(50, 2)
	x := newTestIndex(t, base)
	for i := 0; i < 1500; i++ { // 37.5%: past the default 25%
		x.Delete(keyOf(i), 2)
		if i%300 == 0 {
			checkNoDeleted(t, x, queries, i)
		}
	}
	waitBuilt(t, x)
	// Deletes made while it ran stay as deleted slots of the new graph.
	if s := x.Stats(); s.Vectors != 2500 || s.Deleted >= 1500 {
		t.Fatalf("after rebuild: Stats = %+v, want 2500 vectors, fewer than 1500 deleted", s)
	}
	checkNoDeleted(t, x, queries, 1499)
	if err := x.Rebuild(); err != nil {
		t.Fatal(err)
	}
	waitBuilt(t, x)
	if s := x.Stats(); s.Vectors != 2500 || s.Deleted != 0 {
		t.Fatalf("after Rebuild: Stats = %+v, want 2500 vectors, 0 deleted", s)
	}
	checkNoDeleted(t, x, queries, 1499)
	keep := func(i int) bool { return i >= 1500 }
	exact := vindextest.Exact(base, queries, 10, keep)
	got, want := make([][]string, queries.Len()), make([][]string, queries.Len())
	for q := range queries.Len() {
		got[q] = keysOf(search(t, x, Query{Vector: queries.Row(q), K: 10}).Hits)
		want[q] = exactKeys(exact[q])
	}
	if r := recallKeys(got, want); r < 0.95 {
		t.Errorf("recall@10 after rebuild = %.4f, want ≥ 0.95", r)
	}
	// A deleted key's version was forgotten with its slot: it may come back.
	if ok, err := x.Add(keyOf(0), 1, base.Row(0)); !ok || err != nil {
		t.Errorf("Add(%s, 1) after rebuild = %v, %v; want true, nil", keyOf(0), ok, err)
	}
}

func checkNoDeleted(t *testing.T, x *Index, queries *vindextest.Set, upTo int) {
	t.Helper()
	for q := range queries.Len() {
		for _, h := range search(t, x, Query{Vector: queries.Row(q), K: 10}).Hits {
			var i int
			for j := 1; j < len(h.Key); j++ {
				i = i*10 + int(h.Key[j]-'0')
			}
			if i <= upTo {
				t.Fatalf("Search returned %s, deleted", h.Key)
			}
		}
	}
}

func waitBuilt(t *testing.T, x *Index) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for x.Stats().Building {
		if time.Now().After(deadline) {
			t.Fatal("rebuild still running after 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Searches run while keys are added, replaced and deleted, through a
// rebuild: no search that starts after a key's delete returns it.
func TestConcurrentSearchesAndWrites(t *testing.T) {
	base, fresh, queries := testSet(3000, 1), testSet(3000, 5), testSet(40, 2)
	x, err := New(Config{Dim: testDim, Seed: 3, RebuildShare: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for i := range 1500 {
		x.Add(keyOf(i), 1, base.Row(i))
	}
	var seq atomic.Int64
	deletedAt := make([]atomic.Int64, base.Len()) // seq after the delete returned; 0: live
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the writer
		defer wg.Done()
		defer close(stop)
		for i := 1500; i < 3000; i++ {
			x.Add(keyOf(i), 1, base.Row(i))
			if d := i - 1500; d%2 == 0 {
				x.Delete(keyOf(d), 2)
				deletedAt[d].Store(seq.Add(1))
			} else {
				x.Add(keyOf(d), 2, fresh.Row(d)) // a rewrite
			}
		}
	}()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				start := seq.Load()
				res, err := x.Search(Query{Vector: queries.Row(n % queries.Len()), K: 10, Ef: 32})
				if err != nil {
					t.Errorf("Search: %v", err)
					return
				}
				for _, h := range res.Hits {
					var i int
					for j := 1; j < len(h.Key); j++ {
						i = i*10 + int(h.Key[j]-'0')
					}
					if at := deletedAt[i].Load(); at != 0 && at <= start {
						t.Errorf("Search started at %d returned %s, deleted at %d", start, h.Key, at)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	waitBuilt(t, x)
	if s := x.Stats(); s.Vectors != 2250 {
		t.Errorf("Stats().Vectors = %d, want 2250", s.Vectors)
	}
}

func TestClosedIndexRefuses(t *testing.T) {
	base := testSet(10, 1)
	x := newTestIndex(t, base)
	x.Close()
	if _, err := x.Add("z", 1, base.Row(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close err = %v, want ErrClosed", err)
	}
	if _, err := x.Search(Query{Vector: base.Row(0), K: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Search after Close err = %v, want ErrClosed", err)
	}
}

// Adds from several goroutines at once (as a parallel build or concurrent
// commits make them) give a graph as good as one writer's.
func TestConcurrentAdds(t *testing.T) {
	base, queries := testSet(4000, 1), testSet(100, 2)
	x, err := New(Config{Dim: testDim, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	const writers = 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < base.Len(); i += writers {
				if ok, err := x.Add(keyOf(i), 1, base.Row(i)); !ok || err != nil {
					t.Errorf("Add(%s) = %v, %v", keyOf(i), ok, err)
					return
				}
			}
		}()
	}
	// Rewrites of one key race with each other: the newest version wins.
	for v := uint64(2); v < 40; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.Add("raced", v, base.Row(int(v)))
		}()
	}
	wg.Wait()
	if x.Len() != base.Len()+1 {
		t.Fatalf("Len = %d, want %d", x.Len(), base.Len()+1)
	}
	if v, live, _ := x.Version("raced"); v != 39 || !live {
		t.Errorf("Version(raced) = %d, %v; want 39, true", v, live)
	}
	exact := vindextest.Exact(base, queries, 10, nil)
	got, want := make([][]string, queries.Len()), make([][]string, queries.Len())
	for q := range queries.Len() {
		res := search(t, x, Query{Vector: queries.Row(q), K: 11})
		got[q] = slices.DeleteFunc(keysOf(res.Hits), func(k string) bool { return k == "raced" })
		want[q] = exactKeys(exact[q])
	}
	if r := recallKeys(got, want); r < 0.95 {
		t.Errorf("recall@10 after concurrent adds = %.4f, want ≥ 0.95", r)
	}
}
