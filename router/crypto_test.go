package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

func keyring(t testing.TB, keys ...string) *codec.Keyring {
	t.Helper()
	kr, err := codec.ParseKeys([]byte(strings.Join(keys, "\n")))
	if err != nil {
		t.Fatalf("codec.ParseKeys: %v", err)
	}
	return kr
}

const marker = "PLAINTEXT-MARKER-7f3a"

// fillSealed writes, through tc, a topic and contexts full of the marker:
// in the description, the text, a message, a tag, the model and an
// embedding model name.
func fillSealed(t testing.TB, tc *testCluster, topic string, n int) {
	t.Helper()
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": topic, "description": marker}), 201, "create topic")
	for i := range n {
		doc := map[string]any{
			"metadata": map[string]any{"model": marker, "tags": []string{marker}, "embedding_model": marker},
			"content": map[string]any{
				"text":       fmt.Sprintf("%s text %d %s", marker, i, strings.Repeat("lorem ipsum ", 20)),
				"messages":   []map[string]string{{"role": "user", "content": marker + " said hello"}},
				"embeddings": []float32{float32(i), 1, float32(i % 3)},
			},
		}
		tc.putContext(t, topic, fmt.Sprintf("c%02d", i), doc)
	}
}

func fileHolds(t testing.TB, path, s string) bool {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return bytes.Contains(raw, []byte(s))
}

func TestEncryptedClusterRoundTrip(t *testing.T) {
	kr := keyring(t, newKey(t))
	tc := newSecureCluster(t, 3, func(c *Config) { c.Security.Keyring = kr; c.CacheBytes = 0 })
	fillSealed(t, tc, "secret", 12)

	// Reads give back what was written.
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/secret/contexts/c05", nil), 200, "get")
	content := r.JSON["content"].(map[string]any)
	if !strings.HasPrefix(content["text"].(string), marker+" text 5 ") {
		t.Errorf("text = %q", content["text"])
	}
	if emb := content["embeddings"].([]any); len(emb) != 3 || emb[0].(float64) != 5 {
		t.Errorf("embeddings = %v, want [5 1 2]", emb)
	}
	r = must(t, call(t, "GET", tc.URL+"/api/v1/topics/secret", nil), 200, "get topic")
	if r.JSON["description"] != marker {
		t.Errorf("topic = %s", r.Raw)
	}
	r = must(t, call(t, "GET", tc.URL+"/api/v1/topics/secret/contexts?tag="+marker+"&limit=5", nil), 200, "list")
	if n := len(r.JSON["contexts"].([]any)); n != 5 || r.JSON["next_cursor"] == "" {
		t.Errorf("list = %d contexts, cursor %v; want 5 and a cursor", n, r.JSON["next_cursor"])
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil), 200, "list topics")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/secret/contexts/c01/messages",
		map[string]any{"messages": []map[string]string{{"role": "assistant", "content": marker + " answered"}}}), 200, "append")
	r = must(t, call(t, "GET", tc.URL+"/api/v1/topics/secret/contexts/c01/messages", nil), 200, "messages")
	if n := len(r.JSON["messages"].([]any)); n != 2 {
		t.Errorf("messages = %d, want 2", n)
	}

	// Search ranks in the router, as a shard would: same answer as by hand.
	query := []float32{7, 1, 1}
	res, exact := searchExact(t, tc, "secret", "", map[string]any{"embedding": query, "model": marker, "k": 4})
	if !exact {
		t.Errorf("search over sealed vectors said exact false; the router ranks them by a scan")
	}
	for _, s := range tc.stores {
		for _, ix := range s.VectorIndexStats().Indexes[schema.BucketVectors] {
			if ix.Vectors > 0 {
				t.Errorf("a shard indexed %d sealed vectors (%+v)", ix.Vectors, ix.Key)
			}
		}
	}
	var want []string
	type scored struct {
		id    string
		score float64
	}
	var all []scored
	for i := range 12 {
		all = append(all, scored{fmt.Sprintf("c%02d", i), cosine32(query, []float32{float32(i), 1, float32(i % 3)})})
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	for _, s := range all[:4] {
		want = append(want, s.id)
	}
	var got []string
	for i, r := range res {
		got = append(got, r.Metadata.ID)
		if math.Abs(r.Score-all[i].score) > 1e-6 {
			t.Errorf("result %d score = %v, want %v", i, r.Score, all[i].score)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("search = %v, want %v", got, want)
	}

	// The shards hold no plaintext: not in the BoltDB files, not on the wire.
	// (The append made c01's messages records of their own: they are
	// checked too.)
	messages := 0
	for _, st := range tc.stores {
		messages += liveMessages(t, st, "secret", "c01")
	}
	if messages < 2 {
		t.Errorf("the shards hold %d message records of c01, want its 2 on at least one", messages)
	}
	for i, st := range tc.stores {
		if fileHolds(t, st.Path(), marker) {
			t.Errorf("shard %d's file %s holds the plaintext marker", i+1, st.Path())
		}
		for _, bucket := range cluster.Buckets {
			recs, _ := st.Scan(context.Background(), bucket, storage.ScanOptions{Limit: 1000})
			for _, rec := range recs.Records {
				if !rec.Tombstone && len(rec.Value) > 0 && !codec.IsSealed(rec.Value) {
					t.Errorf("shard %d, %s/%q is not sealed", i+1, bucket, rec.Key)
				}
			}
		}
	}
}

// TestUnencryptedClusterHoldsTheMarker keeps the test above honest: the
// same data without a keyring does show up in the files.
func TestUnencryptedClusterHoldsTheMarker(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.CacheBytes = 0 })
	fillSealed(t, tc, "clear", 3)
	if !fileHolds(t, tc.stores[0].Path(), marker) {
		t.Fatalf("without encryption the marker is not in the file: the encrypted test proves nothing")
	}
}

