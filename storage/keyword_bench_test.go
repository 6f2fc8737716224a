package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

// benchWords are the words of the packaged fortunes (or a fixed list
// without them), repeats kept, so sampling them gives text whose word
// frequencies look like English.
func benchWords(tb testing.TB) []string {
	raw, err := os.ReadFile("/usr/share/games/fortunes/fortunes")
	if err != nil {
		tb.Logf("no fortunes (%v): synthetic words", err)
		var w []string
		for i := range 5000 {
			w = append(w, fmt.Sprintf("w%d", i%(1+i%97)))
		}
		return w
	}
	return strings.Fields(string(raw))
}

// loadKeywordDocs writes n short documents (8 to 24 words) to one group.
func loadKeywordDocs(tb testing.TB, s *Store, n int, rng *rand.Rand, words []string) time.Duration {
	start := time.Now()
	const batch = 1000
	for i := 0; i < n; i += batch {
		ws := make([]Write, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			var b strings.Builder
			for range 8 + rng.IntN(17) {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
			ws = append(ws, putText(fmt.Sprintf("bench\x00%08d", j), 1, b.String()))
		}
		if _, err := s.Apply(context.Background(), "text", ws); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkKeyword100k reports the index build rate (docs/s, batches of
// 1000 through Apply) and the latency of a two-phase query of two or
// three words over 100,000 short documents on one store.
func BenchmarkKeyword100k(b *testing.B) {
	s := openTestStoreAt(b, filepath.Join(b.TempDir(), "shard.db"), Options{NoSync: true})
	rng := rand.New(rand.NewPCG(7, 7))
	words := benchWords(b)
	const n = 100_000
	took := loadKeywordDocs(b, s, n, rng, words)
	ks, err := s.KeywordIndexStats()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("build: %d docs in %v = %.0f docs/s; index %d keys, %d bytes (%.0f B/doc)", n, took, n/took.Seconds(), ks["text"].Keys, ks["text"].Bytes, float64(ks["text"].Bytes)/n)
	ctx := context.Background()
	prefix := []byte("bench\x00")
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))]
		terms := kwindex.QueryTerms(q)
		if len(terms) == 0 {
			continue
		}
		start := time.Now()
		st, err := s.KeywordStats(ctx, "text", prefix, terms)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Keyword(ctx, "text", KeywordQuery{Prefix: prefix, Terms: terms, K: 18, Stats: st}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(n/took.Seconds(), "build-docs/s")
	}
}

// BenchmarkKeywordWrite4K reports the rate of durable-path writes of
// realistic documents: parallel transactions of a context record and a
// 4 KB text record of English words (the router's PUT), until a search
// sees every one of them, so the keyword index's work counts wherever it
// is done. Commits skip fsync unless KW_SYNC is set.
func BenchmarkKeywordWrite4K(b *testing.B) {
	raw, err := os.ReadFile("/usr/share/games/fortunes/fortunes")
	if err != nil {
		b.Skipf("no fortunes: %v", err)
	}
	words := strings.Fields(string(raw))
	rng := rand.New(rand.NewPCG(4, 4))
	texts := make([][]byte, 256)
	for i := range texts {
		var sb strings.Builder
		for sb.Len() < 4096 {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		texts[i] = EncodeText(Text{Body: sb.String()})
	}
	s := openTestStoreAt(b, filepath.Join(b.TempDir(), "shard.db"), Options{NoSync: os.Getenv("KW_SYNC") == ""})
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(3)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			key := []byte(fmt.Sprintf("bench\x00%09d", i))
			_, err := s.Txn(ctx, []TxnWrite{
				{Bucket: "contexts", Write: Write{Record: Record{Key: key, Version: 1, Value: []byte(`{"id":"x"}`)}}},
				{Bucket: "text", Write: Write{Record: Record{Key: key, Version: 1, Value: texts[i%int64(len(texts))]}}},
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	// The last document is searchable: the index has caught up. How long
	// that takes is how far behind the writers the indexer fell.
	behind := queued(b, s)
	start := time.Now()
	st, err := s.KeywordStats(ctx, "text", []byte("bench\x00"), []string{"the"})
	if err != nil || st.Docs != int64(b.N) {
		b.Fatalf("KeywordStats = %+v, %v, want %d docs", st, err, b.N)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "catchup-ms")
	b.ReportMetric(float64(behind), "behind-docs")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
}
