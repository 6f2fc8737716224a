package router

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coherence"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/feed"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/hotcache"
	"github.com/go-kvdb/go-kvdb/router/httpapi"
	"github.com/go-kvdb/go-kvdb/router/llm"
	"github.com/go-kvdb/go-kvdb/router/maintenance"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
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
	// CacheTTL bounds how long an entry is served without a shard read: a
	// last bound, since the router follows every shard's change stream
	// and drops what other routers' writes changed (package coherence).
	// Zero means one minute.
	CacheTTL time.Duration
	// ChangesHeartbeat is the heartbeat asked of each shard's change
	// stream: a stream silent for 2.5 of them stops cached answers for the
	// keys its shard owns. Zero means 100 ms.
	ChangesHeartbeat time.Duration
	// FeedHeartbeat is how often an idle client change feed sends a
	// comment. Zero means 15 s.
	FeedHeartbeat time.Duration
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

// LLMConfig configures the LLM features (see package llm), and
// SecurityConfig the API's keys, limits and audit trail and encryption at
// rest (see package httpapi).
type (
	LLMConfig      = llm.Config
	SecurityConfig = httpapi.SecurityConfig
)

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
	cfg     Config
	log     *slog.Logger
	m       *metrics.Router
	clock   hlc.Clock
	cluster *cluster.Cluster // the shards, their health, the cluster map, repair and rebalance
	topo    interface {      // the cluster's current view (cluster.Topology), read on every request
		Load() *placement.Topology
	}
	coord *coord.Coordinator
	docs  *docstore.Store
	maint *maintenance.Service
	codec *codec.Codec
	cache *hotcache.Cache
	api   *httpapi.API
	llm   *llm.Service // the LLM features
	subs  *coherence.Followers

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
	r := &Router{cfg: cfg, log: cfg.Logger, m: metrics.NewRouter(cfg.Registry)}
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
	var err error
	r.cluster, err = cluster.New(cluster.Config{
		Nodes: cfg.Nodes, Replicas: cfg.Replicas, NewShard: cfg.NewShard, Reload: cfg.Reload, Discovery: cfg.Discovery,
		Mode: cfg.Mode, ShardTimeout: cfg.ShardTimeout, ProbeInterval: cfg.ProbeInterval, ProbeMisses: cfg.ProbeMisses,
		RepairInterval: cfg.RepairInterval, SyncRate: cfg.SyncRate,
		Wrap:    func(sh placement.Shard) placement.Shard { return codec.Seal(sh, cfg.Security.Keyring) },
		Metrics: r.m, Registry: cfg.Registry, Log: r.log, Go: r.background,
		OnReload:   func() { r.maint.RequestDictReload(true) },
		SyncShared: func(ctx context.Context, live []*placement.Node) (int64, error) { return r.maint.SyncDicts(ctx, live) },
	})
	if err != nil {
		r.bgCancel()
		return nil, err
	}
	r.topo = topoOf{r.cluster}
	r.coord = coord.New(coord.Config{
		Topology: r.cluster.Topology, Refresh: r.cluster.RefreshMap, Clock: &r.clock, ShardTimeout: cfg.ShardTimeout,
		Metrics: r.m, Go: r.background, Log: r.log,
	})
	if r.codec, err = codec.New(codec.Options{Fetch: func(id uint32) ([]byte, error) { return r.maint.FetchDict(id) }, Observe: func(in, out int) {
		r.m.CodecInputBytes.Add(float64(in))
		r.m.CodecOutputBytes.Add(float64(out))
	}}); err != nil {
		return nil, err
	}
	if r.cache, err = hotcache.New(cfg.CacheBytes, cfg.CacheTTL, r.m.CacheEvictions.Inc); err != nil {
		return nil, err
	}
	metrics.RegisterCache(cfg.Registry, r.cache.Stats)
	r.subs = coherence.New(coherence.Config{
		Topology:  r.cluster.Topology,
		OnChange:  func(ch *storage.Change) { r.docs.Changed(ch.Bucket, ch.Key, ch.Version) },
		OnReset:   func() { r.docs.ForgetCached() },
		Heartbeat: cfg.ChangesHeartbeat, Reconcile: cfg.ProbeInterval, Metrics: r.m, Log: r.log, Go: r.background,
	})
	r.docs = docstore.New(docstore.Config{
		Coord: r.coord, Codec: r.codec, Cache: r.cache, Clock: &r.clock, Topology: r.cluster.Topology,
		Metrics: r.m, Registry: cfg.Registry, Log: r.log,
		CacheTTL: cfg.CacheTTL, ShardTimeout: cfg.ShardTimeout, ExpiryInterval: cfg.ExpiryInterval, Go: r.background,
		Fresh: r.subs.Fresh,
	})
	r.llm = llm.New(cfg.LLM, llm.Deps{
		Docs: r.docs, Records: r.coord, Codec: r.codec, Topology: r.cluster.Topology, Registry: cfg.Registry,
		Log: r.log, ShardTimeout: cfg.ShardTimeout, Go: r.background,
	})
	r.docs.SetHooks(r.llm)
	r.maint = maintenance.New(maintenance.Config{
		Cluster: r.cluster, Coord: r.coord, Codec: r.codec, Docs: r.docs, Clock: &r.clock, Keyring: cfg.Security.Keyring,
		Metrics: r.m, Log: r.log, Mode: cfg.Mode, ShardTimeout: cfg.ShardTimeout, ProbeInterval: cfg.ProbeInterval,
		RepairInterval: cfg.RepairInterval, Context: r.bgCtx, Go: r.background,
	})
	r.api = httpapi.New(httpapi.Config{
		Cluster: r.cluster, Docs: r.docs, LLM: r.llm, Maint: r.maint, Codec: r.codec, Security: cfg.Security,
		Feed: feed.New(feed.Config{Topology: r.cluster.Topology}), FeedHeartbeat: cfg.FeedHeartbeat,
		MaxBodyBytes: cfg.MaxBodyBytes, MetricsHandler: cfg.MetricsHandler, Metrics: r.m, Registry: cfg.Registry, Log: r.log,
	})

	r.cluster.Start()
	r.subs.Start()
	r.maint.Start()
	r.llm.Start()
	r.docs.Start()
	return r, nil
}

