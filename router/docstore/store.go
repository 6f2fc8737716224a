package docstore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/hotcache"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// Hooks is what the LLM features do around a context write: embed its
// text before it is stored, keep its vector and pending mark in step
// after, and drop its vector when it goes. Nil hooks do nothing.
type Hooks interface {
	// Prepare fills what the router owns of d before it is encoded (its
	// embeddings, or the pending mark). It never fails the write.
	Prepare(ctx context.Context, d *schema.Document)
	// Derived reports whether d's embeddings were made by the router, so
	// a change of content must drop them.
	Derived(d *schema.Document) bool
	// Beside returns the records the hooks keep beside d under key (its
	// vector, its pending mark), written in d's own transaction at its
	// version, so that none is missing once the write is acknowledged.
	Beside(key []byte, d *schema.Document) []storage.TxnWrite
	// Deleted runs after the context topic/id was deleted at version v.
	Deleted(ctx context.Context, topic, id string, v uint64)
	// MessageVectors embeds the messages an append adds, for message
	// search: the vector record values, one per message (nil: none for
	// that one), or nil when nothing is embedded. It never fails the
	// append.
	MessageVectors(ctx context.Context, msgs []schema.Message) [][]byte
}

// Config wires a Store. Every field but Hooks is required.
type Config struct {
	Coord *coord.Coordinator
	Codec *codec.Codec
	Cache *hotcache.Cache
	Clock *hlc.Clock
	// Topology is the cluster's current view (for fan-outs and the purge).
	Topology func() *placement.Topology
	Hooks    Hooks
	Metrics  *metrics.Router
	Registry prometheus.Registerer
	Log      *slog.Logger
	// CacheTTL is the cache's life window: topic deletions are remembered
	// twice as long (see maskedByTopicDelete).
	CacheTTL     time.Duration
	ShardTimeout time.Duration
	// ExpiryInterval is how often expired contexts are purged.
	ExpiryInterval time.Duration
	// Go runs fn in the background under the owner's lifetime.
	Go func(fn func(ctx context.Context))
	// Fresh reports whether the cache may serve (and be filled with) the
	// key placed at pk: the router follows its owners' change streams
	// closely (package coherence). Nil: always.
	Fresh func(pk string) bool
}

// Store serves topics, contexts and their messages over the cluster: it
// validates nothing (the HTTP layer decoded and checked the request),
// encodes and decodes stored values, keeps the hot cache in step with
// every write it makes, and purges expired contexts.
type Store struct {
	cfg   Config
	coord *coord.Coordinator
	codec *codec.Codec
	cache *hotcache.Cache
	log   *slog.Logger
	m     *metrics.Router

	// deletedTopics maps a topic name to the version of its last deletion.
	// Cached contexts of that topic older than it are treated as misses, so
	// a deleted topic's contexts vanish from this router's cache at once.
	// Entries older than twice the cache TTL are pruned: the cache has
	// forgotten everything they could mask.
	deletedTopics sync.Map // string → uint64

	expiredPurged prometheus.Counter // contexts the expiry purge deleted
}

// New builds a store; Start begins the expiry purge.
func New(cfg Config) *Store {
	s := &Store{cfg: cfg, coord: cfg.Coord, codec: cfg.Codec, cache: cfg.Cache, log: cfg.Log, m: cfg.Metrics}
	if s.cfg.Hooks == nil {
		s.cfg.Hooks = noHooks{}
	}
	s.expiredPurged = s.m.ExpiredPurged
	if s.cfg.Fresh == nil {
		s.cfg.Fresh = func(string) bool { return true }
	}
	return s
}

// useCache reports whether a read of the key placed at pk may use the
// cache: the request did not ask to skip it (WithoutCache) and the router
// is caught up with the key's owners.
func (s *Store) useCache(ctx context.Context, pk string) bool {
	return ctx.Value(noCacheKey{}) == nil && s.cfg.Fresh(pk)
}

type noCacheKey struct{}

// WithoutCache marks ctx so that Context and Topic neither answer from the
// hot cache nor fill it: they read from a quorum of the replicas (a
// request's Cache-Control: no-cache).
func WithoutCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, noCacheKey{}, true)
}

// Changed applies a change another router (or this one) made, as a shard's
// change stream reports it: what the cache holds of the key older than
// version is dropped, and no older read can fill it back.
func (s *Store) Changed(bucket string, key []byte, version uint64) {
	switch bucket {
	case schema.BucketTopics:
		s.cache.Invalidate(topicCacheKey(string(key)), version)
	case schema.BucketContexts:
		s.cache.Invalidate(contextCacheKey(string(key)), version)
	default:
		return
	}
	s.m.Invalidations.Inc()
}

// ForgetCached empties the hot cache: a shard's change stream had a gap,
// so any entry may be stale.
func (s *Store) ForgetCached() { s.cache.Reset() }

// SetHooks installs the LLM features' hooks; call it before serving.
func (s *Store) SetHooks(h Hooks) { s.cfg.Hooks = h }

// Start begins the expiry purge loop.
func (s *Store) Start() { s.cfg.Go(s.expiryLoop) }

type noHooks struct{}

func (noHooks) Prepare(context.Context, *schema.Document)                 {}
func (noHooks) Derived(*schema.Document) bool                             { return false }
func (noHooks) Beside([]byte, *schema.Document) []storage.TxnWrite        { return nil }
func (noHooks) Deleted(context.Context, string, string, uint64)           {}
func (noHooks) MessageVectors(context.Context, []schema.Message) [][]byte { return nil }
