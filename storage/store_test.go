package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestApply checks one write against each state a key can be in: the
// put-if-newer rule, tombstones and every condition. A write that is Stale or
// in Conflict must leave the held record exactly as it was.
func TestApply(t *testing.T) {
	const key = "k"
	absent := []Write(nil)
	live5 := []Write{put(key, 5, "v5")}
	tomb5 := []Write{put(key, 3, "v3"), del(key, 5)}

	heldLive5 := &Record{Key: []byte(key), Version: 5, Value: []byte("v5")}
	heldTomb5 := &Record{Key: []byte(key), Version: 5, Tombstone: true}
	held := func(w Write) *Record { r := w.Record; return &r }

	tests := []struct {
		name  string
		setup []Write
		write Write
		want  Result
		held  *Record // nil: the key must still be absent
	}{
		// Put-if-newer.
		{"new key", absent, put(key, 1, "v1"), Result{Outcome: Applied}, held(put(key, 1, "v1"))},
		{"newer", live5, put(key, 6, "v6"), Result{Outcome: Applied, PrevVersion: 5}, held(put(key, 6, "v6"))},
		{"equal version", live5, put(key, 5, "other"), Result{Outcome: Stale, PrevVersion: 5}, heldLive5},
		{"older", live5, put(key, 4, "v4"), Result{Outcome: Stale, PrevVersion: 5}, heldLive5},
		{"empty value", absent, put(key, 1, ""), Result{Outcome: Applied}, held(put(key, 1, ""))},

		// Tombstones are records like any other.
		{"delete newer", live5, del(key, 6), Result{Outcome: Applied, PrevVersion: 5}, held(del(key, 6))},
		{"delete older", live5, del(key, 4), Result{Outcome: Stale, PrevVersion: 5}, heldLive5},
		{"delete absent", absent, del(key, 3), Result{Outcome: Applied}, held(del(key, 3))},
		{"put over tombstone", tomb5, put(key, 6, "v6"), Result{Outcome: Applied, PrevVersion: 5, PrevTombstone: true}, held(put(key, 6, "v6"))},
		{"older put under tombstone", tomb5, put(key, 4, "v4"), Result{Outcome: Stale, PrevVersion: 5, PrevTombstone: true}, heldTomb5},
		{"delete over tombstone", tomb5, del(key, 7), Result{Outcome: Applied, PrevVersion: 5, PrevTombstone: true}, held(del(key, 7))},

		// CondAbsent: create only.
		{"absent/on absent", absent, cond(put(key, 1, "v1"), CondAbsent, 0), Result{Outcome: Applied}, held(put(key, 1, "v1"))},
		{"absent/on live", live5, cond(put(key, 6, "v6"), CondAbsent, 0), Result{Outcome: Conflict, PrevVersion: 5}, heldLive5},
		{"absent/on tombstone", tomb5, cond(put(key, 6, "v6"), CondAbsent, 0), Result{Outcome: Applied, PrevVersion: 5, PrevTombstone: true}, held(put(key, 6, "v6"))},
		{"absent/on tombstone, stale", tomb5, cond(put(key, 4, "v4"), CondAbsent, 0), Result{Outcome: Stale, PrevVersion: 5, PrevTombstone: true}, heldTomb5},
		{"absent/on live, older: conflict before stale", live5, cond(put(key, 4, "v4"), CondAbsent, 0), Result{Outcome: Conflict, PrevVersion: 5}, heldLive5},

		// CondExists: update or delete only if present.
		{"exists/on live", live5, cond(put(key, 6, "v6"), CondExists, 0), Result{Outcome: Applied, PrevVersion: 5}, held(put(key, 6, "v6"))},
		{"exists/delete on live", live5, cond(del(key, 6), CondExists, 0), Result{Outcome: Applied, PrevVersion: 5}, held(del(key, 6))},
		{"exists/on absent", absent, cond(put(key, 1, "v1"), CondExists, 0), Result{Outcome: Conflict}, nil},
		{"exists/delete on absent", absent, cond(del(key, 1), CondExists, 0), Result{Outcome: Conflict}, nil},
		{"exists/on tombstone", tomb5, cond(put(key, 6, "v6"), CondExists, 0), Result{Outcome: Conflict, PrevVersion: 5, PrevTombstone: true}, heldTomb5},
		{"exists/on live, stale", live5, cond(put(key, 5, "x"), CondExists, 0), Result{Outcome: Stale, PrevVersion: 5}, heldLive5},

		// CondVersion: compare-and-set.
		{"version/right match", live5, cond(put(key, 6, "v6"), CondVersion, 5), Result{Outcome: Applied, PrevVersion: 5}, held(put(key, 6, "v6"))},
		{"version/right match, delete", live5, cond(del(key, 6), CondVersion, 5), Result{Outcome: Applied, PrevVersion: 5}, held(del(key, 6))},
		{"version/wrong match", live5, cond(put(key, 6, "v6"), CondVersion, 4), Result{Outcome: Conflict, PrevVersion: 5}, heldLive5},
		{"version/match newer than held", live5, cond(put(key, 7, "v7"), CondVersion, 6), Result{Outcome: Conflict, PrevVersion: 5}, heldLive5},
		{"version/on absent, match 0", absent, cond(put(key, 1, "v1"), CondVersion, 0), Result{Outcome: Conflict}, nil},
		{"version/on tombstone, its version", tomb5, cond(put(key, 6, "v6"), CondVersion, 5), Result{Outcome: Conflict, PrevVersion: 5, PrevTombstone: true}, heldTomb5},
		{"version/right match, stale", live5, cond(put(key, 5, "x"), CondVersion, 5), Result{Outcome: Stale, PrevVersion: 5}, heldLive5},
	}
	eachShard(t, func(t *testing.T, sh shard) {
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				bucket := fmt.Sprintf("apply_%d", i)
				for _, w := range tt.setup {
					if res := mustApply(t, sh, bucket, w); res[0].Outcome != Applied {
						t.Fatalf("setup Apply(%s) = %+v, want applied", show(w.Record), res[0])
					}
				}
				res := mustApply(t, sh, bucket, tt.write)
				if res[0] != tt.want {
					t.Errorf("Apply(%s, cond %d match %d) = %+v, want %+v", show(tt.write.Record), tt.write.Cond, tt.write.Match, res[0], tt.want)
				}
				if got := res[0].PrevLive(); got != (tt.want.PrevVersion != 0 && !tt.want.PrevTombstone) {
					t.Errorf("PrevLive() = %t for %+v", got, res[0])
				}
				got, err := sh.Get(ctx, bucket, []byte(key))
				if tt.held == nil {
					if !errors.Is(err, ErrNotFound) {
						t.Errorf("Get(%q) = %s, %v, want ErrNotFound", key, show(got), err)
					}
					return
				}
				if err != nil || !sameRecord(got, *tt.held) {
					t.Errorf("Get(%q) = %s, %v, want %s", key, show(got), err, show(*tt.held))
				}
				if got.Tombstone && got.Value != nil {
					t.Errorf("Get(%q) = tombstone with value %q, want nil value", key, got.Value)
				}
			})
		}
	})
}

