package coord

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// FanOutAll runs fn on every live node that serves reads, in parallel,
// each call under its own deadline, and returns the first error. It fails
// at once when so many nodes are down that some key may have no live
// replica that holds its newest version.
func (c *Coordinator) FanOutAll(ctx context.Context, timeout time.Duration, fn func(context.Context, *placement.Node) error) error {
	t := c.cfg.Topology()
	nodes, err := c.LiveReadNodes(t)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(EpochCtx(ctx, t))
	for _, n := range nodes {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return fn(ctx, n)
		})
	}
	return g.Wait()
}

// LiveReadNodes returns the live nodes a list must ask, or an unavailable
// error naming the down ones when they are more than the replicas can
// cover: with at most replicas - Quorum owners of a key down, one that
// acknowledged its newest write still answers.
func (c *Coordinator) LiveReadNodes(t *placement.Topology) ([]*placement.Node, error) {
	var live []*placement.Node
	for _, sh := range t.Shapes() {
		var down []string
		for _, n := range sh.Ring.Nodes() {
			if !n.Up() {
				down = append(down, n.Name)
			}
		}
		if len(down) > sh.Replicas-placement.Quorum(sh.Replicas) {
			return nil, apierr.Errorf(apierr.CodeUnavailable, "shards down: %s (replicas = %d)", strings.Join(down, ", "), sh.Replicas)
		}
	}
	for _, n := range t.ReadNodes() {
		if n.Up() {
			live = append(live, n)
		}
	}
	return live, nil
}

// PageQuery is one page of a key range spread over every shard.
type PageQuery struct {
	Bucket string
	Prefix []byte // the range
	After  []byte // start after this key; nil starts at prefix
	Limit  int
	Keep   func(storage.Record) bool // nil keeps every live record
	// metaOnly reads only the first bytes of each context, enough for its
	// metadata; a record whose metadata is longer is read again whole.
	MetaOnly bool
}

// MetaPrefix is how much of a context a metadata-only list reads. Typical
// metadata (id, times, model, a few tags) takes 150 to 300 bytes; a context
// with more is read again whole. Measured with kvdb-bench row 8: 512 bytes
// serve about 1.8x the pages per second of whole values, 2048 only 1.05x.
const MetaPrefix = 512

