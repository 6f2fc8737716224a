package maintenance

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/hlc"
)

// Config wires a Service. Every field but Keyring is required.
type Config struct {
	Cluster *cluster.Cluster
	Coord   *coord.Coordinator
	Codec   *codec.Codec
	Docs    *docstore.Store
	Clock   *hlc.Clock
	// Keyring is encryption at rest's (nil: values are stored clear).
	Keyring *codec.Keyring
	Metrics *metrics.Router
	Log     *slog.Logger
	// Mode is what a backup reports: "single" or "sharded".
	Mode           string
	ShardTimeout   time.Duration
	ProbeInterval  time.Duration
	RepairInterval time.Duration
	// Context is the owner's lifetime: dictionary loads a read needs run
	// under it, not under the reader's request.
	Context context.Context
	// Go runs fn in the background under the owner's lifetime.
	Go func(fn func(ctx context.Context))
}

// Service runs the passes over whole shards: backup and restore, the
// training, loading and rewriting of compression dictionaries, and
// re-encryption. At most one pass of each kind runs at a time.
type Service struct {
	cfg Config

	training     sync.Mutex // held by the one training that may run
	rewriting    sync.Mutex // held by the one rewrite pass that may run
	reencrypting sync.Mutex // held by the one re-encrypt pass that may run
	adoptMu      sync.Mutex // serialises adoptions of a current pointer
	pointer      atomic.Pointer[codec.Pointer]
	refresh      chan struct{} // asks the compression loop to read the pointer again
	fullReload   atomic.Bool   // ... and every dictionary
}

// New returns a service over cfg; Start begins loading dictionaries.
func New(cfg Config) *Service {
	s := &Service{cfg: cfg, refresh: make(chan struct{}, 1)}
	cfg.Metrics.DictionaryID.Set(0)
	return s
}

// Start begins the compression loop: the dictionaries are loaded once
// the cluster map is known, and the current one followed.
func (s *Service) Start() { s.cfg.Go(s.compressionLoop) }

// runPass runs one pass under mu: at once with wait (ok false when one is
// running already), else in the background, logged by done when it ends.
func runPass[T any](s *Service, mu *sync.Mutex, ctx context.Context, wait bool, run func(context.Context) T, done func(T)) (res *T, ok bool) {
	if !mu.TryLock() {
		return nil, false
	}
	if wait {
		defer mu.Unlock()
		out := run(ctx)
		return &out, true
	}
	s.cfg.Go(func(ctx context.Context) {
		defer mu.Unlock()
		done(run(ctx))
	})
	return nil, true
}
