package coord

import (
	"bytes"
	"context"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
)

// RangeQuery is a page of a key range whose keys are all placed at one
// ring key: a conversation's messages, placed with their context.
type RangeQuery struct {
	PK     string // the ring key every key of the range is placed at
	Bucket string
	Prefix []byte // the range
	After  []byte // start after this key; nil starts at Prefix
	Limit  int    // 1..storage.MaxScanLimit
}

// maxRangeRounds bounds the rounds of one Range call: a round ends short
// of Limit only where the replicas' pages disagree (a replica behind),
// which a few rounds settle.
const maxRangeRounds = 8

// Range reads up to q.Limit live records of the range in key order from a
// Quorum of the owners of q.PK: any Quorum holds every acknowledged write,
// so merging their pages (the newest version of each key, tombstones
// winning over the older records they delete) misses none. It reads only
// the owners, never the whole cluster: a page costs its size, not the
// range's. next is the cursor after the last record returned, nil when
// nothing follows.
func (c *Coordinator) Range(ctx context.Context, q RangeQuery) (recs []storage.Record, next []byte, err error) {
	t := c.cfg.Topology()
	set := t.Owners(q.PK)
	after := q.After
	for range maxRangeRounds {
		pages, err := c.scanQuorum(ctx, set, q.Bucket, storage.ScanOptions{Prefix: q.Prefix, After: after, Limit: q.Limit - len(recs), Tombstones: true})
		if err != nil {
			return nil, nil, err
		}
		var frontier []byte // nil: every replica asked is exhausted
		for _, p := range pages {
			if p.More && len(p.Records) > 0 {
				if last := p.Records[len(p.Records)-1].Key; frontier == nil || bytes.Compare(last, frontier) < 0 {
					frontier = last
				}
			}
		}
		merged := MergePages(pages, frontier)
		for i, rec := range merged {
			c.cfg.Clock.Observe(rec.Version)
			recs = append(recs, rec)
			if len(recs) == q.Limit {
				if frontier == nil && i == len(merged)-1 {
					return recs, nil, nil
				}
				return recs, rec.Key, nil
			}
		}
		if frontier == nil {
			return recs, nil, nil
		}
		after = frontier
	}
	return recs, after, nil
}

// scanQuorum scans every live replica of set and returns the pages of the
// first that make a Quorum of each group (503 when too few answer).
func (c *Coordinator) scanQuorum(ctx context.Context, set placement.ReplicaSet, bucket string, opts storage.ScanOptions) ([]storage.ScanPage, error) {
	got, err := askQuorum(ctx, c, set, "range read", func(ctx context.Context, n *placement.Node) (storage.ScanPage, error) {
		return n.Shard.Scan(ctx, bucket, opts)
	})
	if err != nil {
		return nil, err
	}
	pages := make([]storage.ScanPage, len(got))
	for i, a := range got {
		pages[i] = a.val
	}
	return pages, nil
}