// TestApplyBatch checks that the writes of one batch are applied in order in
// one transaction: a later write sees an earlier one.
func TestApplyBatch(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mustApply(t, sh, "b", put("held", 10, "h10"))
		writes := []Write{
			put("a", 1, "a1"),
			put("a", 2, "a2"),
			put("a", 2, "a2bis"),
			cond(put("c", 1, "c1"), CondExists, 0),
			cond(put("c", 1, "c1"), CondAbsent, 0),
			cond(put("c", 2, "c2"), CondVersion, 1),
			put("held", 9, "h9"),
			del("held", 11),
			cond(put("held", 12, "h12"), CondAbsent, 0),
		}
		want := []Result{
			{Outcome: Applied},
			{Outcome: Applied, PrevVersion: 1},
			{Outcome: Stale, PrevVersion: 2},
			{Outcome: Conflict},
			{Outcome: Applied},
			{Outcome: Applied, PrevVersion: 1},
			{Outcome: Stale, PrevVersion: 10},
			{Outcome: Applied, PrevVersion: 10},
			{Outcome: Applied, PrevVersion: 11, PrevTombstone: true},
		}
		got := mustApply(t, sh, "b", writes...)
		if !slices.Equal(got, want) {
			t.Errorf("Apply(batch) = %+v, want %+v", got, want)
		}
		for _, w := range []Write{put("a", 2, "a2"), put("c", 2, "c2"), put("held", 12, "h12")} {
			rec, err := sh.Get(ctx, "b", w.Key)
			if err != nil || !sameRecord(rec, w.Record) {
				t.Errorf("Get(%q) = %s, %v, want %s", w.Key, show(rec), err, show(w.Record))
			}
		}
	})
}

