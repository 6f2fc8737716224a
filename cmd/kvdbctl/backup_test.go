package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
)

type bucketKey struct{ bucket, key string }

// archiveRecords reads every record of an archive, the newest version of
// each key (with replicas, a key is in several sections).
func archiveRecords(t testing.TB, path string) (map[bucketKey]backup.Record, *backup.Manifest) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[bucketKey]backup.Record{}
	m, err := backup.ReadArchive(f, func(_, bucket string, rec backup.Record) error {
		k := bucketKey{bucket, string(rec.Key)}
		if old, ok := out[k]; !ok || rec.Version > old.Version {
			out[k] = rec
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read archive %s: %v", path, err)
	}
	return out, m
}

// storeRecords reads every record a store holds (tombstones included),
// but the cluster map.
func storeRecords(t testing.TB, st *storage.Store) map[bucketKey]storage.Record {
	t.Helper()
	var buf bytes.Buffer
	if _, err := st.WriteSnapshot(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	out := map[bucketKey]storage.Record{}
	if _, err := backup.ReadSnapshot(&buf, "store", func(b string, r backup.Record) error {
		out[bucketKey{b, string(r.Key)}] = storage.Record{Key: r.Key, Version: r.Version, Tombstone: r.Tombstone, Value: r.Value}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func countAll(t testing.TB, tc *testCluster) int {
	n := 0
	for _, st := range tc.stores {
		n += len(storeRecords(t, st))
	}
	return n
}

// TestBackupRestoreAcrossShapes is the test: load data into three
// shards, back up under a write load, restore into a two-shard cluster,
// and compare every record; a truncated and a corrupted archive are
// refused with a clear error and restore nothing.
func TestBackupRestoreAcrossShapes(t *testing.T) {
	ctx := context.Background()
	src := newCluster(t, 3, 1, router.LLMConfig{})
	c, _ := client.New(src.URL)
	for _, topic := range []string{"alpha", "beta", "gamma"} {
		if _, err := c.CreateTopic(ctx, client.Topic{Name: topic}); err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			doc := client.Document{Content: client.Content{Text: fmt.Sprintf("%s %d", topic, i), Embeddings: []float32{float32(i), 1}}}
			if i%10 == 0 {
				doc.Metadata.TTLSeconds = 3600
			}
			if _, err := c.PutContext(ctx, topic, fmt.Sprintf("c%03d", i), doc, nil); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 100; i += 7 {
			c.DeleteContext(ctx, topic, fmt.Sprintf("c%03d", i), nil)
		}
	}
	loaded := countAll(t, src)

	// A write load runs all through the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, failures atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load-%d-%d", w, i%50)
				if _, err := c.PutContext(ctx, "alpha", id, client.Document{Content: client.Content{Text: fmt.Sprint("write ", i)}}, nil); err != nil {
					failures.Add(1)
				}
				writes.Add(1)
			}
		})
	}
	waitFor(t, "the write load under way", func() bool { return writes.Load() > 20 })
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.kvdb")
	before := writes.Load()
	out := mustCtl(t, src.URL, "", "backup", "-o", file)
	during := writes.Load() - before
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d of %d writes failed while the backup ran, want none", failures.Load(), writes.Load())
	}
	t.Logf("%d writes while the backup ran; %s", during, strings.SplitN(out, "\n", 2)[0])

	recs, m := archiveRecords(t, file)
	if len(m.Sections) != 3 || m.Cluster.Mode != "sharded" || int(m.Records) < loaded {
		t.Fatalf("manifest: %d sections, mode %s, %d records; want 3 sharded sections of at least the %d loaded", len(m.Sections), m.Cluster.Mode, m.Records, loaded)
	}
	if out := mustCtl(t, "", "", "verify", file); !strings.Contains(out, "ok") {
		t.Errorf("verify printed %q", out)
	}

	// Into two shards, each holding every key (replicas = 2).
	dst := newCluster(t, 2, 2, router.LLMConfig{})
	out = mustCtl(t, dst.URL, "", "-o", "json", "restore", file, "-dry-run")
	var dry client.RestoreReport
	json.Unmarshal([]byte(out), &dry)
	if !dry.DryRun || dry.Applied != m.Records || dry.Skipped != 0 {
		t.Errorf("dry run = %+v, want all %d records to apply", dry, m.Records)
	}
	if n := countAll(t, dst); n != 0 {
		t.Fatalf("after a dry run the target holds %d records, want 0", n)
	}
	out = mustCtl(t, dst.URL, "", "-o", "json", "restore", file)
	var rep client.RestoreReport
	json.Unmarshal([]byte(out), &rep)
	if rep.Applied != m.Records {
		t.Errorf("restore = %+v, want all %d records applied", rep, m.Records)
	}
	// Every record of the backup, on every shard of the target, with the
	// same version, flag and value.
	for i, st := range dst.stores {
		held := storeRecords(t, st)
		for k, want := range recs {
			got, ok := held[k]
			if !ok || got.Version != want.Version || got.Tombstone != want.Tombstone || !bytes.Equal(got.Value, want.Value) {
				t.Fatalf("target shard %d: %s %q = %+v (held: %v), want version %d tombstone %v value of %d bytes",
					i+1, k.bucket, k.key, got, ok, want.Version, want.Tombstone, len(want.Value))
			}
		}
		if len(held) != len(recs) {
			t.Errorf("target shard %d holds %d records, the backup %d", i+1, len(held), len(recs))
		}
	}
	// And through the API: the same documents, versions and searches.
	dc, _ := client.New(dst.URL)
	for _, id := range []string{"c001", "c050", "c099"} {
		got, err := dc.GetContext(ctx, "beta", id)
		want, err2 := c.GetContext(ctx, "beta", id)
		if err != nil || err2 != nil || got.ETag != want.ETag || got.Content.Text != want.Content.Text {
			t.Errorf("beta/%s after restore = %+v, %v; want %+v, %v", id, got, err, want, err2)
		}
	}
	if _, err := dc.GetContext(ctx, "beta", "c007"); err == nil {
		t.Errorf("beta/c007 was deleted before the backup, but reads after the restore")
	}
	if res, err := dc.Search(ctx, "gamma", client.SearchRequest{Embedding: []float32{42, 1}, K: 1}); err != nil || len(res) != 1 {
		t.Errorf("search after restore = %v, %v", res, err)
	}

	// Restoring again changes nothing; newer data is never overwritten.
	if _, err := dc.PutContext(ctx, "beta", "c001", client.Document{Content: client.Content{Text: "newer"}}, nil); err != nil {
		t.Fatal(err)
	}
	out = mustCtl(t, dst.URL, "", "-o", "json", "restore", file)
	rep = client.RestoreReport{}
	json.Unmarshal([]byte(out), &rep)
	if rep.Applied != 0 || rep.Skipped != m.Records {
		t.Errorf("second restore = %+v, want all %d skipped", rep, m.Records)
	}
	if d, _ := dc.GetContext(ctx, "beta", "c001"); d == nil || d.Content.Text != "newer" {
		t.Errorf("beta/c001 after restoring an older copy = %+v, want the newer text", d)
	}

	// Damaged archives: refused with a clear error; the target unchanged.
	good, _ := os.ReadFile(file)
	target := newCluster(t, 2, 1, router.LLMConfig{})
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)*2/3], "truncated"},
		{"corrupted", flip(good, len(good)/2), "corrupt"},
		{"empty", nil, "truncated"},
	} {
		bad := filepath.Join(dir, tt.name+".kvdb")
		os.WriteFile(bad, tt.data, 0o600)
		r := ctl(t, target.URL, "", "restore", bad)
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "nothing was sent") {
			t.Errorf("restore of a %s archive = exit %d, stderr %q; want 1, %q and nothing sent", tt.name, r.code, r.stderr, tt.want)
		}
		if r := ctl(t, "", "", "verify", bad); r.code != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("verify of a %s archive = exit %d, stderr %q; want 1 and %q", tt.name, r.code, r.stderr, tt.want)
		}
		if n := countAll(t, target); n != 0 {
			t.Fatalf("after refusing a %s archive the target holds %d records, want 0", tt.name, n)
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0xff
	return b
}
