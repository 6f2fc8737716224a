package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/router/maintenance"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Snapshot lets the fault switch cover backups too.
func (f *faultyShard) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Shard.(maintenance.Snapshotter).Snapshot(ctx)
}

type bucketRecord struct {
	bucket string
	rec    backup.Record
}

// fetchBackup reads GET /api/v1/admin/backup and returns the stream's
// info and every record, per shard.
func fetchBackup(t testing.TB, url string) (backup.Info, map[string][]bucketRecord) {
	t.Helper()
	resp, err := http.Get(url + "/api/v1/admin/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != backup.ContentType {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET backup = %d %s %s, want 200 %s", resp.StatusCode, resp.Header.Get("Content-Type"), b, backup.ContentType)
	}
	sr, err := backup.NewStreamReader(resp.Body)
	if err != nil {
		t.Fatalf("backup stream: %v", err)
	}
	out := map[string][]bucketRecord{}
	for {
		name, data, err := sr.NextSection()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("backup stream: %v", err)
		}
		st, err := backup.ReadSnapshot(data, name, func(b string, r backup.Record) error {
			out[name] = append(out[name], bucketRecord{b, r})
			return nil
		})
		if err != nil {
			t.Fatalf("backup stream section %s: %v", name, err)
		}
		if data.Records() != st.Records {
			t.Errorf("section %s: end frame says %d records, read %d", name, data.Records(), st.Records)
		}
	}
	if err := sr.End(); err != nil {
		t.Fatalf("backup stream end: %v", err)
	}
	return sr.Info(), out
}

