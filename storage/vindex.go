package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/go-kvdb/go-kvdb/storage/vindex"
)

// A store keeps an approximate nearest neighbour index (storage/vindex)
// of every vector bucket (Options.VectorBuckets), so that TopK walks a few
// thousand vectors instead of scanning all of them. The index of a bucket
// has one graph per group of keys and per (model, dimension): a group is
// a key's bytes up to and including its first 0 byte (the router's topic
// and separator). A TopK whose prefix is exactly a group uses the index;
// any other prefix is scanned.
//
// The index follows the file, never the other way round:
//   - every applied write and tombstone of a vector bucket reaches the
//     index on the committer's goroutine, after the commit and before its
//     writer hears of it, so a search that starts after a write returns
//     sees it; a Purge removes what it removed;
//   - a value that is not a readable vector (sealed by the router) is not
//     indexed; such a group is ranked by its router;
//   - Close saves the graphs beside the BoltDB file (path + ".vindex");
//     Open loads them and, in the background, reconciles them with the
//     records (a file may be older than the records after a crash) and
//     indexes what no file held. Until that pass ends TopK scans and says
//     so (TopKResult.Exact).

// DefaultVectorBuckets are the buckets a store indexes when
// Options.VectorBuckets is nil: the router's (contexts' and messages').
var DefaultVectorBuckets = []string{"vectors", "message_vectors"}

type vectorIndex struct {
	dir  string
	regs map[string]*vindex.Registry // by bucket; fixed at Open

	ready   atomic.Bool // the start (or reindex) pass has ended
	passing atomic.Bool // a pass runs

	// mu guards touched. While a pass runs, every write to an index notes
	// its key in touched, and the pass skips touched keys (their index
	// entries are newer than its snapshot); the pass holds mu around each
	// record it indexes, so a write is either noted first or applied after.
	mu      sync.Mutex
	touched map[string]struct{} // bucket + "\x00" + key; nil once ready

	// Progress of the running pass: records visited of the bucket's total.
	visited, total atomic.Int64

	ctx    context.Context // ends the pass on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pass goroutine
	seed   maphash.Seed
}

// vectorGroup returns the length of key's group (through its first 0
// byte), or 0 when the key has none.
func vectorGroup(key []byte) int {
	return bytes.IndexByte(key, 0) + 1
}

func (s *Store) openVectorIndex(opts Options) error {
	buckets := opts.VectorBuckets
	if buckets == nil {
		buckets = DefaultVectorBuckets
	}
	vx := &vectorIndex{dir: s.path + ".vindex", regs: map[string]*vindex.Registry{}, seed: maphash.MakeSeed()}
	vx.ctx, vx.cancel = context.WithCancel(context.Background())
	for _, b := range buckets {
		if err := checkBucket(b); err != nil {
			return fmt.Errorf("vector bucket: %w", err)
		}
		reg, err := vindex.NewRegistry(vindex.Config{})
		if err != nil {
			return err
		}
		if _, err := reg.LoadDir(vx.bucketDir(b)); err != nil {
			return fmt.Errorf("load vector indexes of %s: %w", b, err)
		}
		vx.regs[b] = reg
	}
	s.vx = vx
	return nil
}

func (vx *vectorIndex) bucketDir(bucket string) string {
	return filepath.Join(vx.dir, hex.EncodeToString([]byte(bucket)))
}

// startPass starts the pass that brings the indexes in line with the
// records; searches scan until it ends. Caller has set passing (from
// false), so one pass runs at a time.
func (s *Store) startPass() {
	vx := s.vx
	vx.mu.Lock()
	vx.touched = map[string]struct{}{}
	vx.mu.Unlock()
	vx.ready.Store(false)
	vx.wg.Add(1)
	go func() {
		defer vx.wg.Done()
		defer vx.passing.Store(false)
		for b, reg := range vx.regs {
			if err := s.reconcile(b, reg); err != nil {
				return // closed: the next Open starts over
			}
		}
		vx.mu.Lock()
		vx.touched = nil
		vx.mu.Unlock()
		vx.ready.Store(true)
	}()
}

// touch notes that key's index entry is being written (see vectorIndex.mu).
func (vx *vectorIndex) touch(bucket string, key []byte) {
	vx.mu.Lock()
	if vx.touched != nil {
		vx.touched[bucket+"\x00"+string(key)] = struct{}{}
	}
	vx.mu.Unlock()
}

