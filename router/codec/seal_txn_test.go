package codec

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/go-kvdb/go-kvdb/storage"
)

// TestSealedTxn checks that a transaction through a sealed shard stores
// every value sealed under its own bucket, and reads back as plaintext.
func TestSealedTxn(t *testing.T) {
	st, err := storage.Open(filepath.Join(t.TempDir(), "shard.db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatalf("storage.Open = %v", err)
	}
	t.Cleanup(func() { st.Close() })
	kr := keyring(t, newKey(t))
	sh := Seal(st, kr)
	ctx := context.Background()
	writes := []storage.TxnWrite{
		{Bucket: "contexts", Write: storage.Write{Record: storage.Record{Key: []byte("t\x00c"), Version: 1, Value: []byte("header")}}},
		{Bucket: "messages", Write: storage.Write{Record: storage.Record{Key: []byte("t\x00c\x00\x01"), Version: 1, Value: []byte("hello")}}},
	}
	if _, err := sh.Txn(ctx, writes); err != nil {
		t.Fatalf("Txn = %v", err)
	}
	if string(writes[1].Value) != "hello" {
		t.Errorf("Txn sealed the caller's write in place: %q", writes[1].Value)
	}
	for _, w := range writes {
		raw, err := st.Get(ctx, w.Bucket, w.Key)
		if err != nil || !IsSealed(raw.Value) || bytes.Contains(raw.Value, w.Value) {
			t.Errorf("stored %s/%q = %q, %v, want sealed", w.Bucket, w.Key, raw.Value, err)
		}
		got, err := sh.Get(ctx, w.Bucket, w.Key)
		if err != nil || !bytes.Equal(got.Value, w.Value) {
			t.Errorf("sealed Get(%s, %q) = %q, %v, want %q", w.Bucket, w.Key, got.Value, err, w.Value)
		}
	}
}
