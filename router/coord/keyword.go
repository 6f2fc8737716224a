package coord

import (
	"context"
	"math"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// KeywordQuery is a keyword search of one topic: its analysed Terms
// (kwindex.QueryTerms), the K best wanted, and tags a match must carry.
type KeywordQuery struct {
	// Bucket is the text bucket searched: schema.BucketText (when empty)
	// or schema.BucketMessageText.
	Bucket string
	Prefix []byte // the topic and its separator (or a narrower range)
	Terms  []string
	K      int
	Tags   []string
}

// Keyword runs a keyword search in two phases so that every shard scores
// with the statistics of the whole topic (a term rare in the topic ranks
// as rare on every shard, however the documents fell): it asks every shard
// for its counts (documents, total length, each term's document
// frequency), sums them, divides by the copies each document has (the
// replicas: every shard holding a copy counts it), then sends the sums
// with the query and merges the shards' top k as TopK does.
//
// While a rebalance moves keys, a document may briefly have more copies
// than the replicas (its former owner not purged yet): the statistics
// then overcount it a little, and the scores move by as much; the ranking
// of documents of similar length barely does.
func (c *Coordinator) Keyword(ctx context.Context, q KeywordQuery) (storage.TopKResult, error) {
	t := c.cfg.Topology()
	nodes := t.ReadNodes()
	stats := make([]storage.KeywordStats, len(nodes))
	if err := eachSearcher(ctx, c, nodes, func(ctx context.Context, i int, ks placement.KeywordSearcher) error {
		st, err := ks.KeywordStats(ctx, q.bucket(), q.Prefix, q.Terms)
		stats[i] = st
		return err
	}); err != nil {
		return storage.TopKResult{}, err
	}
	global := SumKeywordStats(stats, len(q.Terms), t.Cur.Replicas)
	if global.Docs == 0 {
		return storage.TopKResult{Exact: true}, nil
	}
	results := make([]storage.TopKResult, len(nodes))
	sq := storage.KeywordQuery{Prefix: q.Prefix, Terms: q.Terms, K: q.K, Tags: q.Tags, Stats: global}
	if err := eachSearcher(ctx, c, nodes, func(ctx context.Context, i int, ks placement.KeywordSearcher) error {
		res, err := ks.Keyword(ctx, q.bucket(), sq)
		results[i] = res
		return err
	}); err != nil {
		return storage.TopKResult{}, err
	}
	res := MergeMatches(results, q.K)
	res.Scanned = (res.Scanned + t.Cur.Replicas - 1) / max(1, t.Cur.Replicas)
	return res, nil
}

// SumKeywordStats adds shards' statistics and divides them by copies, the
// number of shards that hold each document, rounding to the nearest.
func SumKeywordStats(stats []storage.KeywordStats, terms, copies int) storage.KeywordStats {
	sum := storage.KeywordStats{DF: make([]int64, terms)}
	for _, st := range stats {
		sum.Docs += st.Docs
		sum.Length += st.Length
		for i := range min(terms, len(st.DF)) {
			sum.DF[i] += st.DF[i]
		}
	}
	if copies > 1 {
		div := func(n int64) int64 { return int64(math.Round(float64(n) / float64(copies))) }
		sum.Docs, sum.Length = div(sum.Docs), div(sum.Length)
		for i := range sum.DF {
			sum.DF[i] = div(sum.DF[i])
		}
	}
	return sum
}

// eachSearcher runs fn on every node's keyword search at once, each under
// the shard deadline.
func eachSearcher(ctx context.Context, c *Coordinator, nodes []*placement.Node, fn func(context.Context, int, placement.KeywordSearcher) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range nodes {
		g.Go(func() error {
			ks, ok := n.Shard.(placement.KeywordSearcher)
			if !ok {
				return apierr.Errorf(apierr.CodeUnavailable, "keyword search on shard %s: %v", n.Name, placement.ErrNoKeyword)
			}
			sctx, cancel := c.ShardCtx(gctx)
			defer cancel()
			if err := fn(sctx, i, ks); err != nil {
				return apierr.FromStorage("keyword search on shard "+n.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func (q KeywordQuery) bucket() string {
	if q.Bucket == "" {
		return schema.BucketText
	}
	return q.Bucket
}