// TestInvalid checks that malformed requests fail with ErrInvalid and write
// nothing, whichever end receives them.
func TestInvalid(t *testing.T) {
	ctx := context.Background()
	ok := put("k", 1, "v")
	many := make([]Write, MaxBatch+1)
	for i := range many {
		many[i] = put(fmt.Sprintf("k%05d", i), 1, "")
	}
	var tests []struct {
		name string
		call func(sh shard) error
	}
	add := func(name string, call func(sh shard) error) {
		tests = append(tests, struct {
			name string
			call func(sh shard) error
		}{name, call})
	}
	badBuckets := []string{"", "Users", "1abc", "_meta", "a-b", "a b", "a/b", "a?b", "a%2Fb", "a.b", "é", strings.Repeat("a", 33)}
	for _, b := range badBuckets {
		add(fmt.Sprintf("Get bucket %q", b), func(sh shard) error { _, err := sh.Get(ctx, b, []byte("k")); return err })
		add(fmt.Sprintf("Apply bucket %q", b), func(sh shard) error { _, err := sh.Apply(ctx, b, []Write{ok}); return err })
		add(fmt.Sprintf("Scan bucket %q", b), func(sh shard) error { _, err := sh.Scan(ctx, b, ScanOptions{Limit: 1}); return err })
		add(fmt.Sprintf("DeletePrefix bucket %q", b), func(sh shard) error { _, err := sh.DeletePrefix(ctx, b, []byte("k"), 2); return err })
	}
	add("Get empty key", func(sh shard) error { _, err := sh.Get(ctx, "b", nil); return err })
	add("Get oversized key", func(sh shard) error { _, err := sh.Get(ctx, "b", make([]byte, MaxKeySize+1)); return err })
	add("Apply empty key", func(sh shard) error { _, err := sh.Apply(ctx, "b", []Write{ok, put("", 1, "v")}); return err })
	add("Apply oversized key", func(sh shard) error {
		_, err := sh.Apply(ctx, "b", []Write{ok, put(strings.Repeat("k", MaxKeySize+1), 1, "v")})
		return err
	})
	add("Apply version 0", func(sh shard) error { _, err := sh.Apply(ctx, "b", []Write{ok, put("k2", 0, "v")}); return err })
	add("Apply unknown condition", func(sh shard) error {
		_, err := sh.Apply(ctx, "b", []Write{ok, cond(put("k2", 1, "v"), CondRewrite+1, 0)})
		return err
	})
	add("Apply empty batch", func(sh shard) error { _, err := sh.Apply(ctx, "b", nil); return err })
	add("Apply batch over MaxBatch", func(sh shard) error { _, err := sh.Apply(ctx, "b", many); return err })
	add("Scan limit 0", func(sh shard) error { _, err := sh.Scan(ctx, "b", ScanOptions{}); return err })
	add("Scan limit -1", func(sh shard) error { _, err := sh.Scan(ctx, "b", ScanOptions{Limit: -1}); return err })
	add("Scan limit over MaxScanLimit", func(sh shard) error {
		_, err := sh.Scan(ctx, "b", ScanOptions{Limit: MaxScanLimit + 1})
		return err
	})
	add("DeletePrefix empty prefix", func(sh shard) error { _, err := sh.DeletePrefix(ctx, "b", nil, 2); return err })
	add("DeletePrefix version 0", func(sh shard) error { _, err := sh.DeletePrefix(ctx, "b", []byte("k"), 0); return err })

	eachShard(t, func(t *testing.T, sh shard) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.call(sh); !errors.Is(err, ErrInvalid) {
					t.Errorf("%s = %v, want ErrInvalid", tt.name, err)
				}
				if n := totalKeys(t, sh); n != 0 {
					t.Errorf("after %s: %d records held, want 0", tt.name, n)
				}
			})
		}
	})
}

// TestInvalidValueSize is store-only: a value one byte over the limit is
// 64 MiB, not worth sending through the wire in every run.
func TestInvalidValueSize(t *testing.T) {
	s := openTestStore(t)
	big := make([]byte, MaxValueSize+1)
	_, err := s.Apply(context.Background(), "b", []Write{put("k", 1, "v"), {Record: Record{Key: []byte("big"), Version: 1, Value: big}}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Apply(value of %d bytes) = %v, want ErrInvalid", len(big), err)
	}
	if n := totalKeys(t, s); n != 0 {
		t.Errorf("after an oversized value: %d records held, want 0", n)
	}
}

// scanFixture writes a prefix of n keys, every tenth one deleted, among keys
// just outside it, and returns the live and all records under the prefix in
// key order.
func scanFixture(t testing.TB, sh shard, bucket, prefix string, n int) (live, all []Record) {
	t.Helper()
	// Neighbours that sort right before and right after the prefix, and
	// keys that share all but the last byte of it.
	last := prefix[len(prefix)-1]
	outside := []string{
		prefix[:len(prefix)-1],
		prefix[:len(prefix)-1] + string(last-1),
		prefix[:len(prefix)-1] + string(last-1) + "\xff\xff",
		prefix[:len(prefix)-1] + string(last+1),
		prefix[:len(prefix)-1] + string(last+1) + "\x00",
		"\x00", "\xff",
	}
	var writes []Write
	for _, k := range outside {
		writes = append(writes, put(k, 1, "outside"))
	}
	// The prefix itself is a key under the prefix.
	keys := []string{prefix}
	for i := range n {
		keys = append(keys, fmt.Sprintf("%s%04d", prefix, i))
	}
	for i, k := range keys {
		w := put(k, uint64(i+1), "value of "+k)
		if i%10 == 3 {
			w = del(k, uint64(i+1))
		}
		writes = append(writes, w)
		all = append(all, w.Record)
		if !w.Tombstone {
			live = append(live, w.Record)
		}
	}
	mustApply(t, sh, bucket, writes...)
	return live, all
}

// TestScanPages pages through a prefix with several page sizes and checks
// that the pages, joined, are the prefix's records in key order.
func TestScanPages(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		const prefix = "user/"
		live, all := scanFixture(t, sh, "scan", prefix, 250)
		for _, limit := range []int{1, 7, 100, len(live) - 1, len(live), len(all), MaxScanLimit} {
			for _, tombs := range []bool{false, true} {
				want := live
				if tombs {
					want = all
				}
				t.Run(fmt.Sprintf("limit %d tombstones %t", limit, tombs), func(t *testing.T) {
					got, pages := scanAll(t, sh, "scan", ScanOptions{Prefix: []byte(prefix), Limit: limit, Tombstones: tombs})
					if !sameRecords(got, want) {
						t.Errorf("Scan(%q, limit %d) pages joined = %v, want %v", prefix, limit, keysOf(got), keysOf(want))
					}
					// A page can end right before tombstones only, so one
					// extra, empty page is allowed.
					if maxPages := (len(want)+limit-1)/limit + 1; pages > maxPages {
						t.Errorf("Scan(%q, limit %d) took %d pages, want at most %d", prefix, limit, pages, maxPages)
					}
				})
			}
		}
	})
}