// reconcile indexes every live vector record of bucket the index does not
// hold at its version, deletes what tombstones say, and removes what the
// index holds that no record does; then it sets every index ready. It
// reads in pages, each its own read transaction: a long one would hold
// up the writers when the file grows.
func (s *Store) reconcile(bucket string, reg *vindex.Registry) error {
	vx := s.vx
	info, err := s.Info(vx.ctx)
	if err != nil {
		return err
	}
	vx.visited.Store(0)
	vx.total.Store(info.Keys[bucket])
	seen := map[string]struct{}{}
	var after []byte
	for {
		if err := vx.ctx.Err(); err != nil {
			return err
		}
		page, err := s.Scan(vx.ctx, bucket, ScanOptions{After: after, Limit: 1000, Tombstones: true})
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			vx.visited.Add(1)
			g := vectorGroup(rec.Key)
			if g == 0 {
				continue
			}
			seen[string(rec.Key)] = struct{}{}
			vx.mu.Lock()
			if _, ok := vx.touched[bucket+"\x00"+string(rec.Key)]; !ok {
				vx.applyRecord(reg, rec.Key[:g], rec.Key, rec.Version, rec.Tombstone, rec.Value, false)
			}
			vx.mu.Unlock()
		}
		if !page.More {
			break
		}
		after = page.Records[len(page.Records)-1].Key
	}
	for _, k := range reg.Keys() {
		x := reg.Get(k)
		if x == nil {
			continue
		}
		var stale []string
		x.Keys(func(key string, _ uint64, live bool) bool {
			if _, ok := seen[key]; !ok && live {
				stale = append(stale, key)
			}
			return true
		})
		vx.mu.Lock()
		for _, key := range stale {
			if _, ok := vx.touched[bucket+"\x00"+key]; !ok {
				x.Remove(key)
			}
		}
		vx.mu.Unlock()
		x.SetReady(true)
	}
	return nil
}

// applyRecord brings reg in line with one record: a live vector is
// indexed (anew when rewrite: same version, new value), a tombstone
// deletes it, a value that is no vector (sealed) removes it. An index
// that refuses a vector (NaN values) drops the key: the scan still ranks
// the record as it always did.
func (vx *vectorIndex) applyRecord(reg *vindex.Registry, group, key []byte, version uint64, tomb bool, value []byte, rewrite bool) {
	p, k := string(group), string(key)
	if tomb {
		reg.Delete(p, k, version)
		return
	}
	sv, err := splitVector(value)
	if err != nil {
		reg.Remove(p, k)
		return
	}
	if x := reg.Get(vindex.Key{Prefix: p, Model: string(sv.model), Dim: sv.dim}); x != nil && !rewrite {
		if v, live, ok := x.Version(k); ok && v >= version && (live || sv.norm == 0) {
			return // held already (or newer)
		}
	}
	if rewrite {
		reg.Remove(p, k)
	}
	vec := make([]float32, sv.dim)
	for i := range vec {
		vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(sv.values[4*i:]))
	}
	if err := reg.Put(p, string(sv.model), k, version, vec); err != nil {
		reg.Remove(p, k)
	}
}

// indexOp is one applied write of a vector bucket, for the index.
type indexOp struct {
	reg     *vindex.Registry
	bucket  string
	w       *Write
	rewrite bool
}

// indexCommitted applies a commit's vector writes to the indexes. Inserts
// cost a graph search each, so the writes are spread over the CPUs by key
// (one key's writes stay in commit order on one goroutine).
func (s *Store) indexCommitted(batch []*commitReq) {
	vx := s.vx
	var ops []indexOp
	for _, r := range batch {
		for i := range r.writes {
			bucket := r.bucket
			if r.buckets != nil { // a Txn: each write names its bucket
				bucket = r.buckets[i]
			}
			reg := vx.regs[bucket]
			w := &r.writes[i]
			if reg == nil || r.results[i].Outcome != Applied || vectorGroup(w.Key) == 0 {
				continue
			}
			ops = append(ops, indexOp{reg: reg, bucket: bucket, w: w, rewrite: w.Cond == CondRewrite})
		}
	}
	if len(ops) == 0 {
		return
	}
	apply := func(op indexOp) {
		vx.touch(op.bucket, op.w.Key)
		vx.applyRecord(op.reg, op.w.Key[:vectorGroup(op.w.Key)], op.w.Key, op.w.Version, op.w.Tombstone, op.w.Value, op.rewrite)
	}
	workers := min(runtime.GOMAXPROCS(0), len(ops))
	if workers <= 1 {
		for _, op := range ops {
			apply(op)
		}
		return
	}
	var wg sync.WaitGroup
	for n := range workers {
		wg.Go(func() {
			for _, op := range ops {
				if int(maphash.Bytes(vx.seed, op.w.Key)%uint64(workers)) == n {
					apply(op)
				}
			}
		})
	}
	wg.Wait()
}

// indexPurged removes purged keys from bucket's index.
func (s *Store) indexPurged(bucket string, keys [][]byte) {
	reg := s.vx.regs[bucket]
	if reg == nil {
		return
	}
	for _, k := range keys {
		if g := vectorGroup(k); g > 0 {
			s.vx.touch(bucket, k)
			reg.Remove(string(k[:g]), string(k))
		}
	}
}

