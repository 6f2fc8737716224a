package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/go-kvdb/go-kvdb/storage/kwindex"
)

type keywordShard interface {
	shard
	KeywordStats(ctx context.Context, bucket string, prefix []byte, terms []string) (KeywordStats, error)
	Keyword(ctx context.Context, bucket string, q KeywordQuery) (TopKResult, error)
	Purge(ctx context.Context, bucket string, recs []Record) (int, error)
	Txn(ctx context.Context, writes []TxnWrite) ([]Result, error)
}

var (
	_ keywordShard = (*Store)(nil)
	_ keywordShard = (*Client)(nil)
)

func putText(key string, version uint64, body string, tags ...string) Write {
	return Write{Record: Record{Key: []byte(key), Version: version, Value: EncodeText(Text{Tags: tags, Body: body})}}
}

// search runs both phases against one shard: its own statistics are the
// collection's.
func search(t testing.TB, sh keywordShard, prefix, query string, k int, tags ...string) []string {
	t.Helper()
	ctx := context.Background()
	terms := kwindex.QueryTerms(query)
	st, err := sh.KeywordStats(ctx, "text", []byte(prefix), terms)
	if err != nil {
		t.Fatalf("KeywordStats(%q) = %v", query, err)
	}
	res, err := sh.Keyword(ctx, "text", KeywordQuery{Prefix: []byte(prefix), Terms: terms, K: k, Tags: tags, Stats: st})
	if err != nil {
		t.Fatalf("Keyword(%q) = %v", query, err)
	}
	var keys []string
	for _, m := range res.Matches {
		keys = append(keys, string(m.Key))
	}
	return keys
}

func TestTextRoundTrip(t *testing.T) {
	for _, tx := range []Text{{}, {Body: "hello"}, {Tags: []string{"a", "bc"}, Body: "x\x00y"}} {
		got, err := DecodeText(EncodeText(tx))
		if err != nil || got.Body != tx.Body || !slices.Equal(got.Tags, tx.Tags) {
			t.Errorf("DecodeText(EncodeText(%+v)) = %+v, %v", tx, got, err)
		}
	}
	if _, err := DecodeText([]byte{0xE5, 1, 2}); !errors.Is(err, ErrInvalid) {
		t.Errorf("DecodeText(sealed) = %v, want ErrInvalid", err)
	}
}

