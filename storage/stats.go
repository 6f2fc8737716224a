package storage

import "time"

// Stats are BoltDB's own counters for the shard's file.
type Stats struct {
	ReadTx        int           // read transactions started
	OpenReadTx    int           // read transactions open now
	DiskWrites    int64         // writes of pages and meta pages by commits
	DiskWriteTime time.Duration // time spent in them, fsync included
	FreePages     int           // pages on the freelist
}

// Stats reads BoltDB's counters; it is cheap (no transaction).
func (s *Store) Stats() Stats {
	st := s.db.Stats()
	return Stats{
		ReadTx:        st.TxN,
		OpenReadTx:    st.OpenTxN,
		DiskWrites:    st.TxStats.GetWrite(),
		DiskWriteTime: st.TxStats.GetWriteTime(),
		FreePages:     st.FreePageN,
	}
}
