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
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/hotcache"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Config wires a Router. Zero values take the defaults noted.
type Config struct {
	// Nodes are the shards. Single-node mode passes one node whose Shard is
	// a *storage.Store; sharded mode passes one *storage.Client per daemon.
	Nodes []Node
	// Replicas is how many shards hold each key (capped at the number of
	// shards). Zero means 1.
	Replicas int
	// NewShard reaches a shard known only from the cluster map stored on
	// the nodes (a shard being removed, say). Nil: such shards are skipped.
	NewShard func(name, address string) Shard
	// Reload returns the shards and replicas wanted now (the config file
	// re-read); SIGHUP and POST /api/v1/admin/reload call it. Nil: reload
	// is refused.
	Reload func() ([]Node, int, error)
	// Discovery marks the shards as found by DNS rather than configured:
	// every shard of the cluster map then stays in the wanted Shape, listed
	// by Nodes and Reload or not, until an operator removes it (POST
	// /api/v1/admin/remove; see admin.go). False: the Shape is exactly
	// what Nodes and Reload list.
	Discovery bool
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
	// ProbeInterval is how often every shard's health is probed; a shard
	// that misses ProbeMisses probes in a row is marked down. Zero means
	// 500 ms and 3.
	ProbeInterval time.Duration
	ProbeMisses   int
	// RepairInterval is how often an anti-entropy pass runs; tombstones
	// older than it are collected once every replica holds them. Zero
	// means 10 minutes.
	RepairInterval time.Duration
	// ExpiryInterval is how often expired contexts are purged (replaced by
	// tombstones); they vanish from reads at once regardless. Zero means
	// one minute.
	ExpiryInterval time.Duration
	// SyncRate caps how many keys per second repair and rebalance copy, so
	// moving data does not crowd out clients. Zero means no cap.
	SyncRate int
	// Registry receives the router's metrics; nil means a private one.
	Registry prometheus.Registerer
	// MetricsHandler serves /metrics; nil leaves the route out.
	MetricsHandler http.Handler
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// LLM configures the Ollama bridge; the zero value turns it off.
	LLM LLMConfig
	// Security configures API keys, limits, the audit trail and encryption
	// at rest (see security.go); the zero value runs open and in the clear.
	Security SecurityConfig
}

// Node and Shard are placement's: a shard as the configuration names it,
// and what the router needs of one.
type (
	Node  = placement.Node
	Shard = placement.Shard
)

// Router is the stateless front of the cluster: the public API, Placement
// on the Ring, replication, the hot cache and fan-out. Everything it holds
// can be rebuilt from the configuration and the shards.
type Router struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Router
	// batchCalls is m.ShardBatchCalls by op, resolved once (read only).
	batchCalls map[string]prometheus.Observer
	topo       atomic.Pointer[placement.Topology] // swapped whole on a membership change
	clock      hlc.Clock
	coord      *coord.Coordinator
	codec      *codec.Codec
	cache      *hotcache.Cache
	echo       *echo.Echo
	llm        *llmState    // the Ollama bridge; set by llmRoutes
	sec        *security    // keys, limits, audit; set by secure
	comp       *compression // trained dictionaries (compression.go)

	// nodesMu guards nodes, the registry of every shard the router has
	// known: topologies share its *Node values, so health outlives them.
	nodesMu sync.Mutex
	nodes   map[string]*Node

	// desiredMu guards desired: the Shape the configuration asks for;
	// wantReplicas, the replicas it asks for (uncapped); and removed, the
	// shards an operator removed (discovery mode; see admin.go).
	desiredMu    sync.Mutex
	desired      placement.Shape
	wantReplicas int
	removed      map[string]bool

	syncLimit *rate.Limiter // nil: copies are not throttled

	mapMu   sync.Mutex // serialises map loads, installs and adoptions
	syncMu  sync.Mutex // one repair or rebalance pass at a time
	status  syncStatus
	repairs chan struct{} // a pending repair request

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	// deletedTopics maps a topic name to the version of its last deletion.
	// Cached contexts of that topic older than it are treated as misses, so
	// a deleted topic's contexts vanish from this router's cache at once.
	// Entries older than the cache TTL are pruned: the cache has forgotten
	// everything they could mask.
	deletedTopics sync.Map // string → uint64

	expiredPurged prometheus.Counter // contexts the expiry purge deleted
}