// closeVectorIndex ends a running pass and saves the indexes beside the
// file. Caller has stopped the committer.
func (s *Store) closeVectorIndex() error {
	vx := s.vx
	vx.cancel()
	vx.wg.Wait()
	var errs []error
	for b, reg := range vx.regs {
		if err := reg.SaveDir(vx.bucketDir(b), 0); err != nil {
			errs = append(errs, fmt.Errorf("save vector indexes of %s: %w", b, err))
		}
		reg.Close()
	}
	return errors.Join(errs...)
}

// annTopK answers q from the index when it can: the store is ready, the
// prefix is a group, and the group has an index of the query's model and
// dimension. ok is false when the caller must scan, including when the
// index says a filter is too selective for a walk (vindex.Result.Exact).
// Tags are checked against the stored record, in one read transaction
// held for the walk.
func (s *Store) annTopK(bucket string, q *TopKQuery) (res TopKResult, ok bool, err error) {
	vx := s.vx
	reg := vx.regs[bucket]
	if reg == nil || q.Exact || !vx.ready.Load() || vectorGroup(q.Prefix) != len(q.Prefix) {
		return res, false, nil
	}
	prefix := string(q.Prefix)
	x := reg.Get(vindex.Key{Prefix: prefix, Model: q.Model, Dim: len(q.Query)})
	if x == nil {
		return res, false, nil
	}
	for _, k := range reg.PrefixKeys(prefix) {
		if o := reg.Get(k); o != nil {
			n := o.Len()
			res.Scanned += n
			if k.Model == q.Model && k.Dim != len(q.Query) {
				res.OtherDim += n
			}
		}
	}
	vq := vindex.Query{Vector: q.Query, K: q.K}
	var found vindex.Result
	err = s.view(func(tx *bolt.Tx) error {
		if len(q.Tags) > 0 {
			b := tx.Bucket([]byte(bucket))
			if b == nil {
				return nil
			}
			vq.Filter = func(key string) bool {
				raw := b.Get([]byte(key))
				if raw == nil {
					return false
				}
				_, tomb, val, err := parseStored(raw)
				if err != nil || tomb {
					return false
				}
				sv, err := splitVector(val)
				return err == nil && hasTags(sv.tags, q.Tags)
			}
		}
		var err error
		found, err = x.Search(vq)
		return err
	})
	if errors.Is(err, vindex.ErrClosed) {
		return res, false, nil // dropped meanwhile: scan
	}
	// No hit at all is answered by the scan, which counts exactly the
	// vectors of another dimension that carry the tags (the router's 400).
	if err != nil || found.Exact || len(found.Hits) == 0 {
		return res, false, err
	}
	res.Matches = make([]Match, len(found.Hits))
	for i, h := range found.Hits {
		res.Matches[i] = Match{Key: []byte(h.Key), Version: h.Version, Score: h.Score}
	}
	return res, true, nil
}

// VectorIndexStats describes a store's vector indexes.
type VectorIndexStats struct {
	// Ready is false while the start-up or reindex pass runs: searches
	// scan until then.
	Ready bool
	// Visited and Total are the pass's progress: records visited of the
	// records in the bucket it works on.
	Visited, Total int64
	// Indexes are every index's stats, by bucket.
	Indexes map[string][]vindex.KeyStats
}

// VectorIndexStats reports the vector indexes' state.
func (s *Store) VectorIndexStats() VectorIndexStats {
	vx := s.vx
	st := VectorIndexStats{Ready: vx.ready.Load(), Visited: vx.visited.Load(), Total: vx.total.Load(), Indexes: map[string][]vindex.KeyStats{}}
	for b, reg := range vx.regs {
		st.Indexes[b] = reg.Stats()
	}
	return st
}

// Reindex rebuilds every index's graph from its live vectors and runs the
// pass that reconciles the indexes with the records again, both in the
// background: for an operator who suspects an index, or after a bulk
// load. Searches scan (and say Exact) until the pass ends. A Reindex
// while a pass runs only rebuilds the graphs.
func (s *Store) Reindex(context.Context) error {
	if err := s.Ping(context.Background()); err != nil {
		return err
	}
	vx := s.vx
	for _, reg := range vx.regs {
		for _, k := range reg.Keys() {
			if x := reg.Get(k); x != nil {
				if err := x.Rebuild(); err != nil && !errors.Is(err, vindex.ErrClosed) {
					return fmt.Errorf("rebuild index %s: %w", k, err)
				}
			}
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed && vx.passing.CompareAndSwap(false, true) {
		s.startPass()
	}
	return nil
}
