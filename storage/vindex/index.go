package vindex

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
)

// Sentinel errors; returned wrapped, test them with errors.Is.
var (
	// ErrInvalid is returned for a vector or query of the wrong dimension,
	// with a NaN or infinite value, an empty key, or a bad k or Config.
	ErrInvalid = errors.New("invalid vector index request")

	// ErrCorrupt is returned by Load and ReadFile for a file that is
	// truncated, fails its checksum, or is not an index file: the caller
	// rebuilds the index from its vectors instead.
	ErrCorrupt = errors.New("corrupt vector index file")

	// ErrClosed is returned by the methods of an Index after Close.
	ErrClosed = errors.New("vector index closed")
)

// DefaultEfConstruction is the candidate list an insert searches with. On
// 100,000 clustered 768-dim vectors (vindextest.Clustered, spread 1, two
// goroutines inserting) 100 builds 2,013 vectors/s against 1,194 at 200,
// hnswlib's usual value, for the same answers: recall@10 0.956 against
// 0.964 at ef 64, 0.998 against 0.999 at ef 128, at the same query cost.
// An index keeps the value it was built with (saved with it).
const DefaultEfConstruction = 100

// Config shapes one index. The zero value of a field means its default.
type Config struct {
	Dim            int    // vector dimension, 1..65536; required
	M              int    // neighbours per node (layer 0 keeps 2M); default 16
	EfConstruction int    // candidates considered per insert; default 100 (see DefaultEfConstruction)
	Seed           uint64 // seeds node levels, so a build is reproducible
	// RebuildShare is the share of deleted slots at which the index
	// rebuilds its graph from the live vectors in the background; default
	// 0.25. Deleted slots cost memory and walk time until then.
	RebuildShare float64
}

func (c Config) withDefaults() (Config, error) {
	if c.M == 0 {
		c.M = 16
	}
	if c.EfConstruction == 0 {
		c.EfConstruction = DefaultEfConstruction
	}
	if c.RebuildShare == 0 {
		c.RebuildShare = 0.25
	}
	switch {
	case c.Dim < 1 || c.Dim > 1<<16:
		return c, fmt.Errorf("dimension %d (want 1..65536): %w", c.Dim, ErrInvalid)
	case c.M < 2 || c.M > 128:
		return c, fmt.Errorf("M %d (want 2..128): %w", c.M, ErrInvalid)
	case c.EfConstruction < 1 || c.EfConstruction > 4096:
		return c, fmt.Errorf("ef construction %d (want 1..4096): %w", c.EfConstruction, ErrInvalid)
	case !(c.RebuildShare > 0 && c.RebuildShare <= 1):
		return c, fmt.Errorf("rebuild share %v (want (0, 1]): %w", c.RebuildShare, ErrInvalid)
	}
	return c, nil
}

// MaxK bounds k in one search, as storage.MaxTopK bounds TopK.
const MaxK = 10000

// minRebuildSlots keeps small indexes from rebuilding over a few deletes.
const minRebuildSlots = 1024

// Index is an approximate nearest neighbour index of float32 vectors of one
// dimension, keyed by string (the record key), ranked by cosine
// similarity. Every entry carries the version of the record it came from;
// a write older than the one the index holds for a key is ignored, so
// callers may apply writes in any order, as the store does.
//
// All methods are safe for concurrent use. Searches run in parallel with
// each other and with the expensive half of an insert (finding the new
// node's neighbours), and so do Adds from several goroutines; a mutation
// holds the write lock only to link a node (a few microseconds).
type Index struct {
	cfg Config

	// wmu serialises mutations (an Add's linking, Delete, Remove, the
	// rebuild's snapshot and swap).
	wmu sync.Mutex

	// levelMu guards the graph's level generator, which Adds draw from
	// while they hold only the read lock.
	levelMu sync.Mutex

	// mu guards st and entries: searches hold it shared; a mutation holds
	// it exclusively while it changes them. entries is written only under
	// wmu and mu both, so a holder of either may read it.
	mu      sync.RWMutex
	st      *state
	entries map[string]entry
	closed  bool

	// Guarded by wmu: set while a rebuild runs, the keys mutated since its
	// snapshot, replayed onto the new graph before the swap.
	journal map[string]struct{}

	ctx    context.Context // cancelled by Close; ends a rebuild
	cancel context.CancelFunc
	wg     sync.WaitGroup // the rebuild goroutine
	ready  bool           // guarded by mu; see SetReady
}

