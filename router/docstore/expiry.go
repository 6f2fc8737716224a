package docstore

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// Retention. A context may carry metadata.expires_at (RFC 3339), given as
// such or as metadata.ttl_seconds on write, or inherit its topic's
// default_ttl_seconds. An expired context is filtered out on read at once
// (GET answers 404, lists and search skip it), and a background purge
// later replaces it with a tombstone, which replicates and is collected
// like any delete.
//
// Reads stay cheap: expires_at is the first field of the stored metadata
// (see Metadata), so a stored or rendered context without it is told apart
// by a prefix comparison, and only a context that has one pays for parsing
// a timestamp.
//
// The purge does not scan the contexts: every write of a context that
// expires also writes an entry in the expiry bucket, keyed by the expiry
// time (fixed-width decimal milliseconds, so keys sort by time) and the
// context's key, at the context's version. The purge reads the entries
// that are due, and for each one tombstones the context if it has indeed
// expired (a context rewritten since with a later expiry or none is left
// alone), then drops the entry.

const (
	// maxPurgePerPass bounds the entries one purge pass handles; the next
	// pass takes the rest.
	maxPurgePerPass = 10000
)

// topicTTL returns the default TTL of a topic, from the cache when it
// holds the topic (it does right after the write path checked the topic).
func (s *Store) topicTTL(ctx context.Context, topic string) int64 {
	if _, tomb, body, ok := s.cache.Get(topicCacheKey(topic)); ok {
		if tomb {
			return 0
		}
		return schema.TopicDefaultTTL(body)
	}
	rec, err := s.coord.Get(ctx, topic, schema.BucketTopics, []byte(topic))
	if err != nil || rec.Tombstone {
		return 0
	}
	return schema.TopicDefaultTTL(rec.Value)
}

// replaceExpired finishes a create-only write that found the key taken:
// if what holds it is an expired context, the write replaces it (on that
// exact version, so a concurrent rewrite wins) and reports it as a create.
// Otherwise it returns the conflict unchanged.
func (s *Store) replaceExpired(ctx context.Context, topic, id string, value []byte, conflict storage.Result) (storage.Result, uint64, error) {
	pk, key := schema.Placement(topic, id), []byte(schema.ContextKey(topic, id))
	rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, key)
	if err != nil || rec.Tombstone || !codec.StoredExpired(rec.Value, time.Now()) {
		return conflict, 0, nil
	}
	res, v, err := s.coord.Write(ctx, pk, schema.BucketContexts, key, false, value, storage.CondVersion, rec.Version)
	if err != nil || res.Outcome != storage.Applied {
		return conflict, 0, err
	}
	// The expired context's vector goes; a new one, if any, is written
	// at v, which is newer.
	s.cfg.Hooks.Deleted(ctx, topic, id, rec.Version+1)
	s.purgeMessages(topic, id, v)
	return storage.Result{Outcome: storage.Applied, PrevVersion: rec.Version, PrevTombstone: true}, v, nil
}

// ---- the expiry index and the purge ----

// indexExpiry writes the index entry of a context just written at version
// v, if it expires. A failure is logged: the context still disappears from
// reads when due, it is only not purged.
func (s *Store) indexExpiry(ctx context.Context, topic string, d *schema.Document, v uint64) {
	if d.Metadata.ExpiresAt == "" {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, d.Metadata.ExpiresAt)
	if err != nil {
		return
	}
	k := schema.ExpiryKey(t, []byte(schema.ContextKey(topic, d.Metadata.ID)))
	if err := s.coord.WriteAt(ctx, schema.PlacementOf(k), schema.BucketExpiry, k, v, false, []byte{}); err != nil {
		s.log.Warn("expiry not indexed; the context will not be purged", "topic", topic, "id", d.Metadata.ID, "err", err)
	}
}