// TestScanCursor checks where a page starts and ends.
func TestScanCursor(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mustApply(t, sh, "cur",
			put("a", 1, "a"), put("b", 1, "b"), put("b/1", 1, "b1"), del("b/2", 1), put("b/3", 1, "b3"),
			put("b0", 1, "b0"), put("c", 1, "c"))
		tests := []struct {
			name     string
			opts     ScanOptions
			want     []string
			wantMore bool
		}{
			{"no prefix", ScanOptions{Limit: 10}, []string{"a", "b", "b/1", "b/3", "b0", "c"}, false},
			{"no prefix with tombstones", ScanOptions{Limit: 10, Tombstones: true}, []string{"a", "b", "b/1", "b/2", "b/3", "b0", "c"}, false},
			{"prefix", ScanOptions{Prefix: []byte("b/"), Limit: 10}, []string{"b/1", "b/3"}, false},
			{"prefix, full page", ScanOptions{Prefix: []byte("b/"), Limit: 2}, []string{"b/1", "b/3"}, false},
			{"prefix, short page", ScanOptions{Prefix: []byte("b/"), Limit: 1}, []string{"b/1"}, true},
			{"after a held key", ScanOptions{Prefix: []byte("b"), After: []byte("b/1"), Limit: 10}, []string{"b/3", "b0"}, false},
			{"after a deleted key", ScanOptions{Prefix: []byte("b"), After: []byte("b/2"), Limit: 10}, []string{"b/3", "b0"}, false},
			{"after a key never written", ScanOptions{Prefix: []byte("b"), After: []byte("b/10"), Limit: 10}, []string{"b/3", "b0"}, false},
			{"after the last key", ScanOptions{Prefix: []byte("b"), After: []byte("b0"), Limit: 10}, nil, false},
			{"after beyond the prefix", ScanOptions{Prefix: []byte("b"), After: []byte("bz"), Limit: 10}, nil, false},
			{"after the prefix itself", ScanOptions{Prefix: []byte("b"), After: []byte("b"), Limit: 10}, []string{"b/1", "b/3", "b0"}, false},
			{"after before the prefix", ScanOptions{Prefix: []byte("b"), After: []byte("a"), Limit: 10}, []string{"b", "b/1", "b/3", "b0"}, false},
			{"empty after", ScanOptions{Prefix: []byte("b"), After: []byte{}, Limit: 10}, []string{"b", "b/1", "b/3", "b0"}, false},
			{"after before a key outside the prefix", ScanOptions{Prefix: []byte("b"), After: []byte("0"), Limit: 10}, []string{"b", "b/1", "b/3", "b0"}, false},
			{"prefix with no keys", ScanOptions{Prefix: []byte("bb"), Limit: 10}, nil, false},
			{"prefix past every key", ScanOptions{Prefix: []byte("z"), Limit: 10}, nil, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				page, err := sh.Scan(ctx, "cur", tt.opts)
				if err != nil {
					t.Fatalf("Scan(prefix %q after %q) = %v, want nil", tt.opts.Prefix, tt.opts.After, err)
				}
				if got := keysOf(page.Records); !slices.Equal(got, tt.want) {
					t.Errorf("Scan(prefix %q after %q) = %q, want %q", tt.opts.Prefix, tt.opts.After, got, tt.want)
				}
				if page.More != tt.wantMore {
					t.Errorf("Scan(prefix %q after %q).More = %t, want %t", tt.opts.Prefix, tt.opts.After, page.More, tt.wantMore)
				}
				for _, r := range page.Records {
					if r.Tombstone != (string(r.Key) == "b/2") || (r.Tombstone && r.Value != nil) {
						t.Errorf("Scan(prefix %q) returned %s", tt.opts.Prefix, show(r))
					}
				}
			})
		}
		t.Run("bucket never written", func(t *testing.T) {
			page, err := sh.Scan(ctx, "nothing", ScanOptions{Limit: 10})
			if err != nil || len(page.Records) != 0 || page.More {
				t.Errorf("Scan(\"nothing\") = %v, %v, want an empty page", showAll(page.Records), err)
			}
		})
	})
}