// secondRouter starts another router over tc's shards with its own keyring.
func secondRouter(t testing.TB, tc *testCluster, kr *codec.Keyring) string {
	t.Helper()
	rt := tc.newRouter(t, Config{Nodes: tc.want, CacheBytes: 0, RepairInterval: time.Hour, Security: SecurityConfig{Keyring: kr}})
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(srv.Close)
	waitFor(t, "second router's map", func() bool { return rt.topo.Load().Epoch > 0 })
	return srv.URL
}

func TestKeyRotation(t *testing.T) {
	old, next := newKey(t), newKey(t)
	tc := newSecureCluster(t, 2, func(c *Config) { c.Security.Keyring = keyring(t, old); c.CacheBytes = 0 })
	fillSealed(t, tc, "rot", 6)

	// A router with the new key first and the old one after reads the old
	// records and writes new ones under the new key.
	both := secondRouter(t, tc, keyring(t, next, old))
	must(t, call(t, "GET", both+"/api/v1/topics/rot/contexts/c03", nil), 200, "old record, both keys")
	must(t, call(t, "PUT", both+"/api/v1/topics/rot/contexts/new", map[string]any{"content": map[string]any{"text": "new"}}), 201, "new record")

	// A router with the new key only reads the new record, and says which
	// key the old ones need.
	onlyNew := secondRouter(t, tc, keyring(t, next))
	must(t, call(t, "GET", onlyNew+"/api/v1/topics/rot/contexts/new", nil), 200, "new record, new key")
	oldID := keyring(t, old).CurrentID()
	r := call(t, "GET", onlyNew+"/api/v1/topics/rot/contexts/c03", nil)
	if r.Status != 500 || r.errCode() != "internal" || !strings.Contains(r.errMessage(), "missing") || !strings.Contains(r.errMessage(), oldID) {
		t.Errorf("old record without its key = %d %s, want 500 internal saying key %s is missing", r.Status, r.Raw, oldID)
	}
	r = call(t, "GET", onlyNew+"/api/v1/topics/rot/contexts", nil)
	if r.Status != 500 || !strings.Contains(r.errMessage(), oldID) {
		t.Errorf("list without the old key = %d %s, want 500 naming key %s", r.Status, r.Raw, oldID)
	}

	// Re-encrypt through the router that holds both, then the new key alone
	// reads everything, at the same versions.
	etag := call(t, "GET", both+"/api/v1/topics/rot/contexts/c03", nil).Header.Get("ETag")
	r = must(t, call(t, "POST", both+"/api/v1/admin/reencrypt?wait=true", nil), 200, "reencrypt")
	if r.JSON["missing_key"].(float64) != 0 || r.JSON["resealed"].(float64) == 0 || r.JSON["errors"] != nil {
		t.Errorf("reencrypt = %s, want records resealed, none missing, no errors", r.Raw)
	}
	for i := range 6 {
		must(t, call(t, "GET", onlyNew+fmt.Sprintf("/api/v1/topics/rot/contexts/c%02d", i), nil), 200, "after reencrypt, new key only")
	}
	must(t, call(t, "GET", onlyNew+"/api/v1/topics/rot", nil), 200, "topic after reencrypt")
	if got := call(t, "GET", onlyNew+"/api/v1/topics/rot/contexts/c03", nil).Header.Get("ETag"); got != etag {
		t.Errorf("ETag after reencrypt = %s, want %s unchanged", got, etag)
	}
	res := searchFor(t, &testCluster{URL: onlyNew}, "rot", "", map[string]any{"embedding": []float32{1, 1, 1}, "model": marker})
	if len(res) != 6 {
		t.Errorf("search after reencrypt = %d results, want 6", len(res))
	}
	// A second pass finds everything current.
	r = must(t, call(t, "POST", both+"/api/v1/admin/reencrypt?wait=true", nil), 200, "reencrypt again")
	if r.JSON["resealed"].(float64) != 0 {
		t.Errorf("second reencrypt = %s, want nothing resealed", r.Raw)
	}
}