// state is a graph with what each of its slots holds; a rebuild swaps a
// new one in whole.
type state struct {
	g    *graph
	keys []string // slot → key
	vers []uint64 // slot → version
	dead int      // deleted slots
}

// entry is what the index knows of a key: its slot (-1: none, the key is
// deleted or its vector was zero) and the version that said so.
type entry struct {
	slot    int32
	version uint64
}

// New returns an empty index, ready to answer searches.
func New(cfg Config) (*Index, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	x := newIndex(cfg, newState(cfg, cfg.Seed))
	x.ready = true
	return x, nil
}

func newState(cfg Config, seed uint64) *state {
	return &state{g: newGraph(cfg.Dim, cfg.M, cfg.EfConstruction, seed)}
}

func newIndex(cfg Config, st *state) *Index {
	x := &Index{cfg: cfg, st: st, entries: make(map[string]entry)}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	return x
}

// Dim is the dimension of the index's vectors.
func (x *Index) Dim() int { return x.cfg.Dim }

// normalized checks v and returns it scaled to unit length, or nil for a
// zero vector (which matches nothing, as in storage.TopK).
func (x *Index) normalized(v []float32) ([]float32, error) {
	if len(v) != x.cfg.Dim {
		return nil, fmt.Errorf("vector of %d dimensions in an index of %d: %w", len(v), x.cfg.Dim, ErrInvalid)
	}
	ss, err := sumSquares(v)
	if err != nil {
		return nil, err
	}
	if ss == 0 {
		return nil, nil
	}
	inv := 1 / math.Sqrt(ss)
	out := make([]float32, len(v))
	for i, f := range v {
		out[i] = float32(float64(f) * inv)
	}
	return out, nil
}

// checkVector refuses a vector no index can hold.
func checkVector(v []float32) error {
	if len(v) < 1 || len(v) > 1<<16 {
		return fmt.Errorf("vector of %d dimensions (want 1..65536): %w", len(v), ErrInvalid)
	}
	_, err := sumSquares(v)
	return err
}

func sumSquares(v []float32) (float64, error) {
	var ss float64
	for _, f := range v {
		ss += float64(f) * float64(f)
	}
	if math.IsNaN(ss) || math.IsInf(ss, 0) {
		return 0, fmt.Errorf("vector with a NaN or infinite value: %w", ErrInvalid)
	}
	return ss, nil
}

// Add indexes vec under key at version, replacing the key's earlier
// vector; it reports false (and changes nothing) when the index already
// holds the key at this version or a newer one, deleted or not. A zero
// vector deletes the key's vector: it can never match. The replaced
// vector is never returned by a search that starts after Add returns.
func (x *Index) Add(key string, version uint64, vec []float32) (bool, error) {
	if key == "" {
		return false, fmt.Errorf("empty key: %w", ErrInvalid)
	}
	v, err := x.normalized(vec)
	if err != nil {
		return false, err
	}
	if v == nil {
		return x.Delete(key, version)
	}
	// Plan under the read lock only, so that Adds from several goroutines
	// search the graph in parallel; they link one at a time below.
	x.mu.RLock()
	if e, ok := x.entries[key]; x.closed || (ok && e.version >= version) {
		closed := x.closed
		x.mu.RUnlock()
		if closed {
			return false, ErrClosed
		}
		return false, nil
	}
	st := x.st
	x.levelMu.Lock()
	lvl := st.g.randomLevel()
	x.levelMu.Unlock()
	planned := st.g.n
	p := st.g.plan(v, lvl)
	x.mu.RUnlock()

	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.isClosed() {
		return false, ErrClosed
	}
	if e, ok := x.entries[key]; ok && e.version >= version {
		return false, nil // a newer write linked meanwhile
	}
	// Nodes linked since the plan only make it miss a few neighbours, but
	// a rebuild's swap renumbers the slots, and a plan made on an empty
	// graph has no neighbours at all: plan again, now under wmu.
	if x.st != st || (planned == 0 && st.g.n > 0) {
		x.mu.RLock()
		st = x.st
		p = st.g.plan(v, lvl)
		x.mu.RUnlock()
	}
	x.noteJournal(key)
	x.mu.Lock()
	x.unsetLocked(key, version)
	slot := st.g.add(v, lvl)
	st.g.link(slot, p)
	st.keys = append(st.keys, key)
	st.vers = append(st.vers, version)
	x.entries[key] = entry{slot: int32(slot), version: version}
	x.mu.Unlock()
	x.maybeRebuild()
	return true, nil
}