// TestDeletePrefix checks which records DeletePrefix tombstones and that a
// second run finds nothing more to do.
func TestDeletePrefix(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		const bucket = "dp"
		// More records than one of DeletePrefix's pages.
		const n = 2500
		var writes []Write
		for i := range n {
			writes = append(writes, put(fmt.Sprintf("p/%05d", i), 10, "old"))
		}
		writes = append(writes,
			put("p/newer", 50, "newer than the delete"),
			put("p/same", 20, "as new as the delete"),
			del("p/gone", 5),
			put("p", 10, "the prefix without its slash"),
			put("p.", 10, "just before"), put("p0", 10, "just after"),
			put("q/1", 10, "another prefix"),
		)
		mustApply(t, sh, bucket, writes...)

		n1, err := sh.DeletePrefix(ctx, bucket, []byte("p/"), 20)
		if err != nil || n1 != n {
			t.Fatalf("DeletePrefix(%q, 20) = %d, %v, want %d, nil", "p/", n1, err, n)
		}
		want := map[string]Record{
			"p/00000":  {Key: []byte("p/00000"), Version: 20, Tombstone: true},
			"p/01234":  {Key: []byte("p/01234"), Version: 20, Tombstone: true},
			"p/02499":  {Key: []byte("p/02499"), Version: 20, Tombstone: true},
			"p/newer":  put("p/newer", 50, "newer than the delete").Record,
			"p/same":   put("p/same", 20, "as new as the delete").Record,
			"p/gone":   del("p/gone", 5).Record,
			"p":        put("p", 10, "the prefix without its slash").Record,
			"p.":       put("p.", 10, "just before").Record,
			"p0":       put("p0", 10, "just after").Record,
			"q/1":      put("q/1", 10, "another prefix").Record,
			"p/absent": {},
		}
		for k, w := range want {
			got, err := sh.Get(ctx, bucket, []byte(k))
			if w.Version == 0 {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%q) = %s, %v, want ErrNotFound", k, show(got), err)
				}
				continue
			}
			if err != nil || !sameRecord(got, w) {
				t.Errorf("Get(%q) = %s, %v, want %s", k, show(got), err, show(w))
			}
		}
		livePage, err := sh.Scan(ctx, bucket, ScanOptions{Prefix: []byte("p/"), Limit: MaxScanLimit})
		if got := keysOf(livePage.Records); err != nil || !slices.Equal(got, []string{"p/newer", "p/same"}) {
			t.Errorf("Scan(%q) after DeletePrefix = %q, %v, want [p/newer p/same]", "p/", got, err)
		}

		if n2, err := sh.DeletePrefix(ctx, bucket, []byte("p/"), 20); err != nil || n2 != 0 {
			t.Errorf("DeletePrefix(%q, 20) again = %d, %v, want 0, nil", "p/", n2, err)
		}
		if n3, err := sh.DeletePrefix(ctx, bucket, []byte("p/"), 60); err != nil || n3 != 2 {
			t.Errorf("DeletePrefix(%q, 60) = %d, %v, want 2, nil", "p/", n3, err)
		}
		if n4, err := sh.DeletePrefix(ctx, bucket, []byte("none/"), 60); err != nil || n4 != 0 {
			t.Errorf("DeletePrefix(%q, 60) = %d, %v, want 0, nil", "none/", n4, err)
		}
		if n5, err := sh.DeletePrefix(ctx, "empty", []byte("p/"), 60); err != nil || n5 != 0 {
			t.Errorf("DeletePrefix(bucket never written) = %d, %v, want 0, nil", n5, err)
		}
		if got := totalKeys(t, sh); got != n+7 {
			t.Errorf("records held = %d, want %d (tombstones included)", got, n+7)
		}
	})
}

