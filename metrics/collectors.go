package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Router holds the router's own metrics beside the HTTP ones.
type Router struct {
	HTTP *HTTP

	CacheHits      prometheus.Counter
	CacheMisses    prometheus.Counter
	CacheEvictions prometheus.Counter

	// ShardRequestDuration is the latency of router-to-shard calls by shard
	// and operation (get, apply, scan, delete_prefix, ping).
	ShardRequestDuration *prometheus.HistogramVec
	ShardBatchCalls      *prometheus.HistogramVec // calls per request to a shard (hop batching)
	// ShardRequestErrors counts failed shard calls by shard and operation.
	ShardRequestErrors *prometheus.CounterVec
	// ShardUp is 1 while a shard answers its health probe, else 0.
	ShardUp *prometheus.GaugeVec

	// QuorumFailures counts reads and writes that reached fewer replicas
	// than a quorum and answered 503.
	QuorumFailures *prometheus.CounterVec
	// ReadRepairs counts replicas found behind by a read and brought up to
	// date.
	ReadRepairs prometheus.Counter
	// ClusterEpoch is the epoch of the cluster map the router works with.
	ClusterEpoch prometheus.Gauge

	// CodecInputBytes and CodecOutputBytes count the context bodies the
	// value codec encoded, before and after compression: their ratio is
	// the compression ratio.
	CodecInputBytes  prometheus.Counter
	CodecOutputBytes prometheus.Counter
	// DictionaryID is the id of the zstd dictionary new bodies are
	// compressed with (0: none); DictionaryTrainings counts the
	// dictionaries this router trained and adopted.
	DictionaryID        prometheus.Gauge
	DictionaryTrainings prometheus.Counter

	// ExpiredPurged counts expired contexts the background purge replaced
	// with a tombstone.
	ExpiredPurged prometheus.Counter

	// Invalidations counts cached entries a shard's change stream
	// invalidated (writes made through any router); CacheResets counts
	// the times the cache was emptied because a stream had a gap or began
	// anew. SubscriptionLag is, per shard, how many changes the router's
	// follower is behind the shard's log head (as of the last batch), and
	// SubscriptionCaughtUp is 1 while its cached entries may be served.
	Invalidations        prometheus.Counter
	CacheResets          prometheus.Counter
	SubscriptionLag      *prometheus.GaugeVec
	SubscriptionCaughtUp *prometheus.GaugeVec
	// FeedSubscribers is the clients following a topic's change feed now;
	// FeedEvents counts the events sent to them, by kind.
	FeedSubscribers prometheus.Gauge
	FeedEvents      *prometheus.CounterVec

	// MessageAppends counts the appends to conversations that stored
	// (retries answered from the idempotency memory not included);
	// AppendDuration is their latency (read of the header to the
	// acknowledged write), ConversationMessages the length each append
	// left its conversation at.
	MessageAppends       prometheus.Counter
	AppendDuration       prometheus.Histogram
	ConversationMessages prometheus.Histogram
}

