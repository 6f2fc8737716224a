package coord

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Config wires a Coordinator. Every field is required.
type Config struct {
	// Topology is the current view of the cluster; each operation plans
	// on one view from start to end.
	Topology func() *placement.Topology
	// Refresh adopts the newest cluster map the shards hold: a shard that
	// refused a call under an older map (storage.ErrStaleEpoch) holds one.
	Refresh func(ctx context.Context)
	// Clock hands out the versions of writes and learns those read.
	Clock *hlc.Clock
	// ShardTimeout bounds each call to a shard.
	ShardTimeout time.Duration
	// Metrics receives quorum failures and read repairs.
	Metrics *metrics.Router
	// Go runs fn in the background under the owner's lifetime (its
	// context ends on Close, which waits for fn): read repairs and the
	// replica sends that outlive a write's quorum.
	Go  func(fn func(ctx context.Context))
	Log *slog.Logger
}

// Coordinator reads and writes records on their replicas: quorum reads
// with read repair, writes acknowledged by a quorum of every owner group
// (conditional ones decided at the key's primary), fan-out and merge of
// pages and top-k results, and writes to every shard. It holds no state
// of its own beyond its Config.
type Coordinator struct {
	cfg Config
}

// New returns a coordinator over cfg.
func New(cfg Config) *Coordinator { return &Coordinator{cfg: cfg} }

// ShardCtx bounds one call to a shard.
func (c *Coordinator) ShardCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.ShardTimeout)
}

// EpochCtx tags a call with the epoch of the topology it was planned on,
// so a shard holding a newer cluster map refuses it.
func EpochCtx(ctx context.Context, t *placement.Topology) context.Context {
	return storage.WithEpoch(ctx, t.Epoch)
}

// maxAttempts bounds how often an operation is planned again after a
// shard reports a newer version than the router's clock gave it (another
// router's clock ran ahead), the primary turned out stale, or the cluster
// map moved on.
const maxAttempts = 5

// ErrRetry, returned by a Settle attempt, asks for another round on the
// same cluster map.
var ErrRetry = errors.New("retry on the same map")

// Settle runs attempt on the current topology until it returns anything
// but storage.ErrStaleEpoch or ErrRetry, at most maxAttempts times. After
// ErrStaleEpoch it adopts the newer cluster map first (Config.Refresh).
// what names the operation in the 503 that says it did not settle (called
// only then: it stays off the hot path); attempts must be idempotent.
func (c *Coordinator) Settle(ctx context.Context, what func() string, attempt func(t *placement.Topology) error) error {
	for range maxAttempts {
		err := attempt(c.cfg.Topology())
		switch {
		case errors.Is(err, storage.ErrStaleEpoch):
			c.cfg.Refresh(ctx)
		case errors.Is(err, ErrRetry):
		default:
			return err
		}
	}
	return apierr.Errorf(apierr.CodeUnavailable, "%s did not settle after %d attempts; retry", what(), maxAttempts)
}