// New builds a router over cfg.Nodes and starts its background work:
// health probes, loading (or creating) the cluster map on the shards,
// resuming an interrupted rebalance, and periodic repair. Close stops it.
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
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 500 * time.Millisecond
	}
	if cfg.ProbeMisses <= 0 {
		cfg.ProbeMisses = 3
	}
	if cfg.RepairInterval <= 0 {
		cfg.RepairInterval = 10 * time.Minute
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.ExpiryInterval <= 0 {
		cfg.ExpiryInterval = time.Minute
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
	r := &Router{
		cfg:     cfg,
		log:     cfg.Logger,
		m:       metrics.NewRouter(cfg.Registry),
		nodes:   map[string]*Node{},
		repairs: make(chan struct{}, 1),
	}
	r.batchCalls = map[string]prometheus.Observer{
		"get":   r.m.ShardBatchCalls.WithLabelValues("get"),
		"apply": r.m.ShardBatchCalls.WithLabelValues("apply"),
	}
	if cfg.SyncRate > 0 {
		r.syncLimit = rate.NewLimiter(rate.Limit(cfg.SyncRate), max(cfg.SyncRate, syncPage))
	}
	desired, err := r.shapeOf(cfg.Nodes, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	r.desired, r.wantReplicas = desired, cfg.Replicas
	r.topo.Store(placement.NewTopology(0, placement.StateStable, desired, placement.Shape{}, nil))
	r.coord = coord.New(coord.Config{
		Topology: r.topo.Load, Refresh: r.refreshMap, Clock: &r.clock, ShardTimeout: cfg.ShardTimeout,
		Metrics: r.m, Go: r.background, Log: r.log,
	})
	if r.codec, err = codec.New(codec.Options{Fetch: r.fetchDict, Observe: func(in, out int) {
		r.m.CodecInputBytes.Add(float64(in))
		r.m.CodecOutputBytes.Add(float64(out))
	}}); err != nil {
		return nil, err
	}
	r.initCompression()
	if r.cache, err = hotcache.New(cfg.CacheBytes, cfg.CacheTTL, r.m.CacheEvictions.Inc); err != nil {
		return nil, err
	}
	metrics.RegisterCache(cfg.Registry, r.cache.Stats)
	r.registerStatusMetrics(cfg.Registry)
	r.echo = r.routes()

	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	r.loop(r.probeLoop)
	r.loop(r.bootstrap)
	r.loop(r.repairLoop)
	r.loop(r.compressionLoop)
	r.startExpiry()
	return r, nil
}

// shapeOf registers nodes and builds the Shape they form.
func (r *Router) shapeOf(nodes []Node, replicas int) (placement.Shape, error) {
	ptrs := make([]*Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Name == "" || n.Shard == nil {
			return placement.Shape{}, fmt.Errorf("shard %q: name and shard are required", n.Name)
		}
		ptrs = append(ptrs, r.register(n.Name, n.Address, n.Shard))
	}
	return placement.NewShape(ptrs, replicas)
}

// register returns the registry's node called name, creating it with sh
// (or, when sh is nil, with Config.NewShard) the first time. A node whose
// address changed is replaced.
func (r *Router) register(name, address string, sh Shard) *Node {
	r.nodesMu.Lock()
	defer r.nodesMu.Unlock()
	if n, ok := r.nodes[name]; ok && n.Address == address {
		return n
	}
	if sh == nil {
		if r.cfg.NewShard == nil {
			return nil
		}
		sh = r.cfg.NewShard(name, address)
	}
	if b, ok := sh.(batchObservable); ok {
		b.ObserveBatches(r.observeBatch)
	}
	n := placement.NewNode(name, address, &instrumented{Shard: codec.Seal(sh, r.cfg.Security.Keyring), name: name, m: r.m})
	r.nodes[name] = n
	return n
}

// Handler is the router's HTTP handler.
func (r *Router) Handler() http.Handler { return r.echo }

// Close stops the background work and releases the cache. It does not
// close the shards: their owner does.
func (r *Router) Close() {
	r.closeLLM()
	r.bgCancel()
	r.bgWG.Wait()
	r.cache.Close()
}

// loop runs fn in the background until Close.
func (r *Router) loop(fn func(context.Context)) {
	r.bgWG.Add(1)
	go func() {
		defer r.bgWG.Done()
		fn(r.bgCtx)
	}()
}

// background runs fn once, owned by the router: Close waits for it.
func (r *Router) background(fn func(context.Context)) {
	r.bgWG.Add(1)
	go func() {
		defer r.bgWG.Done()
		fn(r.bgCtx)
	}()
}

// instrumented records latency and errors of every call to a shard.
// batchObservable is a shard that batches concurrent calls into one
// request (storage.Client) and can say how many each request carried.
type batchObservable interface {
	ObserveBatches(func(op string, calls int))
}

// observeBatch records how many calls one request to a shard carried. It
// runs on every such request: the two series are resolved once, in New.
func (r *Router) observeBatch(op string, calls int) {
	if o := r.batchCalls[op]; o != nil {
		o.Observe(float64(calls))
	}
}

type instrumented struct {
	Shard
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
func (s *instrumented) Unwrap() Shard { return s.Shard }

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

func (r *Router) String() string {
	return fmt.Sprintf("router(%s, %d shards)", r.cfg.Mode, len(r.topo.Load().Cur.Ring.Nodes()))
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
