package storage

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// epochKey carries the cluster-map epoch a write is sent under.
type epochKey struct{}

// WithEpoch returns a context whose writes carry epoch: a shard that holds a
// newer cluster map refuses them with ErrStaleEpoch. The Client sends it
// along; the Store checks it.
func WithEpoch(ctx context.Context, epoch uint64) context.Context {
	return context.WithValue(ctx, epochKey{}, epoch)
}

// EpochFrom returns the epoch set by WithEpoch.
func EpochFrom(ctx context.Context) (uint64, bool) {
	e, ok := ctx.Value(epochKey{}).(uint64)
	return e, ok
}

// MultiGet returns the records held for keys, in order; a key never written
// comes back as a Record with Version 0. Repair and rebalance fetch the
// values they copy with it.
func (s *Store) MultiGet(_ context.Context, bucket string, keys [][]byte) ([]Record, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	if len(keys) == 0 || len(keys) > MaxBatch {
		return nil, fmt.Errorf("multiget of %d keys (want 1..%d): %w", len(keys), MaxBatch, ErrInvalid)
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	out := make([]Record, len(keys))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		for i, k := range keys {
			out[i].Key = bytes.Clone(k)
			if b == nil {
				continue
			}
			raw := b.Get(k)
			if raw == nil {
				continue
			}
			v, tomb, val, err := parseStored(raw)
			if err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
			out[i].Version, out[i].Tombstone = v, tomb
			if !tomb {
				out[i].Value = bytes.Clone(val)
			}
		}
		return nil
	})
	return out, err
}

// Purge removes records for good (no tombstone): each key whose held
// version is at most the given one. A newer write is never removed, so a
// purge racing a write loses. It returns how many records it removed.
// Rebalance purges records from shards that no longer own them, and
// tombstone collection purges tombstones every replica holds.
func (s *Store) Purge(ctx context.Context, bucket string, recs []Record) (int, error) {
	if err := checkBucket(bucket); err != nil {
		return 0, err
	}
	if len(recs) == 0 || len(recs) > MaxBatch {
		return 0, fmt.Errorf("purge of %d keys (want 1..%d): %w", len(recs), MaxBatch, ErrInvalid)
	}
	for i := range recs {
		if err := checkKey(recs[i].Key); err != nil {
			return 0, err
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	n := 0
	var removed [][]byte
	var queued uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		n, removed = 0, removed[:0]
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		for _, r := range recs {
			raw := b.Get(r.Key)
			if raw == nil {
				continue
			}
			v, _, _, err := parseStored(raw)
			if err != nil {
				return fmt.Errorf("key %q: %w", r.Key, err)
			}
			if v <= r.Version {
				if err := s.kw.enqueuePurge(tx, bucket, r.Key, raw); err != nil {
					return err
				}
				if err := b.Delete(r.Key); err != nil {
					return err
				}
				n++
				removed = append(removed, r.Key)
			}
		}
		queued = s.kw.seq.Load()
		return nil
	})
	if err == nil {
		s.kw.committed(queued)
		s.indexPurged(bucket, removed)
	}
	return n, err
}

// Health is what a shard reports about itself to probes.
type Health struct {
	Status string `json:"status"`
	NodeID string `json:"node_id"`
	Epoch  uint64 `json:"epoch"` // of the cluster map it holds
}

// Health reports the shard's identity and the map epoch it holds.
func (s *Store) Health(ctx context.Context) (Health, error) {
	if err := s.Ping(ctx); err != nil {
		return Health{}, err
	}
	return Health{Status: "ok", NodeID: s.nodeID, Epoch: s.epoch.Load()}, nil
}
