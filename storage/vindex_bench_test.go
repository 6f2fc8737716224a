package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// BenchmarkVectorIndexStore measures one store's index through its real
// write path (Apply batches of 200, fsync off) at 768 dimensions: inserts
// per second, the heap it costs per vector (measured, and as Stats.Bytes
// estimates it), and searches per second from the index and by the exact
// scan, side by side; then the time a restart takes to answer from the
// index again. -benchtime=1x; KVDB_BENCH_VECTORS sets the count.
func BenchmarkVectorIndexStore(b *testing.B) {
	const dim = 768
	n := 20000
	if v := envInt("KVDB_BENCH_VECTORS"); v > 0 {
		n = v
	}
	base := vindextest.Clustered(1, 2, n, dim, 100, 1)
	queries := vindextest.Clustered(1, 3, 200, dim, 100, 1)
	for range b.N {
		s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		for lo := 0; lo < n; lo += 200 {
			var ws []Write
			for i := lo; i < min(lo+200, n); i++ {
				ws = append(ws, Write{Record: Record{Key: fmt.Appendf(nil, "t\x00c%07d", i), Version: uint64(1 + i), Value: EncodeVector(Vector{Model: "m", Values: base.Row(i)})}})
			}
			if _, err := s.Apply(ctx, "vectors", ws); err != nil {
				b.Fatal(err)
			}
		}
		build := time.Since(start)
		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		est := s.VectorIndexStats().Indexes["vectors"][0].Bytes
		b.ReportMetric(float64(n)/build.Seconds(), "inserts/s")
		b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(n), "heap-B/vector")
		b.ReportMetric(float64(est)/float64(n), "est-B/vector")
		for _, exact := range []bool{false, true} {
			start := time.Now()
			for i := range queries.Len() {
				if _, err := s.TopK(ctx, "vectors", TopKQuery{Prefix: []byte("t\x00"), Query: queries.Row(i), K: 10, Model: "m", Exact: exact}); err != nil {
					b.Fatal(err)
				}
			}
			name := "ann-q/s"
			if exact {
				name = "exact-q/s"
			}
			b.ReportMetric(float64(queries.Len())/time.Since(start).Seconds(), name)
		}
		// A restart: Close saves the indexes, Open loads them and the
		// background pass reconciles them with the records; until it
		// ends searches scan.
		start = time.Now()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "close-s")
		start = time.Now()
		s, err = Open(s.Path(), Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		for !s.VectorIndexStats().Ready {
			if time.Since(start) > 10*time.Minute {
				b.Fatal("not ready after ten minutes")
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.ReportMetric(time.Since(start).Seconds(), "reopen-to-ann-s")
		if ix := s.VectorIndexStats().Indexes["vectors"]; len(ix) != 1 || ix[0].Vectors != n {
			b.Fatalf("indexes after reopen = %+v, want %d vectors", ix, n)
		}
		s.Close()
	}
}

func envInt(name string) int {
	v, _ := strconv.Atoi(os.Getenv(name))
	return v
}
