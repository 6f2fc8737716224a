package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// shard is what both ends of the package offer: the tests that check the
// store's rules run against a Store directly and against a Client through
// the wire, so the protocol cannot lose what the store promises.
type shard interface {
	Get(ctx context.Context, bucket string, key []byte) (Record, error)
	Apply(ctx context.Context, bucket string, writes []Write) ([]Result, error)
	Scan(ctx context.Context, bucket string, opts ScanOptions) (ScanPage, error)
	DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error)
	Info(ctx context.Context) (Info, error)
	Ping(ctx context.Context) error
	MultiGet(ctx context.Context, bucket string, keys [][]byte) ([]Record, error)
	Purge(ctx context.Context, bucket string, recs []Record) (int, error)
	Health(ctx context.Context) (Health, error)
	ChangesHead(ctx context.Context) (ChangeLog, error)
	Changes(ctx context.Context, req ChangesRequest, fn func(ChangeBatch) error) error
}

var (
	_ shard = (*Store)(nil)
	_ shard = (*Client)(nil)
)

// openTestStore opens a fresh store in t.TempDir and closes it on cleanup.
func openTestStore(t testing.TB) *Store {
	t.Helper()
	return openTestStoreAt(t, filepath.Join(t.TempDir(), "shard.db"), Options{})
}

// openTestStoreAt opens the store at path. On cleanup it closes the store and
// checks the file's consistency with bbolt's own checker. Close is idempotent,
// so a test may close the store itself.
func openTestStoreAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close(%q) = %v, want nil", path, err)
		}
		checkFile(t, path)
		checkFile(t, path+kwFileSuffix)
	})
	return s
}

// checkFile opens a closed BoltDB file read-only and reports every
// inconsistency tx.Check finds.
func checkFile(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("check %s: open read-only: %v", path, err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("check %s: %v", path, err)
	}
}

// openTestClient serves a fresh store with NewHandler and returns the store
// and a Client that reaches it through the wire.
func openTestClient(t testing.TB) (*Store, *Client, *httptest.Server) {
	t.Helper()
	s := openTestStore(t)
	srv := httptest.NewServer(NewHandler(s, nil))
	t.Cleanup(srv.Close) // runs before the store's cleanup
	c := NewClient("sh-test", srv.URL, nil)
	t.Cleanup(c.hc.CloseIdleConnections)
	return s, c, srv
}

// eachShard runs fn against a fresh Store and against a Client in front of a
// fresh Store.
func eachShard(t *testing.T, fn func(t *testing.T, sh shard)) {
	t.Run("store", func(t *testing.T) { fn(t, openTestStore(t)) })
	t.Run("wire", func(t *testing.T) {
		_, c, _ := openTestClient(t)
		fn(t, c)
	})
}

func put(key string, version uint64, value string) Write {
	return Write{Record: Record{Key: []byte(key), Version: version, Value: []byte(value)}}
}

func del(key string, version uint64) Write {
	return Write{Record: Record{Key: []byte(key), Version: version, Tombstone: true}}
}

func cond(w Write, c Cond, match uint64) Write {
	w.Cond, w.Match = c, match
	return w
}

// mustApply applies writes and fails the test on error or on a wrong number
// of results.
func mustApply(t testing.TB, sh shard, bucket string, writes ...Write) []Result {
	t.Helper()
	res, err := sh.Apply(context.Background(), bucket, writes)
	if err != nil {
		t.Fatalf("Apply(%q, %d writes) = %v, want nil", bucket, len(writes), err)
	}
	if len(res) != len(writes) {
		t.Fatalf("Apply(%q, %d writes) returned %d results", bucket, len(writes), len(res))
	}
	return res
}

// sameRecord compares records by content; nil and empty values are equal, as
// the wire does not tell them apart.
func sameRecord(a, b Record) bool {
	return bytes.Equal(a.Key, b.Key) && a.Version == b.Version &&
		a.Tombstone == b.Tombstone && bytes.Equal(a.Value, b.Value)
}

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameRecord(a[i], b[i]) {
			return false
		}
	}
	return true
}

// show formats a record for failure messages, eliding long values.
func show(r Record) string {
	val := fmt.Sprintf("%q", r.Value)
	if len(r.Value) > 32 {
		val = fmt.Sprintf("%q…(%d bytes)", r.Value[:32], len(r.Value))
	}
	if r.Value == nil {
		val = "nil"
	}
	key := fmt.Sprintf("%q", r.Key)
	if len(r.Key) > 32 {
		key = fmt.Sprintf("%q…(%d bytes)", r.Key[:32], len(r.Key))
	}
	return fmt.Sprintf("{key:%s v:%d tomb:%t value:%s}", key, r.Version, r.Tombstone, val)
}

func showAll(rs []Record) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, r := range rs {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(show(r))
	}
	b.WriteByte(']')
	return b.String()
}

func keysOf(rs []Record) []string {
	keys := make([]string, len(rs))
	for i, r := range rs {
		keys[i] = string(r.Key)
	}
	return keys
}

// totalKeys counts the records (tombstones included) in every bucket.
func totalKeys(t testing.TB, sh shard) int64 {
	t.Helper()
	info, err := sh.Info(context.Background())
	if err != nil {
		t.Fatalf("Info() = %v, want nil", err)
	}
	var n int64
	for _, k := range info.Keys {
		n += k
	}
	return n
}

// scanAll pages through a prefix with the given page size and returns every
// record and the number of pages it took. It fails the test when a page
// breaks the paging contract.
func scanAll(t testing.TB, sh shard, bucket string, opts ScanOptions) ([]Record, int) {
	t.Helper()
	var all []Record
	pages := 0
	for {
		page, err := sh.Scan(context.Background(), bucket, opts)
		if err != nil {
			t.Fatalf("Scan(%q, prefix %q after %q) = %v, want nil", bucket, opts.Prefix, opts.After, err)
		}
		pages++
		if len(page.Records) > opts.Limit {
			t.Fatalf("Scan(%q, limit %d) returned %d records", bucket, opts.Limit, len(page.Records))
		}
		all = append(all, page.Records...)
		if !page.More {
			return all, pages
		}
		if len(page.Records) == 0 {
			t.Fatalf("Scan(%q, prefix %q after %q) = empty page with More, want records or !More", bucket, opts.Prefix, opts.After)
		}
		opts.After = page.Records[len(page.Records)-1].Key
		if pages > 100000 {
			t.Fatalf("Scan(%q): more than %d pages", bucket, pages)
		}
	}
}
