package vindex

import (
	"fmt"
	"testing"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// Test vectors: clustered unit vectors, small enough for -race.
const (
	testDim      = 96
	testClusters = 50
)

func testSet(n int, seed uint64) *vindextest.Set {
	return vindextest.Clustered(7, seed, n, testDim, testClusters, 1)
}

func keyOf(i int) string { return fmt.Sprintf("k%06d", i) }

// newTestIndex returns an index holding base's vectors under keyOf(i) at
// version 1, closed on cleanup.
func newTestIndex(t testing.TB, base *vindextest.Set) *Index {
	t.Helper()
	x, err := New(Config{Dim: base.Dim, Seed: 1})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { x.Close() })
	for i := range base.Len() {
		if _, err := x.Add(keyOf(i), 1, base.Row(i)); err != nil {
			t.Fatalf("Add(%q): %v", keyOf(i), err)
		}
	}
	return x
}

// search runs q and fails the test on an error.
func search(t testing.TB, x *Index, q Query) Result {
	t.Helper()
	res, err := x.Search(q)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	return res
}

// keysOf returns the hits' keys.
func keysOf(hs []Hit) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Key
	}
	return out
}

// exactKeys is the exact answer as keys.
func exactKeys(ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = keyOf(id)
	}
	return out
}

// recallKeys is the share of want found in got, averaged over queries.
func recallKeys(got, want [][]string) float64 {
	var sum float64
	for q := range want {
		if len(want[q]) == 0 {
			sum++
			continue
		}
		have := make(map[string]bool, len(got[q]))
		for _, k := range got[q] {
			have[k] = true
		}
		n := 0
		for _, k := range want[q] {
			if have[k] {
				n++
			}
		}
		sum += float64(n) / float64(len(want[q]))
	}
	return sum / float64(len(want))
}