func TestTamperedCiphertextIsReported(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.Keyring = keyring(t, newKey(t)); c.CacheBytes = 0 })
	fillSealed(t, tc, "tamper", 1)
	st := tc.stores[0]
	ctx := context.Background()
	key := []byte(schema.ContextKey("tamper", "c00"))
	rec, err := st.Get(ctx, schema.BucketContexts, key)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(rec.Value)
	bad[len(bad)/2] ^= 1
	if _, err := st.Apply(ctx, schema.BucketContexts, []storage.Write{{Record: storage.Record{Key: key, Version: rec.Version, Value: bad}, Cond: storage.CondRewrite}}); err != nil {
		t.Fatal(err)
	}
	r := call(t, "GET", tc.URL+"/api/v1/topics/tamper/contexts/c00", nil)
	if r.Status != 500 || r.errCode() != "internal" || !strings.Contains(r.errMessage(), "tampered") {
		t.Errorf("tampered record = %d %s, want 500 internal saying it was tampered with", r.Status, r.Raw)
	}
	// A value moved to another key is caught too.
	other := []byte(schema.ContextKey("tamper", "moved"))
	if _, err := st.Apply(ctx, schema.BucketContexts, []storage.Write{{Record: storage.Record{Key: other, Version: rec.Version, Value: rec.Value}}}); err != nil {
		t.Fatal(err)
	}
	r = call(t, "GET", tc.URL+"/api/v1/topics/tamper/contexts/moved", nil)
	if r.Status != 500 || !strings.Contains(r.errMessage(), "tampered") {
		t.Errorf("moved record = %d %s, want 500 saying it was tampered with", r.Status, r.Raw)
	}
}

func TestSealedRecordsWithoutAKeyring(t *testing.T) {
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.Keyring = keyring(t, newKey(t)); c.CacheBytes = 0 })
	fillSealed(t, tc, "sealed", 1)
	open := secondRouter(t, tc, nil)
	r := call(t, "GET", open+"/api/v1/topics/sealed/contexts/c00", nil)
	if r.Status != 500 || !strings.Contains(r.errMessage(), "no -encryption-key-file") {
		t.Errorf("sealed record, router without keys = %d %s, want 500 saying so", r.Status, r.Raw)
	}
	r = call(t, "GET", open+"/api/v1/topics", nil)
	if r.Status != 500 || bytes.Contains(r.Raw, []byte{codec.SealMagic}) {
		t.Errorf("topic list, router without keys = %d %q, want 500 and no ciphertext", r.Status, r.Raw)
	}
	r = call(t, "POST", open+"/api/v1/admin/reencrypt", nil)
	if r.Status != 412 {
		t.Errorf("reencrypt without keys = %d %s, want 412", r.Status, r.Raw)
	}
}