// NewRouter registers the router's metrics on reg.
func NewRouter(reg prometheus.Registerer) *Router {
	m := &Router{
		HTTP: NewHTTP(reg),
		CacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "hits_total",
			Help: "Reads answered from the router's hot cache.",
		}),
		CacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "misses_total",
			Help: "Reads that went to a shard because the hot cache did not hold the key.",
		}),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cache", Name: "evictions_total",
			Help: "Entries evicted from the hot cache to make room.",
		}),
		ShardRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "shard", Name: "request_duration_seconds",
			Help:    "Latency of calls from the router to a shard, by shard and operation.",
			Buckets: latencyBuckets,
		}, []string{"shard", "op"}),
		ShardRequestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "shard", Name: "request_errors_total",
			Help: "Calls from the router to a shard that failed, by shard and operation.",
		}, []string{"shard", "op"}),
		ShardUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "shard", Name: "up",
			Help: "1 when the shard answered its last health probe, else 0.",
		}, []string{"shard"}),
	}
	m.QuorumFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "replication", Name: "quorum_failures_total",
		Help: "Reads and writes that reached fewer replicas than a quorum (answered 503), by operation.",
	}, []string{"op"})
	m.ReadRepairs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "replication", Name: "read_repairs_total",
		Help: "Replicas found behind by a read and sent the newest version.",
	})
	m.ClusterEpoch = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "cluster", Name: "epoch",
		Help: "Epoch of the cluster map the router works with.",
	})
	m.CodecInputBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "codec", Name: "input_bytes_total",
		Help: "Bytes of context bodies given to the value codec on writes (JSON, embeddings excluded).",
	})
	m.CodecOutputBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "codec", Name: "output_bytes_total",
		Help: "Bytes the value codec stored for those bodies (zstd where it saves space, else as given).",
	})
	m.DictionaryID = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "codec", Name: "dictionary_id",
		Help: "Id of the trained zstd dictionary new context bodies are compressed with (0: none, plain zstd).",
	})
	m.ShardBatchCalls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "shard", Name: "batch_calls",
		Help:    "Calls carried by one request to a shard: concurrent Gets leave together as one MultiGet, concurrent Applies as one Apply (1: a call on its own), by operation.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	}, []string{"op"})
	m.DictionaryTrainings = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "codec", Name: "dictionary_trainings_total",
		Help: "Compression dictionaries this router trained, stored on every shard and made current.",
	})
	m.ExpiredPurged = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "expired_contexts_purged_total",
		Help: "Expired contexts replaced by a tombstone by the background purge.",
	})
	m.Invalidations = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "cache", Name: "invalidations_total",
		Help: "Changes from the shards' change streams applied to the hot cache (a write through any router).",
	})
	m.CacheResets = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "cache", Name: "resets_total",
		Help: "Times the hot cache was emptied because a shard's change stream had a gap or began anew.",
	})
	m.SubscriptionLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "subscription", Name: "lag_changes",
		Help: "Changes the router's follower of a shard's change stream is behind the shard's log head, by shard.",
	}, []string{"shard"})
	m.SubscriptionCaughtUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "subscription", Name: "caught_up",
		Help: "1 while the router follows a shard's change stream closely enough to serve cached entries it owns, else 0.",
	}, []string{"shard"})
	m.FeedSubscribers = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "feed", Name: "subscribers",
		Help: "Clients following a topic's change feed (GET /api/v1/topics/{topic}/changes) now.",
	})
	m.FeedEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "feed", Name: "events_total",
		Help: "Change feed events sent to clients, by kind (put, delete, reset).",
	}, []string{"kind"})
	for _, kind := range []string{"put", "delete", "reset"} {
		m.FeedEvents.WithLabelValues(kind) // shown at 0 before the first
	}
	m.MessageAppends = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "messages", Name: "appends_total",
		Help: "Appends to conversations that stored messages (idempotent replays not included).",
	})
	m.AppendDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "messages", Name: "append_duration_seconds",
		Help:    "Latency of an append to a conversation, from reading its header to the acknowledged write.",
		Buckets: latencyBuckets,
	})
	m.ConversationMessages = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "messages", Name: "per_conversation",
		Help:    "Messages in a conversation after each append to it.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10),
	})
	reg.MustRegister(m.MessageAppends, m.AppendDuration, m.ConversationMessages)
	reg.MustRegister(m.Invalidations, m.CacheResets, m.SubscriptionLag, m.SubscriptionCaughtUp, m.FeedSubscribers, m.FeedEvents)
	reg.MustRegister(m.CacheHits, m.CacheMisses, m.CacheEvictions, m.ExpiredPurged,
		m.ShardRequestDuration, m.ShardRequestErrors, m.ShardUp,
		m.QuorumFailures, m.ReadRepairs, m.ClusterEpoch,
		m.CodecInputBytes, m.CodecOutputBytes, m.DictionaryID, m.DictionaryTrainings,
		m.ShardBatchCalls)
	return m
}

// CacheStats is what the hot cache reports when scraped.
type CacheStats func() (entries, bytes int)

// RegisterCache exposes the hot cache's size, read at scrape time.
func RegisterCache(reg prometheus.Registerer, stats CacheStats) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "cache", Name: "entries",
			Help: "Entries held by the router's hot cache.",
		}, func() float64 { e, _ := stats(); return float64(e) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "cache", Name: "bytes",
			Help: "Bytes allocated by the router's hot cache.",
		}, func() float64 { _, b := stats(); return float64(b) }),
	)
}

