package placement

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage"
)

// noShard stands for a shard no test calls.
type noShard struct{ Shard }

func testNodes(n int) []*Node {
	var nodes []*Node
	for i := range n {
		nodes = append(nodes, NewNode(fmt.Sprintf("sh-%d", i+1), "", noShard{}))
	}
	return nodes
}

// TestRingSpread checks what ringWeight is for: every shard owns close to
// its fair share of keys, and a key's replicas are distinct shards.
func TestRingSpread(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		r, err := NewRing(testNodes(n))
		if err != nil {
			t.Fatal(err)
		}
		owned := map[string]int{}
		const keys = 30000
		for i := range keys {
			k := fmt.Sprintf("topic/ctx-%d", i)
			owned[r.Owner(k).Name]++
			reps := r.Replicas(k, 3)
			if want := min(3, n); len(reps) != want || reps[0] != r.Owner(k) {
				t.Fatalf("Replicas(%q, 3) = %d nodes starting %s, want %d starting with the owner", k, len(reps), reps[0].Name, want)
			}
			seen := map[string]bool{}
			for _, rep := range reps {
				if seen[rep.Name] {
					t.Fatalf("Replicas(%q, 3) names %s twice", k, rep.Name)
				}
				seen[rep.Name] = true
			}
		}
		fair := keys / n
		for name, got := range owned {
			if got < fair*8/10 || got > fair*12/10 {
				t.Errorf("%d shards: %s owns %d of %d keys, want within 20%% of %d", n, name, got, keys, fair)
			}
		}
	}
	if _, err := NewRing(nil); err == nil {
		t.Errorf("NewRing(nil) = nil error, want one")
	}
	dup := testNodes(2)
	dup[1].Name = dup[0].Name
	if _, err := NewRing(dup); err == nil {
		t.Errorf("NewRing with a name twice = nil error, want one")
	}
}

func BenchmarkRingOwner(b *testing.B) {
	var nodes []*Node
	for i := range 3 {
		nodes = append(nodes, &Node{Name: fmt.Sprintf("sh-%d", i+1), Shard: noShard{}})
	}
	r, _ := NewRing(nodes)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("topic/ctx-%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Owner(keys[i&1023])
		i++
	}
}

type wrapped struct{ Shard }

func (w wrapped) Unwrap() Shard { return w.Shard }

type addressed struct{ noShard }

func (addressed) Addr() string { return "10.0.0.1:8081" }

func TestAsAndBase(t *testing.T) {
	base := addressed{}
	sh := wrapped{wrapped{base}}
	a, ok := As[interface{ Addr() string }](sh)
	if !ok || a.Addr() != "10.0.0.1:8081" {
		t.Errorf("As[Addr](two decorators over an addressed shard) = %v, %v, want the shard below", a, ok)
	}
	if _, ok := As[interface{ Addr() string }](wrapped{noShard{}}); ok {
		t.Errorf("As[Addr] found an address where no shard has one")
	}
	if got := Base(sh); got != Shard(base) {
		t.Errorf("Base(two decorators) = %T, want the bottom shard", got)
	}
}

// TestWalk checks the page walk over a real store: every record once, in
// order, across pages, and ErrStop ends it early without an error.
func TestWalk(t *testing.T) {
	st, err := storage.Open(filepath.Join(t.TempDir(), "walk.db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var writes []storage.Write
	for i := range 25 {
		writes = append(writes, storage.Write{Record: storage.Record{Key: []byte(fmt.Sprintf("k%02d", i)), Version: 1, Value: []byte("v")}})
	}
	if _, err := st.Apply(ctx, "b", writes); err != nil {
		t.Fatal(err)
	}
	var got []string
	pages := 0
	err = Walk(ctx, st, "b", storage.ScanOptions{Limit: 10}, time.Second, func(recs []storage.Record) error {
		pages++
		for _, r := range recs {
			got = append(got, string(r.Key))
		}
		return nil
	})
	if err != nil || len(got) != 25 || pages != 3 || got[0] != "k00" || got[24] != "k24" {
		t.Errorf("Walk = %v after %d pages: %v, want 25 keys k00..k24 in 3 pages", err, pages, got)
	}
	n := 0
	err = Walk(ctx, st, "b", storage.ScanOptions{Limit: 10, After: []byte("k19")}, 0, func(recs []storage.Record) error {
		n += len(recs)
		return ErrStop
	})
	if err != nil || n != 5 {
		t.Errorf("Walk from k19 stopped at once = %v after %d records, want nil after 5", err, n)
	}
}