// TestApplyConcurrent has many goroutines write at once, to their own keys
// and to one shared key, and checks every result.
func TestApplyConcurrent(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		const writers, perWriter = 32, 20
		var wg sync.WaitGroup
		start := make(chan struct{})
		applied := make([]bool, writers)
		for g := range writers {
			wg.Go(func() {
				<-start
				for i := range perWriter {
					k := fmt.Sprintf("w%02d/%03d", g, i)
					res, err := sh.Apply(ctx, "conc", []Write{put(k, uint64(i+1), k)})
					if err != nil || len(res) != 1 || res[0] != (Result{Outcome: Applied}) {
						t.Errorf("Apply(%q) = %+v, %v, want applied on nothing", k, res, err)
					}
				}
				v := uint64(g + 1)
				res, err := sh.Apply(ctx, "conc", []Write{put("shared", v, fmt.Sprint(v))})
				if err != nil {
					t.Errorf("Apply(shared, v%d) = %v", v, err)
					return
				}
				switch r := res[0]; r.Outcome {
				case Applied:
					applied[g] = true
					if r.PrevVersion >= v {
						t.Errorf("Apply(shared, v%d) = %+v: applied over a version not older", v, r)
					}
				case Stale:
					if r.PrevVersion < v {
						t.Errorf("Apply(shared, v%d) = %+v: stale against an older version", v, r)
					}
				default:
					t.Errorf("Apply(shared, v%d) = %+v, want applied or stale", v, r)
				}
			})
		}
		close(start)
		wg.Wait()
		if !applied[writers-1] {
			t.Errorf("Apply(shared, v%d) was not applied; nothing newer was ever written", writers)
		}
		got, err := sh.Get(ctx, "conc", []byte("shared"))
		if want := put("shared", writers, fmt.Sprint(writers)).Record; err != nil || !sameRecord(got, want) {
			t.Errorf("Get(shared) = %s, %v, want %s", show(got), err, show(want))
		}
		recs, _ := scanAll(t, sh, "conc", ScanOptions{Prefix: []byte("w"), Limit: 100})
		if len(recs) != writers*perWriter {
			t.Errorf("Scan(w) found %d records, want %d", len(recs), writers*perWriter)
		}
		for _, r := range recs {
			if string(r.Value) != string(r.Key) {
				t.Errorf("Scan(w) returned %s, want its key as value", show(r))
			}
		}
	})
}

// TestGroupCommit checks that writers arriving while a commit runs share the
// next one. A slow fsync is what makes them arrive in time, and how slow it
// is depends on the disk and the scheduler, so the test makes the first
// commit of each round slow itself: the observer, which runs on the
// committer before it answers, holds it until the other writers are queued.
// The rounds are a backstop should that wait ever run out.
func TestGroupCommit(t *testing.T) {
	const writers, perWriter, perApply = 32, 10, 2
	var commits, committed, maxWrites atomic.Int64
	var hold atomic.Bool // the next commit waits for writers to queue
	var s *Store
	s = openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{
		Observer: func(_ time.Duration, writes int) {
			commits.Add(1)
			committed.Add(int64(writes))
			for {
				m := maxWrites.Load()
				if int64(writes) <= m || maxWrites.CompareAndSwap(m, int64(writes)) {
					break
				}
			}
			if hold.CompareAndSwap(true, false) {
				for i := 0; i < 2000 && len(s.commits) < writers-1; i++ {
					time.Sleep(time.Millisecond)
				}
			}
		},
	})
	ctx := context.Background()
	// Each Apply carries two writes, so a commit of more than two carried
	// more than one Apply.
	applies := 0
	for round := 0; round < 5 && maxWrites.Load() <= perApply; round++ {
		hold.Store(true)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range writers {
			wg.Go(func() {
				<-start
				for i := range perWriter {
					k := fmt.Appendf(nil, "r%d/w%02d/%d", round, g, i)
					ws := []Write{{Record: Record{Key: k, Version: 1, Value: k}}, put(string(k)+"+", 1, "")}
					if res, err := s.Apply(ctx, "gc", ws); err != nil || len(res) != perApply || res[0].Outcome != Applied || res[1].Outcome != Applied {
						t.Errorf("Apply(%q) = %+v, %v, want %d applied", k, res, err, perApply)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		applies += writers * perWriter
	}
	if m := maxWrites.Load(); m <= perApply {
		t.Errorf("largest commit carried %d writes, want more than one Apply's %d with %d concurrent writers", m, perApply, writers)
	}
	// Apply returns after its commit, so the observer has seen every write,
	// each in exactly one commit.
	if got, want := committed.Load(), int64(applies*perApply); got != want {
		t.Errorf("commits carried %d writes in all, want %d", got, want)
	}
	if got := commits.Load(); got > int64(applies) {
		t.Errorf("%d commits for %d applies", got, applies)
	}
	t.Logf("%d applies of %d writes in %d commits, largest %d writes", applies, perApply, commits.Load(), maxWrites.Load())
}

// TestClosed checks that every method fails with ErrClosed after Close, and
// that Close may be called again.
func TestClosed(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	mustApply(t, s, "b", put("k", 1, "v"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "b", []byte("k")); return err }},
		{"Apply", func() error { _, err := s.Apply(ctx, "b", []Write{put("k", 2, "v")}); return err }},
		{"Scan", func() error { _, err := s.Scan(ctx, "b", ScanOptions{Limit: 1}); return err }},
		{"DeletePrefix", func() error { _, err := s.DeletePrefix(ctx, "b", []byte("k"), 3); return err }},
		{"Info", func() error { _, err := s.Info(ctx); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s() after Close = %v, want ErrClosed", tt.name, err)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// TestCloseWhileApplying races Close against writers: each Apply either
// commits (and its write survives a reopen) or fails with ErrClosed.
func TestCloseWhileApplying(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{NoSync: true})
	ctx := context.Background()
	var mu sync.Mutex
	var acked [][]byte // keys whose Apply returned results
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				k := fmt.Appendf(nil, "g%d/%d", g, i)
				_, err := s.Apply(ctx, "b", []Write{{Record: Record{Key: k, Version: 1}}})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Apply(%q) = %v, want nil or ErrClosed", k, err)
					return
				}
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
			}
		})
	}
	// Let the writers get going; how far they get does not matter.
	for i := 0; i < 5000 && totalKeys(t, s) < 50; i++ {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	wg.Wait()

	s2 := openTestStoreAt(t, path, Options{})
	for _, k := range acked {
		if _, err := s2.Get(ctx, "b", k); err != nil {
			t.Errorf("Get(%q) after reopen = %v, want the acknowledged write", k, err)
		}
	}
}

// TestOpenLocked checks that a second Open of a held file gives up after
// LockTimeout with ErrLocked, and succeeds once the file is released.
func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard.db")
	s := openTestStoreAt(t, path, Options{})
	s2, err := Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open(%q) = %v, want ErrLocked", path, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	openTestStoreAt(t, path, Options{LockTimeout: 200 * time.Millisecond})
}