func TestKeywordSearch(t *testing.T) {
	eachShard(t, func(t *testing.T, s shard) {
		sh := s.(keywordShard)
		ctx := context.Background()
		mustApply(t, sh, "text",
			putText("t\x00a", 1, "The quick brown fox jumps over the lazy dog"),
			putText("t\x00b", 1, "A fox, a fox, a fox! Foxes everywhere", "pets"),
			putText("t\x00c", 1, "Order A-1234 shipped to Alice"),
			putText("t\x00d", 1, "Nothing to see here"),
			putText("u\x00a", 1, "fox in another topic"),
		)
		if got, want := search(t, sh, "t\x00", "foxes", 10), []string{"t\x00b", "t\x00a"}; !slices.Equal(got, want) {
			t.Errorf("search foxes = %q, want %q (more occurrences first, other topic never)", got, want)
		}
		if got, want := search(t, sh, "t\x00", "order 1234", 10), []string{"t\x00c"}; !slices.Equal(got, want) {
			t.Errorf("search order 1234 = %q, want %q", got, want)
		}
		if got, want := search(t, sh, "t\x00", "fox", 10, "pets"), []string{"t\x00b"}; !slices.Equal(got, want) {
			t.Errorf("search fox tags=pets = %q, want %q", got, want)
		}
		if got, want := search(t, sh, "t\x00", "fox", 1), []string{"t\x00b"}; !slices.Equal(got, want) {
			t.Errorf("search fox k=1 = %q, want %q", got, want)
		}
		st, err := sh.KeywordStats(ctx, "text", []byte("t\x00"), []string{"fox", "dog", "zebra"})
		if err != nil {
			t.Fatal(err)
		}
		wantLen := 0
		for _, s := range []string{"The quick brown fox jumps over the lazy dog", "A fox, a fox, a fox! Foxes everywhere", "Order A-1234 shipped to Alice", "Nothing to see here"} {
			wantLen += len(kwindex.Analyze(s))
		}
		if st.Docs != 4 || st.Length != int64(wantLen) || !slices.Equal(st.DF, []int64{2, 1, 0}) {
			t.Errorf("KeywordStats = %+v, want 4 docs, length %d, df [2 1 0]", st, wantLen)
		}

		// A rewrite drops the old words, a tombstone all of them; a stale write changes nothing.
		mustApply(t, sh, "text", putText("t\x00a", 2, "a lazy cat"), del("t\x00b", 2), putText("t\x00c", 0+1, "fox fox fox"))
		if got := search(t, sh, "t\x00", "fox", 10); len(got) != 0 {
			t.Errorf("search fox after rewrite and delete = %q, want none", got)
		}
		if got, want := search(t, sh, "t\x00", "cat", 10), []string{"t\x00a"}; !slices.Equal(got, want) {
			t.Errorf("search cat = %q, want %q", got, want)
		}
		res, err := sh.Keyword(ctx, "text", KeywordQuery{Prefix: []byte("t\x00"), Terms: []string{"cat"}, K: 1, Stats: KeywordStats{Docs: 3, Length: 10, DF: []int64{1}}})
		if err != nil || len(res.Matches) != 1 || res.Matches[0].Version != 2 {
			t.Errorf("Keyword(cat) = %+v, %v, want t/a at version 2", res, err)
		}

		// A transaction indexes like Apply; a purge of a live record unindexes it.
		if _, err := sh.Txn(ctx, []TxnWrite{{Bucket: "text", Write: putText("t\x00e", 3, "zebra crossing")}, {Bucket: "contexts", Write: put("t\x00e", 3, "x")}}); err != nil {
			t.Fatal(err)
		}
		if got, want := search(t, sh, "t\x00", "zebras", 10), []string{"t\x00e"}; !slices.Equal(got, want) {
			t.Errorf("search zebras after Txn = %q, want %q", got, want)
		}
		if n, err := sh.Purge(ctx, "text", []Record{{Key: []byte("t\x00e"), Version: 3}}); err != nil || n != 1 {
			t.Fatalf("Purge = %d, %v", n, err)
		}
		if got := search(t, sh, "t\x00", "zebra", 10); len(got) != 0 {
			t.Errorf("search zebra after purge = %q, want none", got)
		}

		// A value the shard cannot read (sealed) is stored, not indexed.
		mustApply(t, sh, "text", Write{Record: Record{Key: []byte("t\x00s"), Version: 5, Value: []byte{0xE5, 1, 'f', 'o', 'x'}}})
		if got := search(t, sh, "t\x00", "fox", 10); len(got) != 0 {
			t.Errorf("search fox with a sealed record = %q, want none", got)
		}
	})
}