// expiryLoop purges expired contexts every ExpiryInterval.
func (s *Store) expiryLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.ExpiryInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.cfg.Topology().Epoch == 0 {
			continue // the cluster map is not loaded yet
		}
		if n, err := s.PurgeExpired(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("expiry purge stopped; the next pass resumes", "purged", n, "err", err)
		}
	}
}

// PurgeExpired tombstones the contexts whose expiry is due and drops their
// index entries, and returns how many contexts it deleted. Several routers
// may run it at once: the tombstone is written only on the version found
// expired (CondVersion), so a concurrent rewrite, or another purge, wins.
func (s *Store) PurgeExpired(ctx context.Context) (int, error) {
	now := time.Now()
	due, err := s.dueExpiries(ctx, now)
	if err != nil {
		return 0, err
	}
	purged := 0
	for _, e := range due {
		if err := ctx.Err(); err != nil {
			return purged, err
		}
		done, err := s.purgeOne(ctx, e, now)
		if err != nil {
			return purged, err
		}
		if done {
			purged++
			s.expiredPurged.Inc()
		}
	}
	return purged, nil
}

// dueExpiries reads the live index entries due at now from every node,
// newest version of each key, in key (time) order.
func (s *Store) dueExpiries(ctx context.Context, now time.Time) ([]storage.Record, error) {
	limit := schema.ExpiryKey(now, nil) // every due key sorts before it
	t := s.cfg.Topology()
	nodes, err := s.coord.LiveReadNodes(t)
	if err != nil {
		return nil, err
	}
	found := make([][]storage.Record, len(nodes))
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range nodes {
		g.Go(func() error {
			err := placement.Walk(gctx, n.Shard, schema.BucketExpiry, storage.ScanOptions{Limit: 1000, KeysOnly: true}, s.cfg.ShardTimeout, func(recs []storage.Record) error {
				for _, rec := range recs {
					if bytes.Compare(rec.Key, limit) >= 0 {
						return placement.ErrStop
					}
					found[i] = append(found[i], rec)
				}
				if len(found[i]) >= maxPurgePerPass {
					return placement.ErrStop
				}
				return nil
			})
			if err != nil {
				return apierr.FromStorage("scan expiries on shard "+n.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	pages := make([]storage.ScanPage, len(found))
	for i, recs := range found {
		pages[i].Records = recs
	}
	due := coord.MergePages(pages, nil)
	if len(due) > maxPurgePerPass {
		due = due[:maxPurgePerPass]
	}
	return due, nil
}

// purgeOne handles one due index entry: it tombstones the context if it
// has expired, then drops the entry. It reports whether it deleted.
func (s *Store) purgeOne(ctx context.Context, entry storage.Record, now time.Time) (bool, error) {
	ck, ok := schema.ParseExpiryKey(entry.Key)
	topic, id, ok2 := schema.SplitContextKey(ck)
	if !ok || !ok2 {
		return false, s.dropExpiry(ctx, entry)
	}
	pk := schema.Placement(topic, id)
	rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, ck)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	deleted := false
	if err == nil && !rec.Tombstone && codec.StoredExpired(rec.Value, now) {
		res, v, err := s.coord.Write(ctx, pk, schema.BucketContexts, ck, true, nil, storage.CondVersion, rec.Version)
		if err != nil {
			return false, err
		}
		if res.Outcome == storage.Applied {
			s.cache.Put(contextCacheKey(string(ck)), v, true, nil)
			s.cfg.Hooks.Deleted(ctx, topic, id, v)
			s.purgeMessages(topic, id, v)
			deleted = true
		}
		// A conflict: rewritten meanwhile; that write indexed itself.
	}
	return deleted, s.dropExpiry(ctx, entry)
}

// dropExpiry deletes an index entry just above its own version, so an
// entry rewritten since (the same context and expiry, written again)
// survives.
func (s *Store) dropExpiry(ctx context.Context, entry storage.Record) error {
	return s.coord.WriteAt(ctx, schema.PlacementOf(entry.Key), schema.BucketExpiry, entry.Key, entry.Version+1, true, nil)
}
