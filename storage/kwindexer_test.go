package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

// queued counts the entries in the keyword queue that the postings file
// has not applied (the committer deletes applied ones in its next commit).
func queued(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	applied := s.kw.applied.Load()
	err := s.view(func(tx *bolt.Tx) error {
		if q := tx.Bucket([]byte(kwQueueBucket)); q != nil {
			c := q.Cursor()
			for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, applied+1)); k != nil; k, _ = c.Next() {
				n++
			}
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
	err = s.viewIndex(func(tx *bolt.Tx) error {
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

// dumpIndex reads every record of the postings file's index of "text".
func dumpIndex(t testing.TB, s *Store) map[string]string {
	t.Helper()
	if err := s.kw.waitIndexed(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	err := s.viewIndex(func(tx *bolt.Tx) error {
		ix := tx.Bucket([]byte(kwBucketPrefix + "text"))
		if ix == nil {
			return nil
		}
		return ix.ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeCorpus writes, rewrites, deletes and purges text records of the
// group "t\x00", so that the index holds postings, documents and stats.
func writeCorpus(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	mustApply(t, s, "text", putText("t\x00a", 1, "walrus tusks"), putText("t\x00b", 1, "walrus"), putText("t\x00c", 1, "narwhal"), putText("t\x00d", 1, "seal pup", "zoo"))
	mustApply(t, s, "text", putText("t\x00a", 2, "walrus tusks and walrus"), del("t\x00c", 2))
	if n, err := s.Purge(ctx, "text", []Record{{Key: []byte("t\x00b"), Version: 1}}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	mustApply(t, s, "message_text", putText("m\x00x", 1, "walrus message"))
}

// checkCorpus checks the searches writeCorpus leaves, and that the index
// holds exactly want (when set).
func checkCorpus(t testing.TB, s *Store, want map[string]string) {
	t.Helper()
	if got := search(t, s, "t\x00", "walrus", 10); !slices.Equal(got, []string{"t\x00a"}) {
		t.Errorf("search walrus = %q, want t/a (b purged)", got)
	}
	if got := search(t, s, "t\x00", "narwhal", 10); len(got) != 0 {
		t.Errorf("search narwhal = %q, want none (deleted)", got)
	}
	if got := search(t, s, "t\x00", "pup", 10, "zoo"); !slices.Equal(got, []string{"t\x00d"}) {
		t.Errorf("search pup tagged zoo = %q, want t/d", got)
	}
	st, err := s.KeywordStats(context.Background(), "text", []byte("t\x00"), []string{"walru"})
	if err != nil || st.Docs != 2 {
		t.Errorf("KeywordStats = %+v, %v, want 2 documents", st, err)
	}
	if want != nil {
		if got := dumpIndex(t, s); !maps.Equal(got, want) {
			t.Errorf("index holds %d records, want the %d it held", len(got), len(want))
		}
	}
}

// TestKeywordIndexRebuilt: a postings file that is missing, unreadable,
// or older than the queue (an old copy put back) is rebuilt at Open from
// the text records, to what it held.
func TestKeywordIndexRebuilt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, path, old string)
	}{
		{"missing", func(t *testing.T, path, _ string) {
			if err := os.Remove(path + kwFileSuffix); err != nil {
				t.Fatal(err)
			}
		}},
		{"corrupt", func(t *testing.T, path, _ string) {
			if err := os.WriteFile(path+kwFileSuffix, bytes.Repeat([]byte("not bolt"), 2048), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"stale", func(t *testing.T, path, old string) {
			if err := os.Rename(old, path+kwFileSuffix); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "shard.db")
			old := filepath.Join(dir, "old.kw")
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, "text", putText("t\x00c", 1, "narwhal"), putText("t\x00z", 1, "zebra"))
			search(t, s, "t\x00", "zebra", 10)
			mustApply(t, s, "text", putText("t\x00y", 1, "yak")) // trims what the search applied
			s.kw.stopIndexer()
			copyFile(t, path+kwFileSuffix, old) // applied z, not y
			s.Close()
			s = openTestStoreAt(t, path, Options{NoSync: true})
			mustApply(t, s, "text", del("t\x00z", 2), del("t\x00y", 2))
			writeCorpus(t, s)
			want := dumpIndex(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tc.breakIt(t, path, old)

			s = openTestStoreAt(t, path, Options{NoSync: true})
			checkCorpus(t, s, want)
			if got := search(t, s, "t\x00", "zebra yak", 10); len(got) != 0 {
				t.Errorf("search zebra yak = %q, want none (deleted)", got)
			}
			// The sequence goes on past what the rebuild read.
			mustApply(t, s, "text", putText("t\x00e", 1, "walrus pup"), del("t\x00a", 3))
			if got := search(t, s, "t\x00", "walrus", 10); !slices.Equal(got, []string{"t\x00e"}) {
				t.Errorf("search walrus after more writes = %q, want t/e", got)
			}
		})
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKeywordQueueAppliedNotTrimmed: a crash after the postings file
// applied entries and before a commit deleted them from the queue leaves
// them queued; Open deletes them without applying them again (a second
// application would count the documents twice), and applies the rest.
func TestKeywordQueueAppliedNotTrimmed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shard.db")
	s := openTestStoreAt(t, path, Options{NoSync: true})
	writeCorpus(t, s)
	want := dumpIndex(t, s) // applied
	s.kw.stopIndexer()
	// Hold the committer's trim back: the next commit leaves the applied
	// entries queued, as a crash before it would.
	applied := s.kw.applied.Swap(0)
	mustApply(t, s, "text", putText("t\x00f", 1, "fulmar")) // queued, not applied
	s.kw.applied.Store(applied)
	// The files as a crash now would leave them: no transaction runs.
	crash := filepath.Join(dir, "crash.db")
	copyFile(t, path, crash)
	copyFile(t, path+kwFileSuffix, crash+kwFileSuffix)

	var done, pending int
	db, err := bolt.Open(crash, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(kwQueueBucket)).ForEach(func(k, _ []byte) error {
			if binary.BigEndian.Uint64(k) <= applied {
				done++
			} else {
				pending++
			}
			return nil
		})
	})
	db.Close()
	if done == 0 || pending != 1 {
		t.Fatalf("crash left %d applied and %d pending queue entries, want some and 1", done, pending)
	}

	c := openTestStoreAt(t, crash, Options{NoSync: true})
	mustApply(t, c, "text", del("t\x00f", 2))
	checkCorpus(t, c, want)
	if got := search(t, c, "t\x00", "fulmar", 10); len(got) != 0 {
		t.Errorf("search fulmar = %q, want none (deleted)", got)
	}
	ks, err := c.KeywordIndexStats()
	if err != nil || ks["text"].Docs != 2 || ks["message_text"].Docs != 1 {
		t.Errorf("KeywordIndexStats = %+v, %v, want 2 text and 1 message documents", ks, err)
	}
}

// TestKeywordIndexMigrates: a record file of the synchronous design holds
// its postings in _kw_ buckets and no postings file; Open builds the file
// from the records and drops the old buckets.
func TestKeywordIndexMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{NoSync: true})
	writeCorpus(t, s)
	want := dumpIndex(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The old layout: the same postings, in the record file.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"text", "message_text"} {
			ix, err := tx.CreateBucket([]byte(kwBucketPrefix + name))
			if err != nil {
				return err
			}
			for k, v := range want {
				if err := ix.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
		}
		if err := tx.DeleteBucket([]byte(kwQueueBucket)); err != nil {
			return err
		}
		return tx.Bucket([]byte(metaBucket)).Delete([]byte(kwTrimmedKey))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + kwFileSuffix); err != nil {
		t.Fatal(err)
	}

	s = openTestStoreAt(t, path, Options{NoSync: true})
	checkCorpus(t, s, want)
	err = s.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if bytes.HasPrefix(name, []byte(kwBucketPrefix)) {
				t.Errorf("record file still holds %s", name)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeywordIndexFailingKeepsWritesGoing: while the indexer's batches
// fail (here its postings file is closed under it), writes of text go on
// far past the backlog that would throttle a healthy indexer: an index
// that cannot be written never stops the records.
func TestKeywordIndexFailingKeepsWritesGoing(t *testing.T) {
	s := openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{NoSync: true})
	if err := s.kw.db.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range 4 * maxIndexBacklog {
			if _, err := s.Apply(context.Background(), "text", []Write{putText(fmt.Sprintf("t\x00k%04d", i), 1, "walrus")}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a write with the index failing: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%d writes not done after a minute with the keyword index failing: the committer waits for it", 4*maxIndexBacklog)
	}
	if !s.kw.failing.Load() {
		t.Errorf("the indexer does not report its failing batches")
	}
	if got, err := s.Get(context.Background(), "text", []byte(fmt.Sprintf("t\x00k%04d", 4*maxIndexBacklog-1))); err != nil || got.Version != 1 {
		t.Errorf("the last record = %v, %v; want it stored", got, err)
	}
}