// restoreBody writes records as a restore request body.
func restoreBody(t testing.TB, recs []bucketRecord) []byte {
	t.Helper()
	byBucket := map[string][]backup.Record{}
	var order []string
	for _, br := range recs {
		if _, ok := byBucket[br.bucket]; !ok {
			order = append(order, br.bucket)
		}
		byBucket[br.bucket] = append(byBucket[br.bucket], br.rec)
	}
	var buf bytes.Buffer
	sw := backup.NewSnapshotWriter(&buf)
	for _, b := range order {
		sw.Bucket(b)
		for _, r := range byBucket[b] {
			sw.Record(&r)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func postRestore(t testing.TB, url string, body []byte, dry bool) (response, maintenance.RestoreReport) {
	t.Helper()
	q := ""
	if dry {
		q = "?dry_run=true"
	}
	r := call(t, "POST", url+"/api/v1/admin/restore"+q, body, "Content-Type", backup.RecordsContentType)
	var rep maintenance.RestoreReport
	if r.Status == 200 {
		if err := json.Unmarshal(r.Raw, &rep); err != nil {
			t.Fatalf("restore answer %s: %v", r.Raw, err)
		}
	}
	return r, rep
}

// totalRecords counts the records of every store of a cluster, per bucket.
func totalRecords(t testing.TB, tc *testCluster) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, st := range tc.stores {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for b, n := range info.Keys {
			if b != storage.ClusterBucket {
				out[b] += n
			}
		}
	}
	return out
}

func TestBackupAndRestore(t *testing.T) {
	src := newTestCluster(t, clusterOpts{shards: 3})
	src.createTopic(t, "docs")
	for i := range 40 {
		src.putContext(t, "docs", fmt.Sprintf("c%02d", i), map[string]any{"content": map[string]any{"text": fmt.Sprint("text ", i), "embeddings": []float32{1, float32(i)}}})
	}
	must(t, call(t, "DELETE", src.URL+"/api/v1/topics/docs/contexts/c07", nil), 204, "delete c07")

	info, sections := fetchBackup(t, src.URL)
	if info.Mode != "sharded" || len(info.Shards) != 3 || info.Epoch == 0 {
		t.Errorf("backup info = %+v, want 3 shards of a sharded cluster with an epoch", info)
	}
	var all []bucketRecord
	n := map[string]int{}
	for _, name := range info.Shards {
		for _, br := range sections[name] {
			all = append(all, br)
			n[br.bucket]++
			if br.bucket == storage.ClusterBucket {
				t.Errorf("backup holds the cluster map")
			}
		}
	}
	// 1 topic; 40 contexts (one a tombstone); 40 vectors (one a tombstone).
	if n[schema.BucketTopics] != 1 || n[schema.BucketContexts] != 40 || n[schema.BucketVectors] != 40 {
		t.Errorf("backup records per bucket = %v, want 1 topic, 40 contexts, 40 vectors", n)
	}

	// Restore into a cluster of another Shape.
	dst := newTestCluster(t, clusterOpts{shards: 2, replicas: 2})
	body := restoreBody(t, all)
	r, dry := postRestore(t, dst.URL, body, true)
	if r.Status != 200 || !dry.DryRun || dry.Applied != int64(len(all)) || dry.Skipped != 0 {
		t.Fatalf("dry run = %d %s, want all %d to apply", r.Status, r.Raw, len(all))
	}
	if got := totalRecords(t, dst); got[schema.BucketContexts] != 0 {
		t.Fatalf("after a dry run the target holds %v, want nothing", got)
	}
	r, rep := postRestore(t, dst.URL, body, false)
	if r.Status != 200 || rep.Applied != int64(len(all)) || rep.Buckets[schema.BucketContexts].Applied != 40 {
		t.Fatalf("restore = %d %s, want all %d applied", r.Status, r.Raw, len(all))
	}
	for i := range 40 {
		id := fmt.Sprintf("c%02d", i)
		got := call(t, "GET", dst.URL+"/api/v1/topics/docs/contexts/"+id, nil)
		want := call(t, "GET", src.URL+"/api/v1/topics/docs/contexts/"+id, nil)
		if got.Status != want.Status || !bytes.Equal(got.Raw, want.Raw) || got.Header.Get("ETag") != want.Header.Get("ETag") {
			t.Errorf("GET %s after restore = %d %s %s, want %d %s %s", id, got.Status, got.Header.Get("ETag"), got.Raw, want.Status, want.Header.Get("ETag"), want.Raw)
		}
	}
	if got := searchFor(t, dst, "docs", "", map[string]any{"embedding": []float32{1, 39}, "k": 1}); len(got) != 1 || got[0].Metadata.ID != "c39" {
		t.Errorf("search after restore = %+v, want c39", got)
	}

	// Again: nothing is newer, nothing changes.
	if r, rep := postRestore(t, dst.URL, body, false); r.Status != 200 || rep.Applied != 0 || rep.Skipped != int64(len(all)) {
		t.Errorf("second restore = %d %s, want all skipped", r.Status, r.Raw)
	}
	// Into newer data: the newer value stays.
	dst.putContext(t, "docs", "c01", map[string]any{"content": map[string]any{"text": "newer"}})
	if r, dry := postRestore(t, dst.URL, body, true); r.Status != 200 || dry.Applied != 0 {
		t.Errorf("dry run over restored data = %d %s, want nothing to apply", r.Status, r.Raw)
	}
	postRestore(t, dst.URL, body, false)
	if d := documentOf(t, dst, "docs", "c01"); d.Content.Text != "newer" {
		t.Errorf("c01 after restoring an older copy = %q, want newer", d.Content.Text)
	}
}

func TestRestoreRefusesBadBodies(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	recs := []bucketRecord{
		{schema.BucketTopics, backup.Record{Key: []byte("t"), Version: 1 << 40, Value: []byte(`{"name":"t","created_at":"2024-01-01T00:00:00Z"}`)}},
		{schema.BucketTopics, backup.Record{Key: []byte("u"), Version: 1 << 40, Value: []byte(`{"name":"u","created_at":"2024-01-01T00:00:00Z"}`)}},
	}
	good := restoreBody(t, recs)
	for _, tt := range []struct {
		name   string
		body   []byte
		ct     string
		status int
		msg    string
	}{
		{"truncated", good[:len(good)-2], backup.RecordsContentType, 400, "truncated"},
		{"corrupt", append([]byte("NOTASNAP"), good[8:]...), backup.RecordsContentType, 400, "corrupt"},
		{"cluster map", restoreBody(t, []bucketRecord{{storage.ClusterBucket, backup.Record{Key: []byte("map"), Version: 99, Value: []byte("{}")}}}), backup.RecordsContentType, 400, "cluster map"},
		{"json", []byte(`{}`), "application/json", 415, "Content-Type"},
	} {
		r := call(t, "POST", tc.URL+"/api/v1/admin/restore", tt.body, "Content-Type", tt.ct)
		if r.Status != tt.status || !strings.Contains(r.errMessage(), tt.msg) {
			t.Errorf("%s: restore = %d %s, want %d about %q", tt.name, r.Status, r.Raw, tt.status, tt.msg)
		}
	}
	if got := totalRecords(t, tc); got[schema.BucketTopics] != 0 {
		t.Errorf("after refused restores the cluster holds %v, want no topic", got)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/admin/restore?dry_run=maybe", good, "Content-Type", backup.RecordsContentType); r.Status != 400 {
		t.Errorf("dry_run=maybe = %d, want 400", r.Status)
	}
	if r, rep := postRestore(t, tc.URL, good, false); r.Status != 200 || rep.Applied != 2 {
		t.Errorf("restore of the good body = %d %s, want 2 applied", r.Status, r.Raw)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/u", nil), 200, "GET restored topic")
}

func TestBackupNeedsEveryShard(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3})
	tc.createTopic(t, "t")
	tc.faults[1].down.Store(true)
	waitFor(t, "shard marked down", func() bool { return !tc.router.topo.Load().Cur.Ring.Nodes()[1].Up() })
	r := call(t, "GET", tc.URL+"/api/v1/admin/backup", nil)
	if r.Status != 503 || r.errCode() != "unavailable" || !strings.Contains(r.errMessage(), "sh-2") {
		t.Errorf("backup with a shard down = %d %s, want 503 naming sh-2", r.Status, r.Raw)
	}
	// With replicas, every key is still readable: the backup goes on
	// without the down shard.
	rep := newTestCluster(t, clusterOpts{shards: 3, replicas: 3})
	rep.createTopic(t, "t")
	rep.faults[2].down.Store(true)
	waitFor(t, "shard marked down", func() bool { return !rep.router.topo.Load().Cur.Ring.Nodes()[2].Up() })
	info, sections := fetchBackup(t, rep.URL)
	if !slices.Equal(info.Shards, []string{"sh-1", "sh-2"}) || len(sections["sh-1"]) != 1 {
		t.Errorf("backup with one of 3 replicas down: shards %v, %d records on sh-1; want sh-1, sh-2 with the topic", info.Shards, len(sections["sh-1"]))
	}
}
