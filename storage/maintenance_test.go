package storage

import (
	"context"
	"errors"
	"testing"
)

func TestMultiGet(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mustApply(t, sh, "b", put("a", 5, "va"), del("d", 7))
		got, err := sh.MultiGet(ctx, "b", [][]byte{[]byte("a"), []byte("missing"), []byte("d")})
		if err != nil {
			t.Fatalf("MultiGet: %v", err)
		}
		want := []Record{
			{Key: []byte("a"), Version: 5, Value: []byte("va")},
			{Key: []byte("missing")},
			{Key: []byte("d"), Version: 7, Tombstone: true},
		}
		if !sameRecords(got, want) {
			t.Errorf("MultiGet = %s, want %s", showAll(got), showAll(want))
		}
		if _, err := sh.MultiGet(ctx, "b", nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("MultiGet(no keys) = %v, want ErrInvalid", err)
		}
		if got, err := sh.MultiGet(ctx, "never", [][]byte{[]byte("a")}); err != nil || got[0].Version != 0 {
			t.Errorf("MultiGet on an unused bucket = %v, %v; want one empty record", got, err)
		}
	})
}

func TestPurge(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mustApply(t, sh, "b", put("old", 5, "x"), put("new", 9, "y"), del("tomb", 4))
		n, err := sh.Purge(ctx, "b", []Record{
			{Key: []byte("old"), Version: 5},  // held 5 <= 5: removed
			{Key: []byte("new"), Version: 8},  // held 9 > 8: kept (a newer write wins)
			{Key: []byte("tomb"), Version: 6}, // held 4 <= 6: removed
			{Key: []byte("absent"), Version: 6},
		})
		if err != nil || n != 2 {
			t.Fatalf("Purge = %d, %v; want 2, nil", n, err)
		}
		for key, wantFound := range map[string]bool{"old": false, "new": true, "tomb": false} {
			_, err := sh.Get(ctx, "b", []byte(key))
			if found := err == nil; found != wantFound {
				t.Errorf("Get(%q) after purge: found=%v (%v), want %v", key, found, err, wantFound)
			}
		}
		// A purged key can be written again at any version: nothing remembers it.
		if res := mustApply(t, sh, "b", put("old", 1, "again")); res[0].Outcome != Applied || res[0].PrevVersion != 0 {
			t.Errorf("write after purge = %+v, want Applied with nothing held", res[0])
		}
	})
}

func TestScanKeysOnly(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		mustApply(t, sh, "b", put("a", 1, "value"), del("b", 2))
		p, err := sh.Scan(context.Background(), "b", ScanOptions{Limit: 10, Tombstones: true, KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		want := []Record{{Key: []byte("a"), Version: 1}, {Key: []byte("b"), Version: 2, Tombstone: true}}
		if !sameRecords(p.Records, want) {
			t.Errorf("keys-only scan = %s, want %s", showAll(p.Records), showAll(want))
		}
	})
}

func TestCondExact(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		if r := mustApply(t, sh, "b", cond(put("k", 3, "v"), CondExact, 0)); r[0].Outcome != Applied {
			t.Errorf("CondExact 0 on absent = %v, want applied", r[0].Outcome)
		}
		mustApply(t, sh, "b", del("k", 4))
		if r := mustApply(t, sh, "b", cond(put("k", 5, "v"), CondExact, 3)); r[0].Outcome != Conflict || r[0].PrevVersion != 4 {
			t.Errorf("CondExact 3 on tombstone@4 = %+v, want conflict with prev 4", r[0])
		}
		if r := mustApply(t, sh, "b", cond(put("k", 5, "v"), CondExact, 4)); r[0].Outcome != Applied {
			t.Errorf("CondExact 4 on tombstone@4 = %v, want applied", r[0].Outcome)
		}
	})
}

// TestEpochFencing: once a shard holds cluster map epoch N, writes sent
// under an older epoch are refused and change nothing; writes under N or
// without an epoch, and map writes themselves, are accepted.
func TestEpochFencing(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		mapAt := func(e uint64) Write {
			return Write{Record: Record{Key: []byte(MapKey), Version: e, Value: []byte(`{}`)}}
		}
		mustApply(t, sh, ClusterBucket, mapAt(3))
		if h, err := sh.Health(ctx); err != nil || h.Epoch != 3 || h.Status != "ok" || h.NodeID == "" {
			t.Errorf("Health = %+v, %v; want epoch 3", h, err)
		}
		_, err := sh.Apply(WithEpoch(ctx, 2), "b", []Write{put("k", 1, "v")})
		if !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("Apply under epoch 2 = %v, want ErrStaleEpoch", err)
		}
		if _, err := sh.Get(ctx, "b", []byte("k")); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after a refused write = %v, want ErrNotFound", err)
		}
		if _, err := sh.DeletePrefix(WithEpoch(ctx, 2), "b", []byte("k"), 9); !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("DeletePrefix under epoch 2 = %v, want ErrStaleEpoch", err)
		}
		for _, c := range []context.Context{WithEpoch(ctx, 3), WithEpoch(ctx, 4), ctx} {
			if _, err := sh.Apply(c, "b", []Write{put("k", 1, "v")}); err != nil {
				t.Errorf("Apply under a current or newer epoch = %v", err)
			}
		}
		if _, err := sh.Apply(WithEpoch(ctx, 1), ClusterBucket, []Write{mapAt(4)}); err != nil {
			t.Errorf("map write under an old epoch = %v; map writes are never fenced", err)
		}
		if h, _ := sh.Health(ctx); h.Epoch != 4 {
			t.Errorf("epoch after map write = %d, want 4", h.Epoch)
		}
	})
}

func TestEpochSurvivesReopen(t *testing.T) {
	path := t.TempDir() + "/s.db"
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(context.Background(), ClusterBucket, []Write{{Record: Record{Key: []byte(MapKey), Version: 7, Value: []byte(`{}`)}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Epoch() != 7 {
		t.Errorf("Epoch after reopen = %d, want 7", s.Epoch())
	}
}

func TestScanValueLimit(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		mustApply(t, sh, "b", put("a", 1, "0123456789"), put("b", 2, "0123"), del("c", 3))
		p, err := sh.Scan(context.Background(), "b", ScanOptions{Limit: 10, Tombstones: true, ValueLimit: 4})
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			value     string
			truncated bool
		}{{"0123", true}, {"0123", false}, {"", false}}
		if len(p.Records) != len(want) {
			t.Fatalf("scan = %s, want %d records", showAll(p.Records), len(want))
		}
		for i, w := range want {
			if r := p.Records[i]; string(r.Value) != w.value || r.Truncated != w.truncated {
				t.Errorf("record %d = %q truncated=%v, want %q truncated=%v", i, r.Value, r.Truncated, w.value, w.truncated)
			}
		}
		w := put("d", 4, "x")
		w.Truncated = true
		if _, err := sh.Apply(context.Background(), "b", []Write{w}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply of a truncated value = %v, want ErrInvalid", err)
		}
	})
}
