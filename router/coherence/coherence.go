package coherence

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is what a follower needs of a shard: storage.Store and
// storage.Client have it.
type Source interface {
	ChangesHead(ctx context.Context) (storage.ChangeLog, error)
	Changes(ctx context.Context, req storage.ChangesRequest, fn func(storage.ChangeBatch) error) error
}

// Defaults of Config.
const (
	DefaultHeartbeat = 100 * time.Millisecond
	DefaultMaxLag    = 100
	minBackoff       = 50 * time.Millisecond
	maxBackoff       = 2 * time.Second
)

// Config wires Followers. Topology, OnChange, OnReset and Go are required.
type Config struct {
	// Topology is the cluster's current view: every node of its All is
	// followed.
	Topology func() *placement.Topology
	// OnChange applies one change (invalidates what it touches). It runs
	// on the follower's goroutine, one change at a time per shard.
	OnChange func(ch *storage.Change)
	// OnReset empties what a shard's changes could have touched: its
	// follower could not resume and may have missed changes.
	OnReset func()
	// Heartbeat is asked of each shard's stream; StaleAfter is how long a
	// silent stream stays caught up (0: 2.5 heartbeats). MaxLag is how
	// many changes behind the head a follower stays caught up.
	Heartbeat  time.Duration
	StaleAfter time.Duration
	MaxLag     uint64
	// Reconcile is how often the followed nodes are matched to the
	// topology (0: one second).
	Reconcile time.Duration
	Metrics   *metrics.Router // nil: no metrics
	Log       *slog.Logger
	// Go runs fn in the background under the owner's lifetime: its ctx
	// ends on the owner's Close, which waits for it.
	Go func(fn func(ctx context.Context))
}

// Followers follows every node's change stream.
type Followers struct {
	cfg Config
	// byNode is the followers by node, swapped whole (the read path looks
	// nodes up in it without a lock); mu serialises the swaps.
	byNode atomic.Pointer[map[*placement.Node]*follower]
	mu     sync.Mutex
}

// follower is one node's subscription.
type follower struct {
	node      *placement.Node
	src       Source // nil: the shard has no change stream, never caught up
	cancel    context.CancelFunc
	connected atomic.Bool
	heard     atomic.Int64  // Unix ns of the last batch
	lag       atomic.Uint64 // changes behind the head, as of the last batch
	lagG, upG prometheus.Gauge
}

// New builds followers; Start begins following.
func New(cfg Config) *Followers {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = cfg.Heartbeat * 5 / 2
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = DefaultMaxLag
	}
	if cfg.Reconcile <= 0 {
		cfg.Reconcile = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	fs := &Followers{cfg: cfg}
	empty := map[*placement.Node]*follower{}
	fs.byNode.Store(&empty)
	return fs
}

// Start follows the topology's nodes now and keeps matching them to it.
func (fs *Followers) Start() {
	fs.cfg.Go(func(ctx context.Context) {
		t := time.NewTicker(fs.cfg.Reconcile)
		defer t.Stop()
		for {
			fs.reconcile(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// reconcile starts a follower for each node of the topology not followed
// yet and stops those of nodes it no longer has.
func (fs *Followers) reconcile(ctx context.Context) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	old := *fs.byNode.Load()
	all := fs.cfg.Topology().All
	same := len(all) == len(old)
	for _, n := range all {
		if old[n] == nil {
			same = false
		}
	}
	if same {
		return
	}
	next := make(map[*placement.Node]*follower, len(all))
	for _, n := range all {
		if f := old[n]; f != nil {
			next[n] = f
			continue
		}
		f := &follower{node: n}
		f.src, _ = placement.As[Source](n.Shard)
		if m := fs.cfg.Metrics; m != nil {
			f.lagG, f.upG = m.SubscriptionLag.WithLabelValues(n.Name), m.SubscriptionCaughtUp.WithLabelValues(n.Name)
		}
		next[n] = f
		if f.src != nil {
			fctx, cancel := context.WithCancel(ctx)
			f.cancel = cancel
			fs.cfg.Go(func(context.Context) { fs.follow(fctx, f) })
		}
	}
	for n, f := range old {
		if next[n] == nil && f.cancel != nil {
			f.cancel()
		}
	}
	fs.byNode.Store(&next)
}

// follow keeps f's stream open until ctx ends: it resumes from the last
// change seen, and after a gap (or at first) from the shard's head, with
// OnReset once the new stream is established.
func (fs *Followers) follow(ctx context.Context, f *follower) {
	defer f.cancel()
	var (
		since   uint64
		logID   string
		fresh   = true // the next stream must be preceded by a reset
		backoff = minBackoff
	)
	for ctx.Err() == nil {
		var err error
		if logID == "" {
			var pos storage.ChangeLog
			if pos, err = f.src.ChangesHead(ctx); err == nil {
				since, logID, fresh = pos.Head, pos.ID, true
			}
		}
		if err == nil {
			err = f.src.Changes(ctx, storage.ChangesRequest{Since: since, LogID: logID, Heartbeat: fs.cfg.Heartbeat}, func(b storage.ChangeBatch) error {
				if fresh {
					fs.cfg.OnReset()
					if fs.cfg.Metrics != nil {
						fs.cfg.Metrics.CacheResets.Inc()
					}
					fresh = false
				}
				for i := range b.Changes {
					fs.cfg.OnChange(&b.Changes[i])
				}
				if n := len(b.Changes); n > 0 {
					since = b.Changes[n-1].Seq
				}
				logID = b.LogID
				f.lag.Store(b.Head - since)
				f.heard.Store(time.Now().UnixNano())
				f.connected.Store(true)
				backoff = minBackoff
				fs.observe(f)
				return nil
			})
		}
		f.connected.Store(false)
		fs.observe(f)
		if ctx.Err() != nil {
			return
		}
		if gap, ok := errors.AsType[*storage.ChangesGapError](err); ok {
			fs.cfg.Log.Warn("change stream gap: the hot cache is emptied", "shard", f.node.Name, "err", gap)
			since, logID, fresh = gap.Log.Head, gap.Log.ID, true
		} else {
			fs.cfg.Log.Debug("change stream broke; reconnecting", "shard", f.node.Name, "err", err, "backoff", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (fs *Followers) observe(f *follower) {
	if f.lagG == nil {
		return
	}
	f.lagG.Set(float64(f.lag.Load()))
	up := 0.0
	if fs.caughtUp(f, time.Now().UnixNano()) {
		up = 1
	}
	f.upG.Set(up)
}

func (fs *Followers) caughtUp(f *follower, now int64) bool {
	return f != nil && f.connected.Load() && f.lag.Load() <= fs.cfg.MaxLag &&
		now-f.heard.Load() < int64(fs.cfg.StaleAfter)
}

// Fresh reports whether a cached entry of the key placed at pk may be
// served (and a read of it cached): every owner of the key is caught up.
func (fs *Followers) Fresh(pk string) bool {
	if fs.CaughtUp() {
		return true
	}
	byNode := *fs.byNode.Load()
	now := time.Now().UnixNano()
	for _, n := range fs.cfg.Topology().Owners(pk).Union {
		if !fs.caughtUp(byNode[n], now) {
			return false
		}
	}
	return true
}

// CaughtUp reports whether every node of the topology is followed and
// caught up: the cache serves every key.
func (fs *Followers) CaughtUp() bool {
	byNode := *fs.byNode.Load()
	now := time.Now().UnixNano()
	for _, n := range fs.cfg.Topology().All {
		if !fs.caughtUp(byNode[n], now) {
			return false
		}
	}
	return true
}