func TestKeywordInvalid(t *testing.T) {
	eachShard(t, func(t *testing.T, s shard) {
		sh := s.(keywordShard)
		ctx := context.Background()
		bad := []KeywordQuery{
			{Prefix: []byte("t"), Terms: []string{"a"}, K: 1, Stats: KeywordStats{DF: []int64{0}}},      // not a group
			{Prefix: []byte("t\x00x"), Terms: []string{"a"}, K: 1, Stats: KeywordStats{DF: []int64{0}}}, // more than a group
			{Prefix: []byte("t\x00"), K: 1}, // no terms
			{Prefix: []byte("t\x00"), Terms: []string{"a"}, K: 0, Stats: KeywordStats{DF: []int64{0}}},      // k
			{Prefix: []byte("t\x00"), Terms: []string{"a"}, K: 1},                                           // stats of no term
			{Prefix: []byte("t\x00"), Terms: []string{"a\x00b"}, K: 1, Stats: KeywordStats{DF: []int64{0}}}, // 0 byte
		}
		for i, q := range bad {
			if _, err := sh.Keyword(ctx, "text", q); !errors.Is(err, ErrInvalid) {
				t.Errorf("Keyword(bad %d) = %v, want ErrInvalid", i, err)
			}
		}
		if _, err := sh.KeywordStats(ctx, "contexts", []byte("t\x00"), []string{"a"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("KeywordStats(bucket without index) = %v, want ErrInvalid", err)
		}
	})
}

// TestKeywordIndexMatchesRecords applies random writes, tombstones, stale
// writes and purges, then checks the index holds exactly the postings and
// counts that the live records give, and survives a reopen.
func TestKeywordIndexMatchesRecords(t *testing.T) {
	path := t.TempDir() + "/shard.db"
	s := openTestStoreAt(t, path, Options{NoSync: true})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"apple", "banana", "cherry", "dates", "elder", "figs", "grape", "the", "running", "runs"}
	versions := map[string]uint64{}
	for round := range 300 {
		key := fmt.Sprintf("g%d\x00k%d", rng.IntN(2), rng.IntN(40))
		v := versions[key] + 1 + uint64(rng.IntN(2))
		if rng.IntN(10) == 0 {
			v = max(versions[key], 1) // stale or equal: no change
		}
		switch rng.IntN(6) {
		case 0:
			mustApply(t, s, "text", del(key, v))
		case 1:
			if _, err := s.Purge(ctx, "text", []Record{{Key: []byte(key), Version: versions[key]}}); err != nil {
				t.Fatal(err)
			}
			delete(versions, key)
			continue
		default:
			var body []string
			for range rng.IntN(8) {
				body = append(body, words[rng.IntN(len(words))])
			}
			text := fmt.Sprint(round, " ", body)
			if rng.IntN(2) == 0 { // often the same terms, or as many: the rewrite's short paths
				slices.Sort(body)
				text = strings.Join(body[:min(len(body), 3)], " ")
			}
			mustApply(t, s, "text", putText(key, v, text))
		}
		versions[key] = max(versions[key], v)
	}
	check := func(s *Store) {
		t.Helper()
		if err := s.kw.waitIndexed(ctx); err != nil { // it reads the index bucket itself
			t.Fatal(err)
		}
		want := map[string]string{} // posting key → tf dl, document key → version
		stats := map[string][2]int64{}
		recs, _ := scanAll(t, s, "text", ScanOptions{Limit: 1000})
		for _, r := range recs {
			tx, _ := DecodeText(r.Value)
			d := kwindex.NewDoc(tx.Body)
			if d.Len == 0 {
				continue
			}
			g := vectorGroup(r.Key)
			st := stats[string(r.Key[:g])]
			stats[string(r.Key[:g])] = [2]int64{st[0] + 1, st[1] + int64(d.Len)}
			for term, tf := range d.TF {
				want[string(postingKey(r.Key[:g], term, r.Key[g:]))] = fmt.Sprint(tf, d.Len)
			}
			want[string(docKey(r.Key[:g], r.Key[g:]))] = fmt.Sprint(r.Version)
		}
		got := map[string]string{}
		gotStats := map[string][2]int64{}
		err := s.viewIndex(func(tx *bolt.Tx) error {
			ix := tx.Bucket([]byte("_kw_text"))
			return ix.ForEach(func(k, v []byte) error {
				if k[0] == 's' {
					d, l := groupStats(ix, k[1:])
					gotStats[string(k[1:])] = [2]int64{d, l}
					return nil
				}
				r := wireReader{b: v}
				if k[0] == 'd' {
					got[string(k)] = fmt.Sprint(r.uvarint("", 1<<62))
				} else {
					tf, dl := r.uvarint("", 1<<62), r.uvarint("", 1<<62)
					got[string(k)] = fmt.Sprint(tf, dl)
				}
				if r.err == nil && len(r.b) > 0 {
					r.fail("index value")
				}
				return r.err
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("index postings:\n got %d %v\nwant %d %v", len(got), got, len(want), want)
		}
		if fmt.Sprint(gotStats) != fmt.Sprint(stats) {
			t.Errorf("index stats = %v, want %v", gotStats, stats)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTestStoreAt(t, path, Options{NoSync: true}))
}

// TestKeywordIndexSnapshotRestore: a snapshot carries the text records but
// not the shard's own index; replaying it into a fresh store through Apply
// (as a restore does) indexes them again.
func TestKeywordIndexSnapshotRestore(t *testing.T) {
	src := openTestStore(t)
	mustApply(t, src, "text", putText("t\x00a", 1, "lighthouse keeper"), putText("t\x00b", 1, "keeper of bees"), del("t\x00c", 2))
	recs := readSnapshot(t, src)
	dst := openTestStore(t)
	for _, br := range recs {
		if strings.HasPrefix(br.bucket, "_") {
			t.Errorf("snapshot holds the shard's own bucket %q", br.bucket)
			continue
		}
		mustApply(t, dst, br.bucket, Write{Record: br.rec})
	}
	if got, want := search(t, dst, "t\x00", "keepers", 10), []string{"t\x00a", "t\x00b"}; !slices.Equal(got, want) && !slices.Equal(got, []string{"t\x00b", "t\x00a"}) {
		t.Errorf("search keepers after restore = %q, want both", got)
	}
	if got, want := search(t, dst, "t\x00", "lighthouse", 10), []string{"t\x00a"}; !slices.Equal(got, want) {
		t.Errorf("search lighthouse after restore = %q, want %q", got, want)
	}
	ss, err := src.KeywordIndexStats()
	ds, err2 := dst.KeywordIndexStats()
	if err != nil || err2 != nil || ss["text"].Docs != 2 || ds["text"].Docs != 2 || ss["text"].Keys != ds["text"].Keys {
		t.Errorf("index stats source %+v, restored %+v (%v, %v), want the same 2 documents", ss, ds, err, err2)
	}
}
