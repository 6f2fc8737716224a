package placement

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/go-kvdb/go-kvdb/storage"
)

// Shard is what the router needs of a storage node. storage.Store (embedded
// single-node mode) and storage.Client (a storaged over HTTP) both satisfy
// it, and so do the decorators the router wraps them in (sealing,
// instrumentation).
type Shard interface {
	Get(ctx context.Context, bucket string, key []byte) (storage.Record, error)
	Apply(ctx context.Context, bucket string, writes []storage.Write) ([]storage.Result, error)
	// Txn applies writes to several buckets all or none (storage.Store.Txn).
	Txn(ctx context.Context, writes []storage.TxnWrite) ([]storage.Result, error)
	Scan(ctx context.Context, bucket string, opts storage.ScanOptions) (storage.ScanPage, error)
	DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error)
	MultiGet(ctx context.Context, bucket string, keys [][]byte) ([]storage.Record, error)
	Purge(ctx context.Context, bucket string, recs []storage.Record) (int, error)
	Health(ctx context.Context) (storage.Health, error)
}

// Node is a shard as the cluster configuration names it. Topologies share
// *Node values, so a node's health outlives any one topology.
type Node struct {
	Name    string
	Address string // a URL, or the file in single-node mode
	Shard   Shard
	// Health is set by the node registry (package cluster); nil for a
	// Node that is only a configuration entry.
	Health *Health
}

// NewNode is a node with a fresh health record (up, not stale).
func NewNode(name, address string, sh Shard) *Node {
	n := &Node{Name: name, Address: address, Shard: sh, Health: &Health{}}
	n.Health.nodeID.Store("")
	n.Health.lastErr.Store("")
	return n
}

// Up reports whether the prober last found the node answering.
func (n *Node) Up() bool { return n.Health.Up() }

// Health is a node's health as the prober sees it. A node starts up;
// a few missed probes mark it down, one answer marks it up again. Health
// changes only whom the router asks, never where keys live.
type Health struct {
	down    atomic.Bool
	misses  atomic.Int32
	epoch   atomic.Uint64 // of the cluster map the node reported holding
	nodeID  atomic.Value  // string
	lastErr atomic.Value  // string
	// stale is set when a node comes back from down: until a repair pass
	// has run with it up, it may lack writes, so it does not act as the
	// primary that decides conditional writes.
	stale atomic.Bool
}

// Up reports whether the node is taken as answering.
func (h *Health) Up() bool { return !h.down.Load() }

// Stale reports whether the node came back from down and has not been
// repaired since: it then does not decide conditional writes.
func (h *Health) Stale() bool { return h.stale.Load() }

// Repaired clears Stale: a repair pass ran with the node up.
func (h *Health) Repaired() { h.stale.Store(false) }

// NodeID is the shard's stable identity as it last reported it ("" until
// known).
func (h *Health) NodeID() string { s, _ := h.nodeID.Load().(string); return s }

// LastErr is the last probe's error ("" after an answer).
func (h *Health) LastErr() string { s, _ := h.lastErr.Load().(string); return s }

// Epoch is the epoch of the cluster map the node reported holding.
func (h *Health) Epoch() uint64 { return h.epoch.Load() }

// Probed records one probe's outcome: an answer (err nil) marks the node
// up at once; maxMisses failures in a row mark it down. It reports whether
// the node just went down, or just came back (it is then stale until
// repaired).
func (h *Health) Probed(ans storage.Health, err error, maxMisses int) (wentDown, cameUp bool) {
	if err != nil {
		h.lastErr.Store(err.Error())
		return h.misses.Add(1) >= int32(maxMisses) && !h.down.Swap(true), false
	}
	h.misses.Store(0)
	h.lastErr.Store("")
	h.epoch.Store(ans.Epoch)
	h.nodeID.Store(ans.NodeID)
	if h.down.Swap(false) {
		h.stale.Store(true)
		return false, true
	}
	return false, false
}

// A decorator wraps a shard to add one concern (sealing, instrumentation)
// and says what it wraps, so a caller can find a capability of the shard
// below (snapshots, vector search, a live address) without knowing the
// decorators.
type decorator interface{ Unwrap() Shard }

// As finds the first shard in sh's decorator chain, sh itself first, that
// is a T, as errors.As finds an error.
func As[T any](sh Shard) (T, bool) {
	for sh != nil {
		if t, ok := sh.(T); ok {
			return t, true
		}
		d, ok := sh.(decorator)
		if !ok {
			break
		}
		sh = d.Unwrap()
	}
	var zero T
	return zero, false
}

// Base is the shard at the bottom of sh's decorator chain: what it holds,
// as it holds it.
func Base(sh Shard) Shard {
	for {
		d, ok := sh.(decorator)
		if !ok {
			return sh
		}
		sh = d.Unwrap()
	}
}

// Searcher is what semantic search needs of a shard beside Shard:
// storage.Store and storage.Client have it.
type Searcher interface {
	TopK(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error)
}

var ErrNoTopK = errors.New("this shard cannot search vectors")

// KeywordSearcher is what keyword search needs of a shard beside Shard:
// its statistics for a query's terms, then its best BM25 matches under the
// statistics of the whole cluster (storage.Store and storage.Client).
type KeywordSearcher interface {
	KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (storage.KeywordStats, error)
	Keyword(ctx context.Context, bucket string, q storage.KeywordQuery) (storage.TopKResult, error)
}

// OpenReader reads records with their values opened (codec's sealing
// decorator): MultiGet itself hands them out as the shard holds them.
type OpenReader interface {
	MultiGetOpen(ctx context.Context, bucket string, keys [][]byte) ([]storage.Record, error)
}

// ErrNoKeyword is the error of a shard that cannot search words.
var ErrNoKeyword = errors.New("this shard cannot search words")

// Reindexer is a shard that rebuilds its vector indexes on request
// (storage.Store and storage.Client).
type Reindexer interface {
	Reindex(ctx context.Context) error
}
