package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KeywordIndexStats are a shard's keyword indexes (one per text bucket),
// summed.
type KeywordIndexStats struct {
	Docs  int64 // documents indexed, every topic
	Keys  int64 // postings and per-topic counters
	Bytes int64 // the index's pages in the BoltDB file
}

// RegisterKeywordIndex exposes a shard's keyword index: docs is read at
// every scrape (it costs one read per topic), size, which walks the
// index's pages, at most once per maxAge.
func RegisterKeywordIndex(reg prometheus.Registerer, docs func() (int64, error), size func() (KeywordIndexStats, error), maxAge time.Duration) {
	reg.MustRegister(&keywordCollector{docs: docs, size: size, maxAge: maxAge})
}

var keywordDescs = struct{ docs, keys, bytes *prometheus.Desc }{
	docs:  prometheus.NewDesc(namespace+"_keyword_docs", "Documents in the shard's keyword index (contexts with words).", nil, nil),
	keys:  prometheus.NewDesc(namespace+"_keyword_postings", "Postings and per-topic counters in the keyword index; recounted at most once per refresh period.", nil, nil),
	bytes: prometheus.NewDesc(namespace+"_keyword_size_bytes", "Bytes of the keyword index's pages in the BoltDB file; recounted at most once per refresh period.", nil, nil),
}

type keywordCollector struct {
	docs   func() (int64, error)
	size   func() (KeywordIndexStats, error)
	maxAge time.Duration

	mu   sync.Mutex // guards last and at; held during a recount, so scrapes share it
	last KeywordIndexStats
	at   time.Time
}

func (c *keywordCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keywordDescs.docs
	ch <- keywordDescs.keys
	ch <- keywordDescs.bytes
}

func (c *keywordCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.at.IsZero() || time.Since(c.at) >= c.maxAge {
		if st, err := c.size(); err == nil {
			c.last, c.at = st, time.Now()
		}
	}
	st := c.last
	c.mu.Unlock()
	if d, err := c.docs(); err == nil {
		st.Docs = d
	}
	ch <- prometheus.MustNewConstMetric(keywordDescs.docs, prometheus.GaugeValue, float64(st.Docs))
	ch <- prometheus.MustNewConstMetric(keywordDescs.keys, prometheus.GaugeValue, float64(st.Keys))
	ch <- prometheus.MustNewConstMetric(keywordDescs.bytes, prometheus.GaugeValue, float64(st.Bytes))
}

// KeywordSearch is the latency of a shard's keyword searches (phase two:
// scoring its postings).
type KeywordSearch struct {
	Duration prometheus.Histogram
}

// NewKeywordSearch registers the keyword search histogram on reg.
func NewKeywordSearch(reg prometheus.Registerer) *KeywordSearch {
	m := &KeywordSearch{Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "keyword", Name: "search_duration_seconds",
		Help:    "Duration of one shard's keyword search (scoring its postings with the cluster's statistics).",
		Buckets: latencyBuckets,
	})}
	reg.MustRegister(m.Duration)
	return m
}

// Observe records one search; it fits storage.Options.KeywordObserver.
func (m *KeywordSearch) Observe(d time.Duration) { m.Duration.Observe(d.Seconds()) }
