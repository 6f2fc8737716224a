package vindex

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/vindex/vindextest"
)

// The benchmarks run on 768-dim clustered unit vectors (100 clusters,
// spread 1, as vindextest.Clustered makes them) with M 16 and ef
// construction 200, like the hnswlib anchor. By default they use 5,000
// vectors so CI stays quick; for the report:
//
//	VINDEX_BENCH_N=100000 go test -run '^$' -bench 'Add|Search' -benchtime 2000x ./storage/vindex/
//	VINDEX_BENCH_N=100000 go test -run '^$' -bench 'SaveLoad' -benchtime 3x ./storage/vindex/
//
// or VINDEX_BENCH_DATA=/dir/prefix to read prefix-base.f32,
// prefix-query.f32 and prefix-gt.i32 (the files the anchor script reads),
// so both sides measure the same vectors, and VINDEX_BENCH_INDEX=file to
// keep the built index between runs (the first run saves it, the next
// loads it instead of building).

type benchData struct {
	base, queries *vindextest.Set
	exact         [][]int
	x             *Index
	heapPerVector float64
	buildPerSec   float64
}

var (
	benchOnce sync.Once
	bench     benchData
)

func loadBench(b *testing.B) *benchData {
	b.Helper()
	benchOnce.Do(func() {
		if p := os.Getenv("VINDEX_BENCH_DATA"); p != "" {
			var err error
			if bench.base, err = vindextest.ReadFile(p + "-base.f32"); err == nil {
				if bench.queries, err = vindextest.ReadFile(p + "-query.f32"); err == nil {
					bench.exact, err = vindextest.ReadAnswers(p+"-gt.i32", 10)
				}
			}
			if err != nil {
				b.Fatalf("bench data %s: %v", p, err)
			}
		} else {
			n := 5000
			if s := os.Getenv("VINDEX_BENCH_N"); s != "" {
				n, _ = strconv.Atoi(s)
			}
			bench.base = vindextest.Clustered(1, 2, n, 768, 100, 1)
			bench.queries = vindextest.Clustered(1, 3, 500, 768, 100, 1)
			bench.exact = vindextest.Exact(bench.base, bench.queries, 10, nil)
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		// VINDEX_BENCH_INDEX names a file to load the index from, or to
		// save it to once built: a second run skips the build.
		file := os.Getenv("VINDEX_BENCH_INDEX")
		if x, _, err := ReadFile(file); file != "" && err == nil {
			x.SetReady(true)
			bench.x = x
		} else {
			bench.x = buildIndex(b, bench.base)
			bench.buildPerSec = float64(bench.base.Len()) / time.Since(start).Seconds()
			if file != "" {
				if err := bench.x.WriteFile(file, Meta{}); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		bench.heapPerVector = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(bench.base.Len())
	})
	if bench.x == nil {
		b.Fatal("bench data failed to load")
	}
	return &bench
}

func buildIndex(b testing.TB, s *vindextest.Set) *Index {
	x, err := New(Config{Dim: s.Dim, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	for i := range s.Len() {
		if _, err := x.Add(keyOf(i), 1, s.Row(i)); err != nil {
			b.Fatal(err)
		}
	}
	return x
}

// BenchmarkAdd builds an index of the bench data's vectors one Add at a
// time (a fresh index every len(base) inserts), and reports what the
// shared index's whole build measured: inserts/s at full size, and its
// memory per vector (heap growth, and the Stats estimate).
func BenchmarkAdd(b *testing.B) {
	d := loadBench(b)
	var x *Index
	for i := 0; b.Loop(); i++ {
		n := i % d.base.Len()
		if n == 0 {
			if x != nil {
				x.Close()
			}
			x, _ = New(Config{Dim: d.base.Dim, Seed: uint64(i)})
		}
		if _, err := x.Add(keyOf(n), 1, d.base.Row(n)); err != nil {
			b.Fatal(err)
		}
	}
	x.Close()
	b.ReportMetric(d.buildPerSec, "full-build-inserts/s")
	b.ReportMetric(d.heapPerVector, "heap-B/vector")
	b.ReportMetric(float64(d.x.Stats().Bytes)/float64(d.x.Len()), "est-B/vector")
}

// BenchmarkBuildParallel builds an index of all the bench data's vectors
// with one writer per core, and reports inserts/s and the recall at ef 64
// of the graph it made (parallel inserts plan against a graph that others
// are changing, which must not cost recall).
func BenchmarkBuildParallel(b *testing.B) {
	d := loadBench(b)
	workers := runtime.GOMAXPROCS(0)
	var recall float64
	for b.Loop() {
		x, _ := New(Config{Dim: d.base.Dim, Seed: 1})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < d.base.Len(); i += workers {
					x.Add(keyOf(i), 1, d.base.Row(i))
				}
			}()
		}
		wg.Wait()
		got := make([][]int, d.queries.Len())
		for q := range got {
			res, _ := x.Search(Query{Vector: d.queries.Row(q), K: 10, Ef: 64})
			got[q] = hitIDs(res.Hits)
		}
		recall = vindextest.Recall(got, d.exact)
		x.Close()
	}
	b.ReportMetric(float64(b.N*d.base.Len())/b.Elapsed().Seconds(), "inserts/s")
	b.ReportMetric(recall, "recall@10-ef64")
}

func BenchmarkSearch(b *testing.B) {
	d := loadBench(b)
	for _, ef := range []int{32, 64, 128} {
		b.Run("ef="+strconv.Itoa(ef), func(b *testing.B) {
			got := make([][]int, d.queries.Len())
			for i := 0; b.Loop(); i++ {
				q := i % d.queries.Len()
				res, err := d.x.Search(Query{Vector: d.queries.Row(q), K: 10, Ef: ef})
				if err != nil {
					b.Fatal(err)
				}
				if got[q] == nil {
					got[q] = hitIDs(res.Hits)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
			if b.N >= d.queries.Len() {
				b.ReportMetric(vindextest.Recall(got, d.exact), "recall@10")
			}
		})
	}
}

func hitIDs(hs []Hit) []int {
	out := make([]int, len(hs))
	for i, h := range hs {
		out[i], _ = strconv.Atoi(h.Key[1:])
	}
	return out
}

// BenchmarkThreeShards splits the bench data over three indexes (vector i
// on shard i mod 3), asks each for its top 10 and merges them, as the
// router will: queries/s here is one core doing all three searches of a
// routed query, and recall@10 is the merged answer's against the exact
// one over all the vectors.
func BenchmarkThreeShards(b *testing.B) {
	d := loadBench(b)
	var shards [3]*Index
	for s := range shards {
		shards[s], _ = New(Config{Dim: d.base.Dim, Seed: uint64(s)})
		defer shards[s].Close()
	}
	for i := range d.base.Len() {
		shards[i%3].Add(keyOf(i), 1, d.base.Row(i))
	}
	for _, ef := range []int{32, 64, 128} {
		b.Run("ef="+strconv.Itoa(ef), func(b *testing.B) {
			got := make([][]int, d.queries.Len())
			for i := 0; b.Loop(); i++ {
				q := i % d.queries.Len()
				var all []Hit
				for _, x := range shards {
					res, _ := x.Search(Query{Vector: d.queries.Row(q), K: 10, Ef: ef})
					all = append(all, res.Hits...)
				}
				sortHits(all)
				if got[q] == nil {
					got[q] = hitIDs(all[:min(10, len(all))])
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
			if b.N >= d.queries.Len() {
				b.ReportMetric(vindextest.Recall(got, d.exact), "recall@10")
			}
		})
	}
}

// BenchmarkSearchParallel runs ef 64 searches from every core at once.
func BenchmarkSearchParallel(b *testing.B) {
	d := loadBench(b)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			d.x.Search(Query{Vector: d.queries.Row(i % d.queries.Len()), K: 10, Ef: 64})
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkSearchFilter admits one key in ten: the walk goes on through
// the rest, so it costs more than an unfiltered search.
func BenchmarkSearchFilter(b *testing.B) {
	d := loadBench(b)
	filter := func(k string) bool { return k[len(k)-1] == '7' }
	exacts := 0
	for i := 0; b.Loop(); i++ {
		res, _ := d.x.Search(Query{Vector: d.queries.Row(i % d.queries.Len()), K: 10, Ef: 64, Filter: filter})
		if res.Exact {
			exacts++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
	b.ReportMetric(float64(exacts)/float64(b.N), "exact-share")
}

// BenchmarkSaveLoad writes the index to a file and loads it back: the
// restart path.
func BenchmarkSaveLoad(b *testing.B) {
	d := loadBench(b)
	path := filepath.Join(b.TempDir(), "bench.vidx")
	var save, load time.Duration
	for b.Loop() {
		t := time.Now()
		if err := d.x.WriteFile(path, Meta{}); err != nil {
			b.Fatal(err)
		}
		save += time.Since(t)
		t = time.Now()
		y, _, err := ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		load += time.Since(t)
		y.Close()
	}
	st, _ := os.Stat(path)
	b.ReportMetric(save.Seconds()/float64(b.N), "save-s")
	b.ReportMetric(load.Seconds()/float64(b.N), "load-s")
	b.ReportMetric(float64(st.Size())/float64(d.x.Len()), "file-B/vector")
}

// BenchmarkLoadReader is Load alone, from memory: the decoding cost
// without the disk.
func BenchmarkLoadReader(b *testing.B) {
	d := loadBench(b)
	var buf bytes.Buffer
	if err := d.x.Save(&buf, Meta{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		y, _, err := Load(bytes.NewReader(buf.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		y.Close()
	}
}
