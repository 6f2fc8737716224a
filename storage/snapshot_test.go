package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-kvdb/go-kvdb/backup"
)

// snapshotter is what both ends offer for backups.
type snapshotter interface {
	Snapshot(ctx context.Context) (io.ReadCloser, error)
}

var (
	_ snapshotter = (*Store)(nil)
	_ snapshotter = (*Client)(nil)
)

type bucketRec struct {
	bucket string
	rec    Record
}

func readSnapshot(t testing.TB, sh snapshotter) []bucketRec {
	t.Helper()
	rc, err := sh.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot() = %v, want nil", err)
	}
	defer rc.Close()
	var got []bucketRec
	if _, err := backup.ReadSnapshot(rc, "snapshot", func(b string, r backup.Record) error {
		got = append(got, bucketRec{b, Record{Key: r.Key, Version: r.Version, Tombstone: r.Tombstone, Value: r.Value}})
		return nil
	}); err != nil {
		t.Fatalf("read snapshot: %v", err)
	}
	return got
}

func TestSnapshot(t *testing.T) {
	s, c, _ := openTestClient(t)
	ctx := context.Background()
	var want []bucketRec
	for _, b := range []string{"contexts", "topics", "vectors"} {
		var ws []Write
		for i := range 30 {
			w := put(fmt.Sprintf("%s-%03d", b, i), uint64(100+i), fmt.Sprintf("value %d", i))
			if i%4 == 3 {
				w = del(string(w.Key), w.Version)
			}
			ws = append(ws, w)
			want = append(want, bucketRec{b, w.Record})
		}
		mustApply(t, s, b, ws...)
	}
	// The cluster map is the shard's own: a backup never carries it.
	mustApply(t, s, ClusterBucket, put(MapKey, 7, `{"epoch":7}`))
	for name, sh := range map[string]snapshotter{"store": s, "wire": c} {
		got := readSnapshot(t, sh)
		if len(got) != len(want) {
			t.Fatalf("%s: snapshot holds %d records, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i].bucket != want[i].bucket || !sameRecord(got[i].rec, want[i].rec) {
				t.Errorf("%s: record %d = %s %s, want %s %s", name, i, got[i].bucket, show(got[i].rec), want[i].bucket, show(want[i].rec))
			}
		}
	}
	// Writes go on while a snapshot is held unread, and it does not see them.
	rc, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	mustApply(t, s, "contexts", put("late", 999, "x"))
	st, err := backup.ReadSnapshot(rc, "snapshot", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != int64(len(want)) && st.Records != int64(len(want))+1 {
		t.Errorf("snapshot taken around a write holds %d records, want %d or %d", st.Records, len(want), len(want)+1)
	}
}

func TestSnapshotBrokenOff(t *testing.T) {
	s := openTestStore(t)
	mustApply(t, s, "contexts", put("a", 1, "x"))
	// A daemon that dies mid-answer: the client reads a truncated snapshot.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		s.WriteSnapshot(r.Context(), &buf)
		w.WriteHeader(http.StatusOK)
		w.Write(buf.Bytes()[:buf.Len()-3])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	rc, err := NewClient("sh-x", srv.URL, nil).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = backup.ReadSnapshot(rc, "snapshot", nil)
	if !errors.Is(err, backup.ErrTruncated) && !errors.Is(err, ErrUnavailable) {
		t.Errorf("read a broken-off snapshot: %v, want truncated or unavailable", err)
	}
	s.Close()
	if _, err := s.Snapshot(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot of a closed store = %v, want ErrClosed", err)
	}
}

// TestSnapshotDictionariesFirst: the router's compression dictionaries
// come before every other bucket, so a restore replays them before the
// records compressed with them.
func TestSnapshotDictionariesFirst(t *testing.T) {
	s := openTestStore(t)
	mustApply(t, s, "contexts", put("a", 1, "x"))
	mustApply(t, s, "aardvarks", put("b", 2, "y"))
	mustApply(t, s, DictBucket, put("40000", 3, "dictionary"), put("current", 4, `{"id":40000}`))
	got := readSnapshot(t, s)
	var order []string
	for _, r := range got {
		if len(order) == 0 || order[len(order)-1] != r.bucket {
			order = append(order, r.bucket)
		}
	}
	if want := []string{DictBucket, "aardvarks", "contexts"}; fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("snapshot buckets in order %v, want %v", order, want)
	}
	if len(got) != 4 {
		t.Errorf("snapshot holds %d records, want 4", len(got))
	}
}
