package cluster

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Config wires a Cluster. Zero durations are not defaulted here: the
// router passes its own defaults.
type Config struct {
	// Nodes and Replicas are the shape the configuration asks for.
	Nodes    []placement.Node
	Replicas int
	// NewShard reaches a shard known only from the cluster map stored on
	// the nodes (a shard being removed, say). Nil: such shards are skipped.
	NewShard func(name, address string) placement.Shard
	// Reload returns the shards and replicas wanted now (the config file
	// re-read). Nil: reload is refused.
	Reload func() ([]placement.Node, int, error)
	// Discovery keeps every shard of the cluster map in the wanted shape
	// until an operator removes it (see Remove).
	Discovery bool
	// Mode is reported by Info: "single" or "sharded".
	Mode           string
	ShardTimeout   time.Duration
	ProbeInterval  time.Duration
	ProbeMisses    int
	RepairInterval time.Duration
	// SyncRate caps the keys per second repair, rebalance and rewrite
	// passes copy (0: no cap).
	SyncRate int
	// Wrap is the value layer every shard is reached through (sealing);
	// nil reaches shards as they are. The registry adds instrumentation
	// on top.
	Wrap     func(placement.Shard) placement.Shard
	Metrics  *metrics.Router
	Registry prometheus.Registerer
	Log      *slog.Logger
	// Go runs fn in the background under the owner's lifetime: its context
	// ends on the owner's Close, which waits for fn.
	Go func(fn func(ctx context.Context))
	// OnReload is told of every Reload: what every shard holds besides
	// records (compression dictionaries) may have changed. Nil: nothing.
	OnReload func()
	// SyncShared copies what every live shard must hold (compression
	// dictionaries) during repair and rebalance, and returns how many
	// records it copied. Nil: nothing.
	SyncShared func(ctx context.Context, live []*placement.Node) (int64, error)
}

// Cluster is the router's view of its shards and the passes that keep
// them in shape. Its methods are safe for concurrent use.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics.Router
	topo atomic.Pointer[placement.Topology]

	reg registry // every shard the router has known

	// desiredMu guards desired: the shape the configuration asks for;
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
}

// New registers cfg's nodes and returns the cluster at epoch 0 (the
// configured shape); Start loads the real map.
func New(cfg Config) (*Cluster, error) {
	cl := &Cluster{cfg: cfg, log: cfg.Log, m: cfg.Metrics, repairs: make(chan struct{}, 1)}
	cl.reg = registry{newShard: cfg.NewShard, wrap: cfg.Wrap, m: cfg.Metrics, nodes: map[string]*placement.Node{},
		batchCalls: map[string]prometheus.Observer{
			"get":   cfg.Metrics.ShardBatchCalls.WithLabelValues("get"),
			"apply": cfg.Metrics.ShardBatchCalls.WithLabelValues("apply"),
		}}
	if cfg.SyncRate > 0 {
		cl.syncLimit = rate.NewLimiter(rate.Limit(cfg.SyncRate), max(cfg.SyncRate, PageSize))
	}
	desired, err := cl.reg.shapeOf(cfg.Nodes, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	cl.desired, cl.wantReplicas = desired, cfg.Replicas
	cl.topo.Store(placement.NewTopology(0, placement.StateStable, desired, placement.Shape{}, nil))
	cl.registerStatusMetrics(cfg.Registry)
	return cl, nil
}

// Start begins the background work: health probes, loading (or creating)
// the cluster map on the shards, resuming an interrupted rebalance, and
// periodic repair.
func (cl *Cluster) Start() {
	cl.cfg.Go(cl.probeLoop)
	cl.cfg.Go(cl.bootstrap)
	cl.cfg.Go(cl.repairLoop)
}

// Topology is the current view; it is swapped whole on a change.
func (cl *Cluster) Topology() *placement.Topology { return cl.topo.Load() }

// Node is the registry's node called name, or nil.
func (cl *Cluster) Node(name string) *placement.Node {
	return cl.reg.node(name)
}

// Throttle waits until n more keys may be copied under SyncRate.
func (cl *Cluster) Throttle(ctx context.Context, n int) error {
	if cl.syncLimit == nil {
		return nil
	}
	return cl.syncLimit.WaitN(ctx, min(n, cl.syncLimit.Burst()))
}

func (cl *Cluster) shardCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cl.cfg.ShardTimeout)
}

func (cl *Cluster) syncShared(ctx context.Context, live []*placement.Node) (int64, error) {
	if cl.cfg.SyncShared == nil {
		return 0, nil
	}
	return cl.cfg.SyncShared(ctx, live)
}
