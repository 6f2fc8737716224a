package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// VectorIndexStats are a shard's ANN indexes at scrape time, summed over
// its indexes (one per topic, model and dimension).
type VectorIndexStats struct {
	Ready       bool  // the start-up (or reindex) pass has ended: searches use the indexes
	PassVisited int64 // records the pass has visited …
	PassTotal   int64 // … of the records in the bucket it works on
	Indexes     int
	Vectors     int   // live vectors indexed
	Deleted     int   // deleted slots still in the graphs, until a rebuild
	Building    int   // indexes rebuilding their graph now
	Bytes       int64 // memory the indexes hold (estimated from their parts)
}

// RegisterVectorIndex exposes a shard's vector index state, read once per
// scrape.
func RegisterVectorIndex(reg prometheus.Registerer, stats func() VectorIndexStats) {
	reg.MustRegister(&vindexCollector{stats: stats})
}

var (
	vindexDescs = struct{ ready, visited, total, indexes, vectors, deleted, building, bytes *prometheus.Desc }{
		ready:    prometheus.NewDesc(namespace+"_vindex_ready", "1 once the shard's vector indexes are reconciled with its records and answer searches; 0 while searches scan.", nil, nil),
		visited:  prometheus.NewDesc(namespace+"_vindex_pass_visited_records", "Records the start-up or reindex pass has visited (its progress).", nil, nil),
		total:    prometheus.NewDesc(namespace+"_vindex_pass_total_records", "Records in the bucket the start-up or reindex pass works on.", nil, nil),
		indexes:  prometheus.NewDesc(namespace+"_vindex_indexes", "Vector indexes held: one per topic, embedding model and dimension.", nil, nil),
		vectors:  prometheus.NewDesc(namespace+"_vindex_vectors", "Live vectors indexed.", nil, nil),
		deleted:  prometheus.NewDesc(namespace+"_vindex_deleted_slots", "Deleted vectors still in the graphs as waypoints, until a rebuild.", nil, nil),
		building: prometheus.NewDesc(namespace+"_vindex_rebuilding", "Indexes rebuilding their graph now.", nil, nil),
		bytes:    prometheus.NewDesc(namespace+"_vindex_size_bytes", "Memory the vector indexes hold, estimated from their parts.", nil, nil),
	}
)

type vindexCollector struct{ stats func() VectorIndexStats }

func (c *vindexCollector) Describe(ch chan<- *prometheus.Desc) {
	d := vindexDescs
	for _, x := range []*prometheus.Desc{d.ready, d.visited, d.total, d.indexes, d.vectors, d.deleted, d.building, d.bytes} {
		ch <- x
	}
}

func (c *vindexCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	d := vindexDescs
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	for _, m := range []struct {
		d *prometheus.Desc
		v float64
	}{
		{d.ready, ready}, {d.visited, float64(st.PassVisited)}, {d.total, float64(st.PassTotal)},
		{d.indexes, float64(st.Indexes)}, {d.vectors, float64(st.Vectors)}, {d.deleted, float64(st.Deleted)},
		{d.building, float64(st.Building)}, {d.bytes, float64(st.Bytes)},
	} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, m.v)
	}
}

// VectorSearch is the latency of a shard's vector searches by how they
// were answered: path "ann" (walked an index) or "exact" (scanned).
type VectorSearch struct {
	Duration *prometheus.HistogramVec
}

// NewVectorSearch registers the vector search histogram on reg.
func NewVectorSearch(reg prometheus.Registerer) *VectorSearch {
	m := &VectorSearch{Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "vindex", Name: "search_duration_seconds",
		Help:    "Duration of one shard's vector search (TopK), by path: ann (an index) or exact (a scan).",
		Buckets: latencyBuckets,
	}, []string{"path"})}
	reg.MustRegister(m.Duration)
	return m
}

// Observe records one search; it fits storage.Options.SearchObserver.
func (m *VectorSearch) Observe(d time.Duration, exact bool) {
	path := "ann"
	if exact {
		path = "exact"
	}
	m.Duration.WithLabelValues(path).Observe(d.Seconds())
}
