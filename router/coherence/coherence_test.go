package coherence_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/coherence"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
)

// gatedStore is a real shard whose change stream's consumer can be held:
// while held, the store reads nothing more for the follower, as with a
// follower far behind.
type gatedStore struct {
	*storage.Store
	mu   sync.Mutex // held: the follower's fn blocks on it
	held atomic.Bool
}

func (g *gatedStore) Changes(ctx context.Context, req storage.ChangesRequest, fn func(storage.ChangeBatch) error) error {
	return g.Store.Changes(ctx, req, func(b storage.ChangeBatch) error {
		g.mu.Lock()
		g.mu.Unlock()
		return fn(b)
	})
}

func put(t *testing.T, st *storage.Store, key string, v uint64) {
	t.Helper()
	if _, err := st.Apply(context.Background(), "contexts", []storage.Write{{Record: storage.Record{Key: []byte(key), Version: v, Value: []byte("x")}}}); err != nil {
		t.Fatalf("Apply(%q): %v", key, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: still not true after 10s", what)
}

// TestGapResets: changes reach OnChange in order; a follower the log's
// retention left behind is not caught up, and resets before it follows
// again.
func TestGapResets(t *testing.T) {
	st, err := storage.Open(filepath.Join(t.TempDir(), "sh.db"), storage.Options{NoSync: true, ChangesRetain: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := &gatedStore{Store: st}
	node := placement.NewNode("sh-1", "file", g)
	shape, err := placement.NewShape([]*placement.Node{node}, 1)
	if err != nil {
		t.Fatal(err)
	}
	topo := placement.NewTopology(1, placement.StateStable, shape, placement.Shape{}, nil)

	var (
		mu     sync.Mutex // guards seen
		seen   []uint64
		resets atomic.Int32
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	fs := coherence.New(coherence.Config{
		Topology: func() *placement.Topology { return topo },
		OnChange: func(ch *storage.Change) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, ch.Version)
		},
		OnReset:   func() { resets.Add(1) },
		Heartbeat: 20 * time.Millisecond,
		Go: func(fn func(context.Context)) {
			wg.Add(1)
			go func() { defer wg.Done(); fn(ctx) }()
		},
	})
	if fs.Fresh("k") {
		t.Fatal("Fresh before following: true, want false")
	}
	fs.Start()
	waitFor(t, "caught up", fs.CaughtUp)
	if got := resets.Load(); got != 1 {
		t.Fatalf("resets after the first subscription = %d, want 1", got)
	}
	for v := uint64(1); v <= 3; v++ {
		put(t, st, "k", v)
	}
	waitFor(t, "three changes", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 3 })
	mu.Lock()
	for i, v := range seen {
		if v != uint64(i+1) {
			t.Errorf("change %d has version %d, want %d", i, v, i+1)
		}
	}
	mu.Unlock()

	// Hold the follower while ten writes go by: the log keeps four.
	g.mu.Lock()
	put(t, st, "k", 4) // wakes the store's loop, which blocks in fn
	time.Sleep(50 * time.Millisecond)
	for v := uint64(5); v <= 14; v++ {
		put(t, st, "k", v)
	}
	waitFor(t, "stale while held", func() bool { return !fs.Fresh("k") })
	g.mu.Unlock()
	waitFor(t, "a reset after the gap", func() bool { return resets.Load() == 2 })
	waitFor(t, "caught up again", fs.CaughtUp)
}
