package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// registry is every shard the router has known, by name: topologies
// share its *Node values, so health outlives them. Each shard is reached
// through the value layer (wrap) and instrumented.
type registry struct {
	newShard   func(name, address string) placement.Shard // nil: shards known only from a map are skipped
	wrap       func(placement.Shard) placement.Shard      // nil: none
	m          *metrics.Router
	batchCalls map[string]prometheus.Observer // m.ShardBatchCalls by op, resolved once (read only)

	mu    sync.Mutex // guards nodes
	nodes map[string]*placement.Node
}

// node is the registry's node called name, or nil.
func (g *registry) node(name string) *placement.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nodes[name]
}

// shapeOf registers nodes and builds the Shape they form.
func (g *registry) shapeOf(nodes []placement.Node, replicas int) (placement.Shape, error) {
	ptrs := make([]*placement.Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Name == "" || n.Shard == nil {
			return placement.Shape{}, fmt.Errorf("shard %q: name and shard are required", n.Name)
		}
		ptrs = append(ptrs, g.register(n.Name, n.Address, n.Shard))
	}
	return placement.NewShape(ptrs, replicas)
}

// register returns the registry's node called name, creating it with sh
// (or, when sh is nil, with Config.NewShard) the first time. A node whose
// address changed is replaced.
func (g *registry) register(name, address string, sh placement.Shard) *placement.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.nodes[name]
	if ok && n.Address == address {
		return n
	}
	if sh == nil {
		if g.newShard == nil {
			// A router that reaches only the shards it was given (single
			// node: its address is the file's path) keeps its own shard
			// when a stored map names it at another address: the file was
			// moved or copied, or opened by another spelling of its path.
			if ok {
				return n
			}
			return nil
		}
		sh = g.newShard(name, address)
	}
	if b, ok := sh.(batchObservable); ok {
		b.ObserveBatches(g.observeBatch)
	}
	if g.wrap != nil {
		sh = g.wrap(sh)
	}
	n = placement.NewNode(name, address, &instrumented{Shard: sh, name: name, m: g.m})
	g.nodes[name] = n
	return n
}

// instrumented records latency and errors of every call to a shard.
// batchObservable is a shard that batches concurrent calls into one
// request (storage.Client) and can say how many each request carried.
type batchObservable interface {
	ObserveBatches(func(op string, calls int))
}

// observeBatch records how many calls one request to a shard carried. It
// runs on every such request: the two series are resolved once, in New.
func (g *registry) observeBatch(op string, calls int) {
	if o := g.batchCalls[op]; o != nil {
		o.Observe(float64(calls))
	}
}

type instrumented struct {
	placement.Shard
	name string
	m    *metrics.Router
}

// observe records one call. A call cancelled by its caller (a client that
// went away, or a read that had its Quorum already) is not the shard's
// failure and is not counted as one.
func (s *instrumented) observe(ctx context.Context, op string, start time.Time, err error) {
	s.m.ShardRequestDuration.WithLabelValues(s.name, op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil {
		s.m.ShardRequestErrors.WithLabelValues(s.name, op).Inc()
	}
}

// Unwrap is the shard below (see placement.As).
func (s *instrumented) Unwrap() placement.Shard { return s.Shard }

func (s *instrumented) Get(ctx context.Context, bucket string, key []byte) (storage.Record, error) {
	start := time.Now()
	rec, err := s.Shard.Get(ctx, bucket, key)
	s.observe(ctx, "get", start, err)
	return rec, err
}

func (s *instrumented) Apply(ctx context.Context, bucket string, w []storage.Write) ([]storage.Result, error) {
	start := time.Now()
	res, err := s.Shard.Apply(ctx, bucket, w)
	s.observe(ctx, "apply", start, err)
	return res, err
}

func (s *instrumented) Txn(ctx context.Context, w []storage.TxnWrite) ([]storage.Result, error) {
	start := time.Now()
	res, err := s.Shard.Txn(ctx, w)
	s.observe(ctx, "txn", start, err)
	return res, err
}

func (s *instrumented) Scan(ctx context.Context, bucket string, o storage.ScanOptions) (storage.ScanPage, error) {
	start := time.Now()
	p, err := s.Shard.Scan(ctx, bucket, o)
	s.observe(ctx, "scan", start, err)
	return p, err
}

func (s *instrumented) DeletePrefix(ctx context.Context, bucket string, prefix []byte, v uint64) (int, error) {
	start := time.Now()
	n, err := s.Shard.DeletePrefix(ctx, bucket, prefix, v)
	s.observe(ctx, "delete_prefix", start, err)
	return n, err
}

func (s *instrumented) MultiGet(ctx context.Context, bucket string, keys [][]byte) ([]storage.Record, error) {
	start := time.Now()
	recs, err := s.Shard.MultiGet(ctx, bucket, keys)
	s.observe(ctx, "multiget", start, err)
	return recs, err
}

func (s *instrumented) Purge(ctx context.Context, bucket string, recs []storage.Record) (int, error) {
	start := time.Now()
	n, err := s.Shard.Purge(ctx, bucket, recs)
	s.observe(ctx, "purge", start, err)
	return n, err
}

func (s *instrumented) Health(ctx context.Context) (storage.Health, error) {
	start := time.Now()
	h, err := s.Shard.Health(ctx)
	s.observe(ctx, "health", start, err)
	return h, err
}

// KeywordStats forwards to the wrapped shard, recording the call.
func (s *instrumented) KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (storage.KeywordStats, error) {
	ks, ok := s.Shard.(placement.KeywordSearcher)
	if !ok {
		return storage.KeywordStats{}, placement.ErrNoKeyword
	}
	start := time.Now()
	st, err := ks.KeywordStats(ctx, bucket, prefix, terms)
	s.observe(ctx, "kwstats", start, err)
	return st, err
}

// Keyword forwards to the wrapped shard, recording the call.
func (s *instrumented) Keyword(ctx context.Context, bucket string, q storage.KeywordQuery) (storage.TopKResult, error) {
	ks, ok := s.Shard.(placement.KeywordSearcher)
	if !ok {
		return storage.TopKResult{}, placement.ErrNoKeyword
	}
	start := time.Now()
	res, err := ks.Keyword(ctx, bucket, q)
	s.observe(ctx, "keyword", start, err)
	return res, err
}

// TopK forwards to the wrapped shard, recording the call like the others.
func (s *instrumented) TopK(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error) {
	vs, ok := s.Shard.(placement.Searcher)
	if !ok {
		return storage.TopKResult{}, placement.ErrNoTopK
	}
	start := time.Now()
	res, err := vs.TopK(ctx, bucket, q)
	s.observe(ctx, "topk", start, err)
	return res, err
}