// Delete records that key was deleted at version: its vector is never
// returned again. It reports false (and changes nothing) when the index
// holds the key at this version or a newer one. The index remembers the
// version of a deleted key (until the next rebuild) so that an older
// write arriving late cannot bring the vector back.
func (x *Index) Delete(key string, version uint64) (bool, error) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.isClosed() {
		return false, ErrClosed
	}
	if e, ok := x.entries[key]; ok && e.version >= version {
		return false, nil
	}
	x.noteJournal(key)
	x.mu.Lock()
	x.unsetLocked(key, version)
	x.mu.Unlock()
	x.maybeRebuild()
	return true, nil
}

// Remove forgets key whatever its version: for a key that left the shard
// (a purge, a rebalance to another owner), where no newer write follows.
// It reports whether the index knew the key.
func (x *Index) Remove(key string) (bool, error) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.isClosed() {
		return false, ErrClosed
	}
	if _, ok := x.entries[key]; !ok {
		return false, nil
	}
	x.noteJournal(key)
	x.mu.Lock()
	x.unsetLocked(key, 0)
	delete(x.entries, key)
	x.mu.Unlock()
	x.maybeRebuild()
	return true, nil
}

// unsetLocked marks key's slot deleted and records version as the key's
// (slot -1). Caller holds wmu and mu.
func (x *Index) unsetLocked(key string, version uint64) {
	if e, ok := x.entries[key]; ok && e.slot >= 0 {
		x.st.g.dead[e.slot] = true
		x.st.dead++
	}
	x.entries[key] = entry{slot: -1, version: version}
}

func (x *Index) isClosed() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.closed
}

// Version returns the version the index holds for key and whether it
// holds a live vector for it; ok is false for a key it does not know.
// A caller reconciling the index with its records compares these.
func (x *Index) Version(key string) (version uint64, live, ok bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.entries[key]
	return e.version, ok && e.slot >= 0, ok
}

// Keys calls fn for every key the index knows (live or deleted) with its
// version, in no order, until fn returns false. It holds the read lock:
// fn must not call the index.
func (x *Index) Keys(fn func(key string, version uint64, live bool) bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for k, e := range x.entries {
		if !fn(k, e.version, e.slot >= 0) {
			return
		}
	}
}

// SetReady says whether searches may be answered from the index. An index
// loaded from a file starts not ready: its owner reconciles it with the
// records (Version, Add, Delete, Remove) and then sets it ready. Until
// then Search answers Exact, and the caller scans.
func (x *Index) SetReady(ready bool) {
	x.mu.Lock()
	x.ready = ready
	x.mu.Unlock()
}

// Query is one search.
type Query struct {
	Vector []float32
	K      int // 1..MaxK
	// Ef is the candidate list's length: more finds more of the true
	// nearest at more cost. Zero means DefaultEf; below K it is K.
	Ef int
	// Filter, when set, says which keys may be answers. It is called with
	// the index's read lock held, for candidates near enough to enter the
	// answer: it must be quick and must not call the index.
	Filter func(key string) bool
}

// DefaultEf is the candidate list a query gets when it names none. On
// 100,000 clustered 768-dim vectors (vindextest.Clustered, spread 1) one
// index finds 0.96 of the exact top 10 at ef 64 (0.85 at 32, 0.995 at
// 128), as hnswlib does on the same vectors; split over three indexes
// and merged, 0.976 at ef 32 and 0.998 at 64 (BenchmarkThreeShards).
const DefaultEf = 64

// Hit is one answer.
type Hit struct {
	Key     string
	Version uint64
	Score   float64 // cosine similarity, -1..1
}

