package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BoltStats are BoltDB's own counters, read at scrape time.
type BoltStats struct {
	ReadTx        int           // read transactions started
	OpenReadTx    int           // read transactions open now
	DiskWrites    int64         // writes of pages and meta pages to the file
	DiskWriteTime time.Duration // time spent in them, fsync included
	FreePages     int           // pages on the freelist: room reused before the file grows
}

// RegisterBolt exposes BoltDB's counters. Commit latency, fsync included,
// is the histogram Storage.CommitDuration; these add how the time splits:
// kvdb_bolt_disk_write_seconds_total over kvdb_bolt_commit_duration_seconds_sum
// is the share of commit time spent writing and syncing the file.
func RegisterBolt(reg prometheus.Registerer, stats func() BoltStats) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "read_transactions_total",
			Help: "BoltDB read transactions started.",
		}, func() float64 { return float64(stats().ReadTx) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "open_read_transactions",
			Help: "BoltDB read transactions open now (scans, snapshots).",
		}, func() float64 { return float64(stats().OpenReadTx) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "disk_writes_total",
			Help: "Writes of dirty pages and meta pages to the BoltDB file by committing transactions.",
		}, func() float64 { return float64(stats().DiskWrites) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "disk_write_seconds_total",
			Help: "Time committing transactions spent writing pages and meta pages to the BoltDB file, fsync included.",
		}, func() float64 { return stats().DiskWriteTime.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "bolt", Name: "free_pages",
			Help: "Pages on the BoltDB freelist: space reused before the file grows.",
		}, func() float64 { return float64(stats().FreePages) }),
	)
}

// RegisterKeys exposes the records held per bucket, tombstones included,
// as kvdb_bolt_keys{bucket}. Counting walks every page of every bucket
// (BoltDB keeps no count), so a scrape recounts only when the last count
// is older than maxAge: the cost is one walk per maxAge whatever the scrape
// rate, and the figure may lag by as much. The buckets are the storage
// engine's fixed set, so the label is bounded.
func RegisterKeys(reg prometheus.Registerer, count func() (map[string]int64, error), maxAge time.Duration) {
	reg.MustRegister(&keysCollector{count: count, maxAge: maxAge, desc: prometheus.NewDesc(
		prometheus.BuildFQName(namespace, "bolt", "keys"),
		"Records per BoltDB bucket, tombstones included; recounted at most once per refresh period.",
		[]string{"bucket"}, nil)})
}

type keysCollector struct {
	count  func() (map[string]int64, error)
	maxAge time.Duration
	desc   *prometheus.Desc

	mu   sync.Mutex // guards last and at; held during a recount, so scrapes share it
	last map[string]int64
	at   time.Time
}

func (c *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keysCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.last == nil || time.Since(c.at) >= c.maxAge {
		if keys, err := c.count(); err == nil {
			c.last, c.at = keys, time.Now()
		}
	}
	keys := c.last
	c.mu.Unlock()
	for bucket, n := range keys {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), bucket)
	}
}

// RegisterNodeInfo exposes kvdb_node_info{node_id} = 1: the storage node's
// stable id, which the router names its shard by. Dashboards join it on
// instance to label storaged's metrics with the shard they describe.
func RegisterNodeInfo(reg prometheus.Registerer, nodeID string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "node_info",
		Help:        "Always 1; node_id is the storage node's stable id (its shard name in the router's cluster).",
		ConstLabels: prometheus.Labels{"node_id": nodeID},
	})
	g.Set(1)
	reg.MustRegister(g)
}
