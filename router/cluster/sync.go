package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// A sync pass walks every bucket on every live node in key order, compares
// the versions each node holds, and
//   - copies the newest version of a key to each of its owners that lacks
//     it (anti-entropy repair, and the copy phase of a rebalance);
//   - purges copies from nodes that no longer own the key, once every owner
//     holds it (never while a migration runs);
//   - collects tombstones that every owner holds and that are older than
//     the repair interval, so a delete never comes back.
//
// Every step is put-if-newer or purge-if-not-newer, so a pass can be
// interrupted and run again, by this router or another, at any time.

// PageSize is how many keys a pass reads per node per round.
const PageSize = 1000

// Buckets are the buckets a pass walks.
var Buckets = []string{schema.BucketTopics, schema.BucketContexts, schema.BucketMessages, schema.BucketMessageVectors, schema.BucketVectors, schema.BucketText, schema.BucketMessageText, schema.BucketEmbedPending, schema.BucketExpiry}

type passResult struct {
	scanned, copied, bytes, purged, missing int64
}

type holder struct {
	node      *placement.Node
	version   uint64
	tombstone bool
}

// syncPass runs one pass over t; kind ("repair" or "rebalance") names the
// progress it reports.
func (cl *Cluster) syncPass(ctx context.Context, t *placement.Topology, kind string) (passResult, error) {
	var total passResult
	var live []*placement.Node
	for _, n := range t.All {
		if n.Up() {
			live = append(live, n)
		}
	}
	if len(live) == 0 {
		return total, fmt.Errorf("no shard is up")
	}
	if slices.ContainsFunc(t.All, func(n *placement.Node) bool { return !n.Up() && !cl.isRemoved(n.Name) }) {
		// A down shard may hold the only copy of some keys: the pass can
		// bring the others up to date but cannot be complete. (A shard an
		// operator removed while down is gone: nothing waits for it.)
		total.missing++
	}
	// Dictionaries first: records compressed with them may be copied next.
	copied, err := cl.syncShared(ctx, live)
	total.copied += copied
	cl.status.add(kind, passResult{copied: copied}, 0)
	if err != nil {
		cl.status.add(kind, passResult{}, 1)
		return total, err
	}
	for _, bucket := range Buckets {
		var after []byte
		for {
			pages := make([]storage.ScanPage, len(live))
			g, gctx := errgroup.WithContext(ctx)
			for i, n := range live {
				g.Go(func() error {
					sctx, cancel := cl.shardCtx(gctx)
					defer cancel()
					p, err := n.Shard.Scan(sctx, bucket, storage.ScanOptions{After: after, Limit: PageSize, Tombstones: true, KeysOnly: true})
					if err != nil {
						return fmt.Errorf("scan %s on shard %s: %w", bucket, n.Name, err)
					}
					pages[i] = p
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				cl.status.add(kind, passResult{}, 1)
				return total, err
			}
			var frontier []byte
			for _, p := range pages {
				if p.More && len(p.Records) > 0 {
					if last := p.Records[len(p.Records)-1].Key; frontier == nil || bytes.Compare(last, frontier) < 0 {
						frontier = last
					}
				}
			}
			keys, holders := groupHolders(live, pages, frontier)
			res, err := cl.syncKeys(ctx, t, bucket, keys, holders)
			total.scanned += res.scanned
			total.copied += res.copied
			total.bytes += res.bytes
			total.purged += res.purged
			total.missing += res.missing
			cl.status.add(kind, res, 0)
			if err != nil {
				cl.status.add(kind, passResult{}, 1)
				return total, err
			}
			if frontier == nil {
				break
			}
			after = frontier
		}
	}
	return total, nil
}

// groupHolders lists, for each key up to frontier, which nodes hold it at
// which version, keys in order.
func groupHolders(nodes []*placement.Node, pages []storage.ScanPage, frontier []byte) ([]string, map[string][]holder) {
	holders := map[string][]holder{}
	for i, p := range pages {
		for _, rec := range p.Records {
			if frontier != nil && bytes.Compare(rec.Key, frontier) > 0 {
				break
			}
			k := string(rec.Key)
			holders[k] = append(holders[k], holder{node: nodes[i], version: rec.Version, tombstone: rec.Tombstone})
		}
	}
	keys := make([]string, 0, len(holders))
	for k := range holders {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, holders
}

type copyItem struct {
	key    []byte
	source *placement.Node
}

func (cl *Cluster) syncKeys(ctx context.Context, t *placement.Topology, bucket string, keys []string, holders map[string][]holder) (passResult, error) {
	var res passResult
	copies := map[*placement.Node][]copyItem{} // target → keys to copy to it
	purges := map[*placement.Node][]storage.Record{}
	anyDown := slices.ContainsFunc(t.All, func(n *placement.Node) bool { return !n.Up() })
	gcBefore := time.Now().Add(-cl.cfg.RepairInterval)

	for _, k := range keys {
		res.scanned++
		hs := holders[k]
		newest := hs[0]
		for _, h := range hs[1:] {
			if h.version > newest.version {
				newest = h
			}
		}
		owners := t.Owners(schema.PlacementOf([]byte(k))).Union
		complete := true
		for _, o := range owners {
			held := uint64(0)
			for _, h := range hs {
				if h.node == o {
					held = h.version
				}
			}
			if held >= newest.version {
				continue
			}
			complete = false
			if !o.Up() {
				if !cl.isRemoved(o.Name) {
					res.missing++
				}
				continue
			}
			copies[o] = append(copies[o], copyItem{key: []byte(k), source: newest.node})
		}
		if t.State == placement.StateMigrating || !complete {
			continue // nothing is removed while data moves or an owner lacks the key
		}
		// Every owner holds the newest version: copies elsewhere can go.
		for _, h := range hs {
			if !containsNode(owners, h.node) {
				purges[h.node] = append(purges[h.node], storage.Record{Key: []byte(k), Version: h.version})
			}
		}
		// A tombstone every owner holds, older than the repair interval and
		// with every node up (none can bring back an older copy): collect it.
		if newest.tombstone && t.State == placement.StateStable && !anyDown && hlc.Time(newest.version).Before(gcBefore) {
			for _, h := range hs {
				if containsNode(owners, h.node) {
					purges[h.node] = append(purges[h.node], storage.Record{Key: []byte(k), Version: newest.version})
				}
			}
		}
	}

	// Copy: fetch the newest values from their holders, write them to the
	// owners that lack them.
	for target, items := range copies {
		bySource := map[*placement.Node][][]byte{}
		for _, it := range items {
			bySource[it.source] = append(bySource[it.source], it.key)
		}
		for source, ks := range bySource {
			gctx, cancel := cl.shardCtx(ctx)
			recs, err := source.Shard.MultiGet(gctx, bucket, ks)
			cancel()
			if err != nil {
				return res, fmt.Errorf("read %d keys from shard %s: %w", len(ks), source.Name, err)
			}
			writes := make([]storage.Write, 0, len(recs))
			var size int64
			for _, rec := range recs {
				if rec.Version == 0 {
					continue // purged meanwhile
				}
				writes = append(writes, storage.Write{Record: rec})
				size += int64(len(rec.Key) + len(rec.Value))
			}
			if len(writes) == 0 {
				continue
			}
			if cl.syncLimit != nil {
				if err := cl.syncLimit.WaitN(ctx, len(writes)); err != nil {
					return res, err
				}
			}
			wctx, cancel := cl.shardCtx(coord.EpochCtx(ctx, t))
			results, err := target.Shard.Apply(wctx, bucket, writes)
			cancel()
			if err != nil {
				return res, fmt.Errorf("copy %d keys to shard %s: %w", len(writes), target.Name, err)
			}
			for _, rr := range results {
				if rr.Outcome == storage.Applied {
					res.copied++
				}
			}
			res.bytes += size
		}
	}

	for node, recs := range purges {
		if !node.Up() {
			continue
		}
		for chunk := range slices.Chunk(recs, PageSize) {
			pctx, cancel := cl.shardCtx(ctx)
			n, err := node.Shard.Purge(pctx, bucket, chunk)
			cancel()
			if err != nil {
				return res, fmt.Errorf("purge %d keys on shard %s: %w", len(chunk), node.Name, err)
			}
			res.purged += int64(n)
		}
	}
	return res, nil
}