// Page reads one page of live records in key order from all shards. Each
// shard returns at most limit records after the cursor, so a page costs
// shards × limit reads however large the range. Records are merged up to
// the frontier (the smallest last key among shards that have more), since
// a shard that has more may still hold keys below another shard's last.
//
// With a filter, a page may need more rounds; after examining a bounded
// number of records it returns what it has with a cursor, so one request
// never scans a whole topic. next is nil when nothing follows.
func (c *Coordinator) Page(ctx context.Context, q PageQuery) (recs []storage.Record, next []byte, err error) {
	t := c.cfg.Topology()
	nodes, err := c.LiveReadNodes(t)
	if err != nil {
		return nil, nil, err
	}
	budget := max(10*q.Limit, 1000)
	after := q.After
	examined := 0
	for {
		pages := make([]storage.ScanPage, len(nodes))
		g, gctx := errgroup.WithContext(ctx)
		for i, n := range nodes {
			g.Go(func() error {
				sctx, cancel := c.ShardCtx(gctx)
				defer cancel()
				opts := storage.ScanOptions{Prefix: q.Prefix, After: after, Limit: q.Limit, Tombstones: t.Cur.Replicas > 1 || t.State != placement.StateStable}
				if q.MetaOnly {
					opts.ValueLimit = MetaPrefix
				}
				p, err := n.Shard.Scan(sctx, q.Bucket, opts)
				if err == nil && q.MetaOnly {
					err = completeMeta(sctx, n, q.Bucket, p.Records)
				}
				if err != nil {
					return apierr.FromStorage("list on shard "+n.Name, err)
				}
				pages[i] = p
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, nil, err
		}
		var frontier []byte // nil: every shard is exhausted
		for _, p := range pages {
			if p.More && len(p.Records) > 0 {
				if last := p.Records[len(p.Records)-1].Key; frontier == nil || bytes.Compare(last, frontier) < 0 {
					frontier = last
				}
			}
		}
		merged := MergePages(pages, frontier)
		for i, rec := range merged {
			examined++
			if q.Keep != nil && !q.Keep(rec) {
				continue
			}
			recs = append(recs, rec)
			if len(recs) == q.Limit {
				if frontier != nil || slices.ContainsFunc(merged[i+1:], func(r storage.Record) bool { return q.Keep == nil || q.Keep(r) }) {
					next = rec.Key
				}
				return recs, next, nil
			}
		}
		if frontier == nil {
			return recs, nil, nil
		}
		after = frontier
		if examined >= budget {
			return recs, frontier, nil
		}
	}
}

// completeMeta reads again, whole, the records a value limit cut before
// the end of their metadata.
func completeMeta(ctx context.Context, n *placement.Node, bucket string, recs []storage.Record) error {
	var keys [][]byte
	var idx []int
	for i := range recs {
		if !recs[i].Truncated {
			continue
		}
		if !codec.HoldsMeta(recs[i].Value) {
			keys = append(keys, recs[i].Key)
			idx = append(idx, i)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	full, err := n.Shard.MultiGet(ctx, bucket, keys)
	if err != nil {
		return err
	}
	for j, i := range idx {
		if full[j].Version == 0 { // purged meanwhile: nothing to list
			full[j].Version, full[j].Tombstone = recs[i].Version, true
		}
		recs[i] = full[j] // possibly newer than what the scan saw: still whole
	}
	return nil
}

// MergePages merges shard pages (each sorted by key) into key order, keeps
// the newest version of a key held by several shards, and drops tombstones
// and keys past frontier. It is a k-way merge: k is the number of shards,
// so picking the smallest head is cheaper than sorting the whole.
func MergePages(pages []storage.ScanPage, frontier []byte) []storage.Record {
	n := 0
	for _, p := range pages {
		n += len(p.Records)
	}
	out := make([]storage.Record, 0, n)
	heads := make([]int, len(pages))
	var last []byte // key of the newest copy taken (or dropped) last
	for {
		best := -1
		for i, p := range pages {
			if heads[i] == len(p.Records) {
				continue
			}
			if best < 0 {
				best = i
				continue
			}
			a, b := &p.Records[heads[i]], &pages[best].Records[heads[best]]
			if c := bytes.Compare(a.Key, b.Key); c < 0 || (c == 0 && a.Version > b.Version) {
				best = i
			}
		}
		if best < 0 {
			return out
		}
		rec := pages[best].Records[heads[best]]
		heads[best]++
		if frontier != nil && bytes.Compare(rec.Key, frontier) > 0 {
			return out // every later key is past the frontier too
		}
		if last != nil && bytes.Equal(rec.Key, last) {
			continue // an older copy of a key already taken
		}
		last = rec.Key
		if !rec.Tombstone {
			out = append(out, rec)
		}
	}
}

// TopK asks every shard for its best matches and merges them: best score
// first, one match per key (the newest version, when replicas disagree).
// The answer is Exact when any shard's was (it scanned instead of asking
// its index).
func (c *Coordinator) TopK(ctx context.Context, q storage.TopKQuery) (storage.TopKResult, error) {
	return c.TopKIn(ctx, schema.BucketVectors, q)
}

// TopKIn is TopK over the vector bucket bucket (a context's vectors or a
// message's).
func (c *Coordinator) TopKIn(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error) {
	nodes := c.cfg.Topology().ReadNodes()
	results := make([]storage.TopKResult, len(nodes))
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range nodes {
		g.Go(func() error {
			vs, ok := n.Shard.(placement.Searcher)
			if !ok {
				return apierr.Errorf(apierr.CodeUnavailable, "search on shard %s: %v", n.Name, placement.ErrNoTopK)
			}
			sctx, cancel := c.ShardCtx(gctx)
			defer cancel()
			res, err := vs.TopK(sctx, bucket, q)
			if err != nil {
				return apierr.FromStorage("search on shard "+n.Name, err)
			}
			results[i] = res
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return storage.TopKResult{}, err
	}
	return MergeMatches(results, q.K), nil
}

// MergeMatches merges shards' top-k lists into one of at most k, keeping
// for each key its newest version only. Scanned is the sum, OtherDim the
// largest (replicas count the same vectors), Exact any shard's.
func MergeMatches(results []storage.TopKResult, k int) storage.TopKResult {
	newest := map[string]int{}
	var all []storage.Match
	var out storage.TopKResult
	for _, res := range results {
		out.OtherDim = max(out.OtherDim, res.OtherDim)
		out.Scanned += res.Scanned
		out.Exact = out.Exact || res.Exact
		for _, m := range res.Matches {
			if i, ok := newest[string(m.Key)]; ok {
				if m.Version > all[i].Version {
					all[i] = m
				}
				continue
			}
			newest[string(m.Key)] = len(all)
			all = append(all, m)
		}
	}
	storage.SortMatches(all)
	if len(all) > k {
		all = all[:k]
	}
	out.Matches = all
	return out
}

// AllUp fails (503) when a shard of t is down: dictionaries go to every
// shard or nowhere.
func AllUp(t *placement.Topology, what string) error {
	var down []string
	for _, n := range t.All {
		if !n.Up() {
			down = append(down, n.Name)
		}
	}
	if len(down) > 0 {
		return apierr.Errorf(apierr.CodeUnavailable, "cannot %s while shards are down (%s): a dictionary must reach every shard", what, strings.Join(down, ", "))
	}
	return nil
}

// WriteEverywhere writes one record of the dictionary bucket to every
// shard of t, all at once, and fails (503, with what) unless every shard
// stored it. Under CondAbsent a shard that holds the key already is a
// conflict (500), unless what it holds is this very write (its version):
// a sync pass (repair, rebalance) copies the dictionary bucket to every
// live shard, so it can copy a new dictionary from a shard this write
// reached first to one it has not reached yet.
func (c *Coordinator) WriteEverywhere(ctx context.Context, t *placement.Topology, key []byte, version uint64, value []byte, cond storage.Cond, what string) error {
	if err := AllUp(t, "write a compression dictionary"); err != nil {
		return err
	}
	var mu sync.Mutex
	var failed []string
	conflict := ""
	var wg sync.WaitGroup
	for _, n := range t.All {
		wg.Go(func() {
			wctx, cancel := c.ShardCtx(ctx)
			defer cancel()
			res, err := n.Shard.Apply(wctx, schema.BucketDicts, []storage.Write{{Record: storage.Record{Key: key, Version: version, Value: value}, Cond: cond}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed = append(failed, n.Name+": "+err.Error())
			case res[0].Outcome == storage.Conflict && res[0].PrevVersion != version:
				conflict = n.Name
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		slices.Sort(failed)
		return apierr.Errorf(apierr.CodeUnavailable, "%s: %s", what, strings.Join(failed, "; "))
	}
	if conflict != "" {
		return apierr.Errorf(apierr.CodeInternal, "%s: shard %s already holds a record %s in bucket %s", what, conflict, key, schema.BucketDicts)
	}
	return nil
}