// TestReopen checks that records and the node id survive Close and Open.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nested", "dirs", "shard.db") // Open creates them
	ctx := context.Background()
	s := openTestStoreAt(t, path, Options{})
	id := s.NodeID()
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("NodeID() = %q, want 16 hex digits", id)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	want := []Record{put("a", 3, "a3").Record, del("b", 4).Record, put("c", 5, "").Record}
	for _, r := range want {
		mustApply(t, s, "keep", Write{Record: r})
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	s = openTestStoreAt(t, path, Options{})
	if got := s.NodeID(); got != id {
		t.Errorf("NodeID() after reopen = %q, want %q", got, id)
	}
	page, err := s.Scan(ctx, "keep", ScanOptions{Limit: 10, Tombstones: true})
	if err != nil || !sameRecords(page.Records, want) {
		t.Errorf("Scan(keep) after reopen = %s, %v, want %s", showAll(page.Records), err, showAll(want))
	}
	if other := openTestStore(t); other.NodeID() == id {
		t.Errorf("two files have the same NodeID() %q", id)
	}
}

// TestInfo checks the shard's description.
func TestInfo(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mustApply(t, sh, "one", put("a", 1, "a"), del("b", 1))
		mustApply(t, sh, "two", put("a", 1, "a"))
		info, err := sh.Info(ctx)
		if err != nil {
			t.Fatalf("Info() = %v, want nil", err)
		}
		if want := map[string]int64{"one": 2, "two": 1}; !maps.Equal(info.Keys, want) {
			t.Errorf("Info().Keys = %v, want %v", info.Keys, want)
		}
		if info.SizeBytes <= 0 || info.NodeID == "" || info.Path == "" {
			t.Errorf("Info() = %+v, want a size, a node id and a path", info)
		}
		if err := sh.Ping(ctx); err != nil {
			t.Errorf("Ping() = %v, want nil", err)
		}
	})
}

// TestBuffersNotRetained checks that the store copies what it is given and
// what it returns: callers reuse their buffers.
func TestBuffersNotRetained(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	key, val := []byte("key"), []byte("value")
	mustApply(t, s, "b", Write{Record: Record{Key: key, Version: 1, Value: val}})
	copy(key, "XXX")
	copy(val, "XXXXX")
	got, err := s.Get(ctx, "b", []byte("key"))
	if want := put("key", 1, "value").Record; err != nil || !sameRecord(got, want) {
		t.Fatalf("Get(%q) = %s, %v, want %s", "key", show(got), err, show(want))
	}
	copy(got.Value, "YYYYY")
	page, err := s.Scan(ctx, "b", ScanOptions{Limit: 1})
	if err != nil || len(page.Records) != 1 || string(page.Records[0].Value) != "value" {
		t.Fatalf("Scan() after changing a returned value = %s, %v, want the stored value", showAll(page.Records), err)
	}
	copy(page.Records[0].Key, "ZZZ")
	if got, err := s.Get(ctx, "b", []byte("key")); err != nil || string(got.Value) != "value" {
		t.Errorf("Get(%q) after changing a scanned key = %s, %v", "key", show(got), err)
	}
}

// Benchmarks. The store's figures are per operation on a durable file (fsync
// on every commit) unless the name says otherwise.