// Result is a search's answer.
type Result struct {
	// Hits are the nearest admitted vectors, best first (ties by key).
	Hits []Hit
	// Exact asks the caller to answer by an exact scan instead: the index
	// is not ready, or the filter admitted so few of the vectors walked
	// that the walk gave up (past half the graph) or ended with fewer than
	// K hits without having seen every vector. Hits are then incomplete.
	Exact bool
	// Walked is the number of vectors the search compared on the base
	// layer: its cost.
	Walked int
}

// Search returns the q.K vectors most similar to q.Vector among the live
// ones that pass q.Filter. A filter never loses answers: the walk goes on
// through rejected vectors until it holds Ef admitted ones, and says Exact
// when that would cost more than a scan.
func (x *Index) Search(q Query) (Result, error) {
	if q.K < 1 || q.K > MaxK {
		return Result{}, fmt.Errorf("k %d (want 1..%d): %w", q.K, MaxK, ErrInvalid)
	}
	v, err := x.normalized(q.Vector)
	if err != nil {
		return Result{}, err
	}
	ef := q.Ef
	if ef <= 0 {
		ef = DefaultEf
	}
	ef = min(max(ef, q.K), MaxK)
	x.mu.RLock()
	defer x.mu.RUnlock()
	switch {
	case x.closed:
		return Result{}, ErrClosed
	case !x.ready:
		return Result{Exact: true}, nil
	case v == nil:
		return Result{}, nil // a zero query matches nothing
	}
	st := x.st
	g := st.g
	admit := func(i uint32) bool {
		return !g.dead[i] && (q.Filter == nil || q.Filter(st.keys[i]))
	}
	budget := 0
	if q.Filter != nil || st.dead > 0 {
		budget = max(g.n/2, 4*ef*g.m0)
	}
	cands, walked, exhausted := g.search(v, q.K, ef, admit, budget)
	res := Result{Hits: make([]Hit, len(cands)), Walked: walked}
	for i, c := range cands {
		res.Hits[i] = Hit{Key: st.keys[c.id], Version: st.vers[c.id], Score: float64(-c.d)}
	}
	sortHits(res.Hits)
	// Fewer than K after a walk that saw every slot is the whole answer;
	// short of that, the graph may hide admitted vectors the walk missed.
	res.Exact = exhausted || (len(res.Hits) < q.K && walked < g.n)
	return res, nil
}

// sortHits orders hits best first, ties by key, as storage.SortMatches.
func sortHits(hs []Hit) {
	slices.SortFunc(hs, func(a, b Hit) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// Reconcile brings the index in line with the records it should reflect,
// for an index loaded from a file that may be older than they are. records
// calls visit once for every live vector record the index should hold:
// its key, version, and a function that decodes its vector (called only
// when the index does not already hold that version). A key the index
// holds live that records never visits is removed; a visited key whose
// version differs is indexed anew, even when the index holds a newer
// version (the records are the truth). Call it before SetReady(true);
// writes applied meanwhile must also go to the index, and Reconcile does
// not undo them (a key it visits at an older version than a write made
// since is then re-added at the older one: reconcile before taking
// writes, or repeat it).
func (x *Index) Reconcile(records func(visit func(key string, version uint64, vector func() ([]float32, error)) error) error) (added, removed int, err error) {
	seen := make(map[string]struct{})
	err = records(func(key string, version uint64, vector func() ([]float32, error)) error {
		seen[key] = struct{}{}
		v, live, ok := x.Version(key)
		if ok && live && v == version {
			return nil
		}
		vec, err := vector()
		if err != nil {
			return fmt.Errorf("vector of %q: %w", key, err)
		}
		if ok && v >= version {
			if _, err := x.Remove(key); err != nil {
				return err
			}
		}
		if _, err := x.Add(key, version, vec); err != nil {
			return fmt.Errorf("index %q: %w", key, err)
		}
		added++
		return nil
	})
	if err != nil {
		return added, removed, fmt.Errorf("reconcile vector index: %w", err)
	}
	var stale []string
	x.Keys(func(key string, _ uint64, live bool) bool {
		if _, ok := seen[key]; live && !ok {
			stale = append(stale, key)
		}
		return true
	})
	for _, key := range stale {
		if _, err := x.Remove(key); err != nil {
			return added, removed, err
		}
		removed++
	}
	return added, removed, nil
}
