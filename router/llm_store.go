package router

import (
	"context"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// The LLM features reach the shards only through the helpers in this file,
// so a change in how the router places and replicates records is adapted
// here, not in every handler.

// readRecord reads the newest record of key, placed at pk. A key never
// written is storage.ErrNotFound; a deleted one is a tombstone.
func (r *Router) readRecord(ctx context.Context, pk, bucket string, key []byte) (storage.Record, error) {
	return r.get(ctx, pk, bucket, key)
}

// writeRecord writes key, placed at pk, with a fresh version under cond.
func (r *Router) writeRecord(ctx context.Context, pk, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64) (storage.Result, uint64, error) {
	return r.write(ctx, pk, bucket, key, tombstone, value, cond, match)
}

// writeAt writes key, placed at pk, at exactly version v on a Quorum of
// its replicas (a record that follows another one's version, like a
// context's vector). A newer record held wins silently.
func (r *Router) writeAt(ctx context.Context, pk, bucket string, key []byte, v uint64, tombstone bool, value []byte) error {
	rec := storage.Record{Key: key, Version: v, Tombstone: tombstone, Value: value}
	for range maxWriteRetries {
		t := r.topo.Load()
		_, err := r.replicate(ctx, t, t.Owners(pk), bucket, rec, map[*placement.Node]bool{})
		if errors.Is(err, storage.ErrStaleEpoch) {
			r.refreshMap(ctx)
			continue
		}
		return err
	}
	return apierr.Errorf(apierr.CodeUnavailable, "write of %q did not settle after %d attempts; retry", schema.Truncate(string(key)), maxWriteRetries)
}

// searchNodes are the shards a fan-out over vectors must ask: every owner
// of every serving Placement (replicas answer the same keys; callers keep
// the newest version of each).
func (r *Router) searchNodes() []*placement.Node { return r.topo.Load().ReadNodes() }

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
