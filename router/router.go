package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Config wires a Router. Zero values take the defaults noted.
type Config struct {
	// Nodes are the shards. Single-node mode passes one node whose Shard is
	// a *storage.Store; sharded mode passes one *storage.Client per daemon.
	Nodes []Node
	// Mode is reported by /api/v1/cluster: "single" or "sharded".
	Mode string
	// CacheBytes sizes the hot cache; below 1 MiB it is off.
	CacheBytes int64
	// CacheTTL bounds how long an entry is served without a shard read,
	// which bounds staleness when several routers write the same keys.
	// Zero means one minute.
	CacheTTL time.Duration
	// MaxBodyBytes caps request bodies (413 beyond). Zero means 8 MiB.
	MaxBodyBytes int64
	// ShardTimeout bounds each call to a shard. Zero means 5 seconds.
	ShardTimeout time.Duration
	// Registry receives the router's metrics; nil means a private one.
	Registry prometheus.Registerer
	// MetricsHandler serves /metrics; nil leaves the route out.
	MetricsHandler http.Handler
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Router is the stateless front of the cluster: the public API, placement
// on the ring, the hot cache and fan-out. Everything it holds can be rebuilt
// from the configuration and the shards.
type Router struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics.Router
	ring  atomic.Pointer[ring] // swapped whole on a membership change
	clock clock
	codec *codec
	cache *hotCache
	echo  *echo.Echo

	// deletedTopics maps a topic name to the version of its last deletion.
	// Cached contexts of that topic older than it are treated as misses, so
	// a deleted topic's contexts vanish from this router's cache at once.
	// Entries older than the cache TTL are pruned: the cache has forgotten
	// everything they could mask.
	deletedTopics sync.Map // string → uint64
}

// New builds a router over cfg.Nodes.
func New(cfg Config) (*Router, error) {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = time.Minute
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.ShardTimeout <= 0 {
		cfg.ShardTimeout = 5 * time.Second
	}
	if cfg.Mode == "" {
		cfg.Mode = "sharded"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	r := &Router{cfg: cfg, log: cfg.Logger, m: metrics.NewRouter(cfg.Registry)}
	nodes := make([]Node, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		n.Shard = &instrumented{Shard: n.Shard, name: n.Name, m: r.m}
		nodes[i] = n
	}
	rg, err := newRing(nodes)
	if err != nil {
		return nil, err
	}
	r.ring.Store(rg)
	if r.codec, err = newCodec(); err != nil {
		return nil, err
	}
	if r.cache, err = newHotCache(cfg.CacheBytes, cfg.CacheTTL, r.m.CacheEvictions.Inc); err != nil {
		return nil, err
	}
	metrics.RegisterCache(cfg.Registry, r.cache.stats)
	r.echo = r.routes()
	return r, nil
}

// Handler is the router's HTTP handler.
func (r *Router) Handler() http.Handler { return r.echo }

// Close releases the cache. It does not close the shards: their owner does.
func (r *Router) Close() { r.cache.close() }

// shardCtx bounds one call to a shard.
func (r *Router) shardCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.ShardTimeout)
}

// maxWriteRetries bounds how often a write is retried after a shard reports
// a newer version than the router's clock gave it (another router's clock
// ran ahead); each retry moves the clock past what the shard holds.
const maxWriteRetries = 5

// write applies one record to its owner with a fresh version and returns the
// outcome and the version written.
func (r *Router) write(ctx context.Context, node *Node, bucket string, key []byte, tombstone bool, value []byte, cond storage.Cond, match uint64) (storage.Result, uint64, error) {
	ctx, cancel := r.shardCtx(ctx)
	defer cancel()
	for range maxWriteRetries {
		v := r.clock.Next()
		res, err := node.Shard.Apply(ctx, bucket, []storage.Write{{
			Record: storage.Record{Key: key, Version: v, Tombstone: tombstone, Value: value},
			Cond:   cond, Match: match,
		}})
		if err != nil {
			return storage.Result{}, 0, fromStorage("write to shard "+node.Name, err)
		}
		if res[0].Outcome != storage.Stale {
			return res[0], v, nil
		}
		r.clock.Observe(res[0].PrevVersion)
	}
	return storage.Result{}, 0, errorf(CodeUnavailable, "write to shard %s: versions kept colliding; retry", node.Name)
}

// get reads one record from its owner. A missing key is ErrNotFound.
func (r *Router) get(ctx context.Context, node *Node, bucket string, key []byte) (storage.Record, error) {
	ctx, cancel := r.shardCtx(ctx)
	defer cancel()
	rec, err := node.Shard.Get(ctx, bucket, key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return rec, fromStorage("read from shard "+node.Name, err)
	}
	if err == nil {
		r.clock.Observe(rec.Version)
	}
	return rec, err
}

// instrumented records latency and errors of every call to a shard.
type instrumented struct {
	Shard
	name string
	m    *metrics.Router
}

func (s *instrumented) observe(op string, start time.Time, err error) {
	s.m.ShardRequestDuration.WithLabelValues(s.name, op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.m.ShardRequestErrors.WithLabelValues(s.name, op).Inc()
	}
}

func (s *instrumented) Get(ctx context.Context, bucket string, key []byte) (storage.Record, error) {
	start := time.Now()
	rec, err := s.Shard.Get(ctx, bucket, key)
	s.observe("get", start, err)
	return rec, err
}

func (s *instrumented) Apply(ctx context.Context, bucket string, w []storage.Write) ([]storage.Result, error) {
	start := time.Now()
	res, err := s.Shard.Apply(ctx, bucket, w)
	s.observe("apply", start, err)
	return res, err
}

func (s *instrumented) Scan(ctx context.Context, bucket string, o storage.ScanOptions) (storage.ScanPage, error) {
	start := time.Now()
	p, err := s.Shard.Scan(ctx, bucket, o)
	s.observe("scan", start, err)
	return p, err
}

func (s *instrumented) DeletePrefix(ctx context.Context, bucket string, prefix []byte, v uint64) (int, error) {
	start := time.Now()
	n, err := s.Shard.DeletePrefix(ctx, bucket, prefix, v)
	s.observe("delete_prefix", start, err)
	return n, err
}

func (s *instrumented) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.Shard.Ping(ctx)
	s.observe("ping", start, err)
	if err != nil {
		s.m.ShardUp.WithLabelValues(s.name).Set(0)
	} else {
		s.m.ShardUp.WithLabelValues(s.name).Set(1)
	}
	return err
}

// shardState is one shard as /api/v1/cluster reports it.
type shardState struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
}

// probe pings every shard in parallel.
func (r *Router) probe(ctx context.Context) []shardState {
	nodes := r.ring.Load().nodes
	out := make([]shardState, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			out[i] = shardState{Name: n.Name, Address: n.Address, State: "up"}
			if err := n.Shard.Ping(ctx); err != nil {
				out[i].State, out[i].Error = "down", err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

func (r *Router) String() string {
	return fmt.Sprintf("router(%s, %d shards)", r.cfg.Mode, len(r.ring.Load().nodes))
}