// Storage holds storaged's metrics beside the HTTP ones.
type Storage struct {
	HTTP *HTTP

	// CommitDuration is the time of one BoltDB write transaction, fsync
	// included; CommitWrites is how many writes it carried (group commit).
	CommitDuration prometheus.Histogram
	CommitWrites   prometheus.Histogram
	// WrittenBytes counts what the commits wrote to the file (see
	// storage.Options.Written).
	WrittenBytes prometheus.Counter
}

// NewStorage registers storaged's metrics on reg.
func NewStorage(reg prometheus.Registerer) *Storage {
	m := &Storage{
		HTTP: NewHTTP(reg),
		CommitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "commit_duration_seconds",
			Help:    "Duration of BoltDB write transactions, fsync included.",
			Buckets: latencyBuckets,
		}),
		CommitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "commit_writes",
			Help:    "Writes carried by one BoltDB transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
	}
	m.WrittenBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "bolt", Name: "written_bytes_total",
		Help: "Bytes BoltDB commits wrote to the file: the pages each allocated and its meta page.",
	})
	reg.MustRegister(m.CommitDuration, m.CommitWrites, m.WrittenBytes)
	return m
}

// StoreStats is what a BoltDB file reports when scraped.
type StoreStats func() (sizeBytes int64)

// RegisterStore exposes the BoltDB file size, read at scrape time.
func RegisterStore(reg prometheus.Registerer, stats StoreStats) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "bolt", Name: "size_bytes",
		Help: "Size of the BoltDB file.",
	}, func() float64 { return float64(stats()) }))
}

// Security holds the API gate's metrics.
type Security struct {
	// AuthFailures counts requests refused by authentication (missing,
	// malformed, unknown) or authorization (role, topic), by reason.
	AuthFailures *prometheus.CounterVec
	// Rejected counts API requests refused before their handler:
	// rate_limited (429) or concurrency (503).
	Rejected *prometheus.CounterVec
}

// NewSecurity registers the API gate's metrics on reg.
func NewSecurity(reg prometheus.Registerer) *Security {
	m := &Security{
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "auth", Name: "failures_total",
			Help: "Requests refused by authentication (missing, malformed, unknown) or authorization (role, topic).",
		}, []string{"reason"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "rejected_total",
			Help: "API requests refused before their handler: rate_limited (429) or concurrency (503).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.AuthFailures, m.Rejected)
	return m
}

// Sync holds the repair and rebalance passes' metrics, by kind (repair,
// rebalance).
type Sync struct {
	Scanned, Copied, Bytes, Purged, Errors *prometheus.CounterVec
}

// NewSync registers the passes' metrics on reg; rebalancing reports
// whether a rebalance moves data now (read at scrape time).
func NewSync(reg prometheus.Registerer, rebalancing func() bool) *Sync {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "sync", Name: name, Help: help}, []string{"kind"})
	}
	m := &Sync{
		Scanned: vec("keys_scanned_total", "Keys examined by repair and rebalance passes."),
		Copied:  vec("keys_copied_total", "Keys copied to an owner that lacked their newest version."),
		Bytes:   vec("bytes_copied_total", "Bytes of keys and values copied between shards."),
		Purged:  vec("keys_purged_total", "Records removed from shards that no longer own them, and collected tombstones."),
		Errors:  vec("errors_total", "Repair and rebalance passes that failed."),
	}
	reg.MustRegister(m.Scanned, m.Copied, m.Bytes, m.Purged, m.Errors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "sync", Name: "rebalance_running",
		Help: "1 while a rebalance moves data, else 0.",
	}, func() float64 {
		if rebalancing() {
			return 1
		}
		return 0
	}))
	return m
}

// MCP holds the MCP server's metrics.
type MCP struct {
	// ToolCalls counts tool calls that reached their handler, by tool and
	// outcome: ok, or the API error code the call failed with
	// (invalid_argument, permission_denied, not_found, unavailable, …).
	ToolCalls *prometheus.CounterVec
}

// NewMCP registers the MCP server's metrics on reg.
func NewMCP(reg prometheus.Registerer) *MCP {
	m := &MCP{ToolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "mcp", Name: "tool_calls_total",
		Help: "MCP tool calls by tool and outcome (ok, or the API error code).",
	}, []string{"tool", "outcome"})}
	reg.MustRegister(m.ToolCalls)
	return m
}