func TestEncryptionTurnedOnLater(t *testing.T) {
	tc := newSecureCluster(t, 2, func(c *Config) { c.CacheBytes = 0 })
	fillSealed(t, tc, "legacy", 4)
	kr := keyring(t, newKey(t))
	sealed := secondRouter(t, tc, kr)
	must(t, call(t, "GET", sealed+"/api/v1/topics/legacy/contexts/c02", nil), 200, "plaintext record through an encrypting router")
	r := must(t, call(t, "POST", sealed+"/api/v1/admin/reencrypt?wait=true", nil), 200, "reencrypt")
	if r.JSON["resealed"].(float64) == 0 {
		t.Errorf("reencrypt = %s, want the plaintext records sealed", r.Raw)
	}
	for _, st := range tc.stores {
		for _, bucket := range cluster.Buckets {
			recs, _ := st.Scan(context.Background(), bucket, storage.ScanOptions{Limit: 1000})
			for _, rec := range recs.Records {
				if len(rec.Value) > 0 && !codec.IsSealed(rec.Value) {
					t.Errorf("%s/%q still plaintext after reencrypt", bucket, rec.Key)
				}
			}
		}
	}
	must(t, call(t, "GET", sealed+"/api/v1/topics/legacy/contexts/c02", nil), 200, "sealed record")
}

// TestRepairCopiesSealedRecords checks that replication works on sealed
// values: a replica that missed writes is repaired with records that stay
// sealed (copied as they are, never opened).
func TestRepairCopiesSealedRecords(t *testing.T) {
	kr := keyring(t, newKey(t))
	tc := newSecureCluster(t, 3, func(c *Config) { c.Security.Keyring = kr; c.CacheBytes = 0; c.Replicas = 3 })
	tc.faults[2].down.Store(true)
	fillSealed(t, tc, "rep", 5)
	tc.faults[2].down.Store(false)
	waitFor(t, "shard 3 up", func() bool { return tc.router.topo.Load().All[2].Up() })
	must(t, call(t, "POST", tc.URL+"/api/v1/admin/repair?wait=true", nil), 200, "repair")
	recs, err := tc.stores[2].Scan(context.Background(), schema.BucketContexts, storage.ScanOptions{Limit: 100})
	if err != nil || len(recs.Records) != 5 {
		t.Fatalf("shard 3 after repair holds %d contexts (%v), want 5", len(recs.Records), err)
	}
	for _, rec := range recs.Records {
		if !codec.IsSealed(rec.Value) {
			t.Errorf("repaired %q is not sealed", rec.Key)
		}
		if _, err := kr.Open(schema.BucketContexts, rec.Key, rec.Value); err != nil {
			t.Errorf("repaired %q does not open: %v", rec.Key, err)
		}
	}
	if fileHolds(t, tc.stores[2].Path(), marker) {
		t.Errorf("repaired shard's file holds the plaintext marker")
	}
}

func TestMissingKeyOnReplicatedRead(t *testing.T) {
	tc := newSecureCluster(t, 3, func(c *Config) { c.Security.Keyring = keyring(t, newKey(t)); c.CacheBytes = 0; c.Replicas = 3 })
	fillSealed(t, tc, "rep", 1)
	other := secondRouter(t, tc, keyring(t, newKey(t)))
	for _, path := range []string{"/api/v1/topics/rep", "/api/v1/topics/rep/contexts/c00"} {
		r := call(t, "GET", other+path, nil)
		if r.Status != 500 || !strings.Contains(r.errMessage(), "missing from -encryption-key-file") {
			t.Errorf("GET %s with the wrong key, 3 replicas = %d %s, want 500 saying the key is missing", path, r.Status, r.Raw)
		}
	}
}

// newKey is a fresh encryption key, as a key file line.
func newKey(testing.TB) string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