// Handler is the router's HTTP handler.
func (r *Router) Handler() http.Handler { return r.api.Handler() }

// CacheCoherent reports whether the router follows every shard's change
// stream and is caught up with it: its hot cache then serves every key.
func (r *Router) CacheCoherent() bool { return r.subs.CaughtUp() }

// ServerMaxHeaderBytes is the http.Server's MaxHeaderBytes for the
// router's handler: above the API's own limit (httpapi.MaxHeaderBytes),
// which the handler answers with a 431 in the API's error shape.
const ServerMaxHeaderBytes = httpapi.ServerMaxHeaderBytes

// SetAuth swaps the API keys (a reloaded auth file). A nil Auth is
// ignored: a router started with keys never opens up, and one started
// open stays open.
func (r *Router) SetAuth(a *authfile.Auth) { r.api.SetAuth(a) }

// CloseStreams ends every open change feed, so a graceful shutdown does
// not wait on clients that never hang up; call it when shutdown begins.
func (r *Router) CloseStreams() { r.api.CloseStreams() }

// Close stops the background work and releases the cache. It does not
// close the shards: their owner does.
func (r *Router) Close() {
	r.api.CloseStreams()
	r.bgCancel()
	r.bgWG.Wait()
	r.cache.Close()
}

// background runs fn (a loop or a one-off task) owned by the router: its
// context ends on Close, which waits for it.
func (r *Router) background(fn func(context.Context)) {
	r.bgWG.Add(1)
	go func() {
		defer r.bgWG.Done()
		fn(r.bgCtx)
	}()
}

func (r *Router) String() string {
	return fmt.Sprintf("router(%s, %d shards)", r.cfg.Mode, len(r.topo.Load().Cur.Ring.Nodes()))
}

// topoOf reads a cluster's view the way the router's handlers always have
// (r.topo.Load()).
type topoOf struct{ cl *cluster.Cluster }

func (t topoOf) Load() *placement.Topology { return t.cl.Topology() }

// Reload re-reads the configuration (Config.Reload) and, if the shards or
// replicas it asks for differ from the cluster's, starts moving data to
// them in the background. It also reloads the compression dictionaries.
func (r *Router) Reload() error { return r.cluster.Reload() }
