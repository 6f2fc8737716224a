package daemon

import (
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// VectorIndexStats sums a store's vector indexes for metrics.RegisterVectorIndex.
func VectorIndexStats(s *storage.Store) func() metrics.VectorIndexStats {
	return func() metrics.VectorIndexStats {
		st := s.VectorIndexStats()
		out := metrics.VectorIndexStats{Ready: st.Ready, PassVisited: st.Visited, PassTotal: st.Total}
		for _, ixs := range st.Indexes {
			for _, ix := range ixs {
				out.Indexes++
				out.Vectors += ix.Vectors
				out.Deleted += ix.Deleted
				out.Bytes += ix.Bytes
				if ix.Building {
					out.Building++
				}
			}
		}
		return out
	}
}

// RegisterKeywordIndex exposes a store's keyword indexes, summed over its
// text buckets (metrics.RegisterKeywordIndex); their size is recounted at
// most every 30 s.
func RegisterKeywordIndex(reg prometheus.Registerer, s *storage.Store) {
	metrics.RegisterKeywordIndex(reg, s.KeywordDocs, func() (metrics.KeywordIndexStats, error) {
		var sum metrics.KeywordIndexStats
		all, err := s.KeywordIndexStats()
		for _, st := range all {
			sum.Docs, sum.Keys, sum.Bytes = sum.Docs+st.Docs, sum.Keys+st.Keys, sum.Bytes+st.Bytes
		}
		return sum, err
	}, 30*time.Second)
}
