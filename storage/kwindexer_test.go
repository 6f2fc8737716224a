package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

// queued counts the entries in the keyword queue.
func queued(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		if q := tx.Bucket([]byte(kwQueueBucket)); q != nil {
			n = q.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKeywordQueueSurvivesCrash: entries the indexer never applied (it
// was stopped, as by a crash) are in the file, and the next Open applies
// them before any search answers.
func TestKeywordQueueSurvivesCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{NoSync: true})
	ctx := context.Background()
	s.kw.stopIndexer()
	mustApply(t, s, "text", putText("t\x00a", 1, "walrus tusks"), putText("t\x00b", 1, "walrus"), putText("t\x00c", 1, "narwhal"))
	if _, err := s.Txn(ctx, []TxnWrite{{Bucket: "text", Write: putText("t\x00d", 2, "walrus again")}, {Bucket: "contexts", Write: put("t\x00d", 2, "x")}}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, "text", putText("t\x00a", 2, "seal"), del("t\x00c", 2))
	if n, err := s.Purge(ctx, "text", []Record{{Key: []byte("t\x00b"), Version: 1}}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if n := queued(t, s); n != 7 {
		t.Errorf("queue holds %d entries with the indexer stopped, want 7", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStoreAt(t, path, Options{NoSync: true})
	if got, want := search(t, s, "t\x00", "walrus", 10), []string{"t\x00d"}; !slices.Equal(got, want) {
		t.Errorf("search walrus after reopen = %q, want %q (b purged, a rewritten)", got, want)
	}
	if got, want := search(t, s, "t\x00", "seal", 10), []string{"t\x00a"}; !slices.Equal(got, want) {
		t.Errorf("search seal after reopen = %q, want %q", got, want)
	}
	if got := search(t, s, "t\x00", "narwhal", 10); len(got) != 0 {
		t.Errorf("search narwhal after reopen = %q, want none (deleted)", got)
	}
	if n := queued(t, s); n != 0 {
		t.Errorf("queue holds %d entries after a search, want none", n)
	}
	// The sequence goes on from the file's: new entries follow.
	mustApply(t, s, "text", putText("t\x00e", 1, "walrus pup"))
	if got := search(t, s, "t\x00", "pup", 10); !slices.Equal(got, []string{"t\x00e"}) {
		t.Errorf("search pup = %q, want t/e", got)
	}
}

// TestKeywordSearchSeesAcknowledgedWrites: concurrent writers each search
// right after every acknowledged write, rewrite and delete of their own
// document, and must see exactly it.
func TestKeywordSearchSeesAcknowledgedWrites(t *testing.T) {
	eachShard(t, func(t *testing.T, s shard) {
		sh := s.(keywordShard)
		ctx := context.Background()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("t\x00w%d", w)
				for i := range 15 {
					word := fmt.Sprintf("wword%dx%d", w, i)
					v := uint64(3*i + 1)
					if _, err := sh.Txn(ctx, []TxnWrite{{Bucket: "text", Write: putText(key, v, word+" filler")}, {Bucket: "contexts", Write: put(key, v, "x")}}); err != nil {
						t.Error(err)
						return
					}
					if got := search(t, sh, "t\x00", word, 10); !slices.Equal(got, []string{key}) {
						t.Errorf("search %s after its write = %q, want %q", word, got, key)
					}
					if _, err := sh.Apply(ctx, "text", []Write{putText(key, v+1, "plover filler")}); err != nil {
						t.Error(err)
						return
					}
					if got := search(t, sh, "t\x00", word, 10); len(got) != 0 {
						t.Errorf("search %s after a rewrite = %q, want none", word, got)
					}
					if _, err := sh.Apply(ctx, "text", []Write{del(key, v+2)}); err != nil {
						t.Error(err)
						return
					}
					if got := search(t, sh, "t\x00", "plover", 10); slices.Contains(got, key) {
						t.Errorf("search plover after a delete = %q, want no %q", got, key)
					}
				}
			}()
		}
		wg.Wait()
	})
}

// TestKeywordIndexerCatchesUp: after concurrent writes, tombstones and
// purges, the queue drains and the index holds what the records give:
// as many postings as their documents have terms, and their statistics.
func TestKeywordIndexerCatchesUp(t *testing.T) {
	s := openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{NoSync: true})
	ctx := context.Background()
	words := benchWords(t)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range 200 {
				key := fmt.Sprintf("g\x00w%dk%d", w, rng.IntN(60))
				var err error
				switch rng.IntN(8) {
				case 0:
					_, err = s.Apply(ctx, "text", []Write{del(key, uint64(i+1))})
				case 1:
					_, err = s.Purge(ctx, "text", []Record{{Key: []byte(key), Version: uint64(i)}})
				default:
					var body []byte
					for range 5 + rng.IntN(200) {
						body = append(body, words[rng.IntN(len(words))]...)
						body = append(body, ' ')
					}
					_, err = s.Txn(ctx, []TxnWrite{{Bucket: "text", Write: putText(key, uint64(i+1), string(body))}, {Bucket: "contexts", Write: put(key, uint64(i+1), "x")}})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	terms := kwindex.QueryTerms("love time man life")
	want := KeywordStats{DF: make([]int64, len(terms))}
	wantPostings := 0
	recs, _ := scanAll(t, s, "text", ScanOptions{Limit: 1000})
	for _, r := range recs {
		AddTextStats(&want, terms, r.Value)
		tx, _ := DecodeText(r.Value)
		wantPostings += len(kwindex.NewDoc(tx.Body).TF)
	}
	got, err := s.KeywordStats(ctx, "text", []byte("g\x00"), terms)
	if err != nil || got.Docs != want.Docs || got.Length != want.Length || !slices.Equal(got.DF, want.DF) {
		t.Errorf("KeywordStats = %+v, %v, want %+v", got, err, want)
	}
	if n := queued(t, s); n != 0 {
		t.Errorf("queue holds %d entries after a search, want none", n)
	}
	postings, docs := 0, 0
	err = s.view(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(kwBucketPrefix + "text")).ForEach(func(k, _ []byte) error {
			switch k[0] {
			case 'p':
				postings++
			case 'd':
				docs++
			}
			return nil
		})
	})
	if err != nil || postings != wantPostings || int64(docs) != want.Docs {
		t.Errorf("index holds %d postings and %d documents (%v), want %d and %d", postings, docs, err, wantPostings, want.Docs)
	}
}
