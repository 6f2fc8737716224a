package daemon

import (
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/storage"
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