func BenchmarkStorePut(b *testing.B) {
	s := openTestStore(b)
	ctx := context.Background()
	val := bytes.Repeat([]byte("v"), 128)
	writes := make([]Write, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		writes[0] = Write{Record: Record{Key: fmt.Appendf(nil, "key%09d", i), Version: 1, Value: val}}
		if _, err := s.Apply(ctx, "bench", writes); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStorePutParallel(b *testing.B) {
	benchWriters(b, bytes.Repeat([]byte("v"), 128), false, func(n int64) []byte { return fmt.Appendf(nil, "key%09d", n) })
}

// benchKeys fills bucket "bench" with n keys of valueSize bytes in one batch
// and returns the keys.
func benchKeys(b *testing.B, sh shard, n, valueSize int) [][]byte {
	b.Helper()
	keys := make([][]byte, n)
	writes := make([]Write, n)
	val := bytes.Repeat([]byte("v"), valueSize)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key%06d", i)
		writes[i] = Write{Record: Record{Key: keys[i], Version: 1, Value: val}}
	}
	mustApply(b, sh, "bench", writes...)
	return keys
}

// BenchmarkStorePut4KWriters: 32 writers of 4 KB values, as in the suite's
// durable-PUT row. "callers" marks each writer as the HTTP handler marks a
// connection, which lets a commit wait for the writers of the commits before
// it to come back; "anonymous" does not. Compare writes/commit and ns/op.
func BenchmarkStorePut4KWriters(b *testing.B) {
	val := bytes.Repeat([]byte("0123456789abcdef"), 256)
	overwrite := func(n int64) []byte { return fmt.Appendf(nil, "key%05d", n%10000) }
	b.Run("anonymous", func(b *testing.B) { benchWriters(b, val, false, overwrite) })
	b.Run("callers", func(b *testing.B) { benchWriters(b, val, true, overwrite) })
}

// benchWriters runs 32 writers (16 per CPU on two, as behind a router),
// each applying one write of val at a time under key(n) at version n, and
// reports writes per commit. named marks each writer as a caller, as the
// HTTP handler marks a connection.
func benchWriters(b *testing.B, val []byte, named bool, key func(n int64) []byte) {
	var commits atomic.Int64
	s := openTestStoreAt(b, filepath.Join(b.TempDir(), "shard.db"), Options{
		Observer: func(time.Duration, int) { commits.Add(1) },
	})
	var next, writer atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		if named {
			ctx = WithCaller(ctx, fmt.Sprint(writer.Add(1)))
		}
		writes := make([]Write, 1)
		for pb.Next() {
			n := next.Add(1)
			writes[0] = Write{Record: Record{Key: key(n), Version: uint64(n), Value: val}}
			if _, err := s.Apply(ctx, "bench", writes); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if n := commits.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "writes/commit")
	}
}

func BenchmarkStoreGet(b *testing.B) {
	s := openTestStore(b)
	keys := benchKeys(b, s, 10000, 4096)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// A stride coprime with the key count visits every key, out of order.
		if _, err := s.Get(ctx, "bench", keys[(i*7919)%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreScan(b *testing.B) {
	s := openTestStore(b)
	keys := benchKeys(b, s, 10000, 128)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		after := keys[(i*7919)%(len(keys)-100)]
		page, err := s.Scan(ctx, "bench", ScanOptions{Prefix: []byte("key"), After: after, Limit: 100})
		if err != nil || len(page.Records) != 100 {
			b.Fatalf("Scan(after %q) = %d records, %v, want 100", after, len(page.Records), err)
		}
	}
}

// TestCommitWriters: the committer's count of recent writers is the distinct
// named callers of the two commits before the current one; anonymous writes
// and callers older than that do not count.
func TestCommitWriters(t *testing.T) {
	w := writers{seen: make(map[string]uint64)}
	commit := func(callers ...string) (want, joined int) {
		want = w.begin()
		for _, c := range callers {
			joined += w.join(c)
		}
		return want, joined
	}
	steps := []struct {
		callers      []string
		want, joined int
	}{
		{[]string{"a", "b", "a", ""}, 0, 2}, // a twice counts once; anonymous never
		{[]string{"c"}, 2, 1},               // a and b are expected back
		{[]string{"a"}, 3, 1},               // a, b, c wrote within the last two commits
		{nil, 2, 0},                         // a and c; b last wrote three commits ago
		{[]string{""}, 1, 0},                // a only; anonymous writes add nobody
		{nil, 0, 0},                         // nobody left to wait for
	}
	for i, s := range steps {
		want, joined := commit(s.callers...)
		if want != s.want || joined != s.joined {
			t.Errorf("commit %d with %q: expected %d writers back, %d joined; want %d and %d", i+1, s.callers, want, joined, s.want, s.joined)
		}
	}
	if len(w.seen) != 0 {
		t.Errorf("writers still tracked after they stopped: %v", w.seen)
	}
}
