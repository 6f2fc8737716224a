package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

func TestResolveExpiry(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	in := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	tests := []struct {
		name      string
		expiresAt string
		ttl       int64
		want      string // "" with ok: no expiry
		wantErr   string // a substring of the 400's message
	}{
		{name: "none"},
		{name: "ttl", ttl: 60, want: in(time.Minute)},
		{name: "expires_at", expiresAt: in(time.Hour), want: in(time.Hour)},
		{name: "offset normalised to UTC", expiresAt: now.Add(time.Hour).In(time.FixedZone("x", 2*3600)).Format(time.RFC3339), want: in(time.Hour)},
		{name: "both agree", expiresAt: in(time.Minute), ttl: 60, want: in(time.Minute)},
		{name: "both within tolerance", expiresAt: in(time.Minute + time.Second), ttl: 60, want: in(time.Minute + time.Second)},
		{name: "both disagree", expiresAt: in(time.Hour), ttl: 60, wantErr: "disagree"},
		{name: "past", expiresAt: in(-time.Second), wantErr: "not in the future"},
		{name: "now", expiresAt: in(0), wantErr: "not in the future"},
		{name: "negative ttl", ttl: -1, wantErr: "ttl_seconds"},
		{name: "huge ttl", ttl: schema.MaxTTLSeconds + 1, wantErr: "ttl_seconds"},
		{name: "far future", expiresAt: "2999-01-01T00:00:00Z", wantErr: "ahead"},
		{name: "not a time", expiresAt: "tomorrow", wantErr: "RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := schema.Metadata{ExpiresAt: tt.expiresAt, TTLSeconds: tt.ttl}
			err := m.ResolveExpiry(now)
			if tt.wantErr != "" {
				var apiErr *apierr.Error
				if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeInvalidArgument || !strings.Contains(apiErr.Message, tt.wantErr) {
					t.Fatalf("resolveExpiry(%q, %d) = %v, want invalid_argument about %q", tt.expiresAt, tt.ttl, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolveExpiry(%q, %d) = %v, want nil", tt.expiresAt, tt.ttl, err)
			}
			got := m.ExpiresAt
			if got != "" {
				g, _ := time.Parse(time.RFC3339Nano, got)
				got = g.Format(time.RFC3339)
			}
			if got != tt.want || m.TTLSeconds != 0 {
				t.Errorf("resolveExpiry(%q, %d) = %q (ttl %d), want %q (ttl 0)", tt.expiresAt, tt.ttl, m.ExpiresAt, m.TTLSeconds, tt.want)
			}
		})
	}
}

func TestExpiryPrefixChecks(t *testing.T) {
	c, err := codec.New(codec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	past := now.Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	future := now.Add(time.Minute).UTC().Format(time.RFC3339Nano)
	// A text that mentions the field must not fool the check.
	tricky := schema.Content{Text: `{"metadata":{"expires_at":"` + past + `"}}`}
	for _, tt := range []struct {
		name    string
		doc     schema.Document
		expired bool
	}{
		{"no expiry", schema.Document{Metadata: schema.Metadata{ID: "a"}, Content: tricky}, false},
		{"future", schema.Document{Metadata: schema.Metadata{ID: "a", ExpiresAt: future}}, false},
		{"past", schema.Document{Metadata: schema.Metadata{ID: "a", ExpiresAt: past}}, true},
	} {
		stored, err := c.EncodeDocument(&tt.doc)
		if err != nil {
			t.Fatal(err)
		}
		rendered, err := c.AppendDocumentJSON(nil, stored, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := codec.StoredExpired(stored, now); got != tt.expired {
			t.Errorf("%s: StoredExpired = %v, want %v", tt.name, got, tt.expired)
		}
		if got := codec.RenderedExpired(rendered); got != tt.expired {
			t.Errorf("%s: RenderedExpired(%s) = %v, want %v", tt.name, rendered, got, tt.expired)
		}
	}
}

// expireNow rewrites a stored context as if its expiry had passed: the
// API refuses an expiry in the past, and a test must not sleep for one.
// It returns the version written.
func expireNow(t testing.TB, tc *testCluster, topic, id string) uint64 {
	t.Helper()
	rt := tc.router
	ctx := context.Background()
	pk, key := schema.Placement(topic, id), []byte(schema.ContextKey(topic, id))
	rec, err := rt.coord.Get(ctx, pk, schema.BucketContexts, key)
	if err != nil {
		t.Fatalf("read %s/%s: %v", topic, id, err)
	}
	doc, err := rt.codec.DecodeDocument(rec.Value)
	if err != nil {
		t.Fatal(err)
	}
	doc.Metadata.ExpiresAt = time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	if ok, err := rt.docs.Replace(ctx, topic, doc, rec.Version); err != nil || !ok {
		t.Fatalf("write %s/%s = %v, %v", topic, id, ok, err)
	}
	// As a write through the API does, Replace leaves the rendered
	// document in the cache: reads then find it expired there.
	rec, err = rt.coord.Get(ctx, pk, schema.BucketContexts, key)
	if err != nil {
		t.Fatal(err)
	}
	v := rec.Version
	return v
}

// listIDs lists every context id of a topic through the API.
func listIDs(t testing.TB, tc *testCluster, topic string) []string {
	t.Helper()
	return listAll(t, tc.URL+"/api/v1/topics/"+topic+"/contexts?limit=2", "contexts", func(m map[string]any) string {
		return m["metadata"].(map[string]any)["id"].(string)
	})
}

func TestTTLOnWrite(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	tc.createTopic(t, "ttl")
	before := time.Now()
	r := tc.putContext(t, "ttl", "a", map[string]any{"metadata": map[string]any{"ttl_seconds": 3600}, "content": map[string]any{"text": "x"}})
	meta := r.JSON["metadata"].(map[string]any)
	if _, ok := meta["ttl_seconds"]; ok {
		t.Errorf("PUT answer %s: ttl_seconds is echoed, want it turned into expires_at", r.Raw)
	}
	exp, err := time.Parse(time.RFC3339Nano, fmt.Sprint(meta["expires_at"]))
	if err != nil || exp.Before(before.Add(time.Hour)) || exp.After(time.Now().Add(time.Hour)) {
		t.Errorf("expires_at = %v (%v), want now + 1h", meta["expires_at"], err)
	}
	if got := documentOf(t, tc, "ttl", "a"); got.Metadata.ExpiresAt != meta["expires_at"] {
		t.Errorf("GET expires_at = %q, want %q", got.Metadata.ExpiresAt, meta["expires_at"])
	}
	for _, tt := range []struct{ name, body string }{
		{"disagree", `{"metadata":{"expires_at":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `","ttl_seconds":60}}`},
		{"past", `{"metadata":{"expires_at":"2001-01-01T00:00:00Z"}}`},
		{"negative", `{"metadata":{"ttl_seconds":-5}}`},
		{"bad time", `{"metadata":{"expires_at":"soon"}}`},
		{"string ttl", `{"metadata":{"ttl_seconds":"60"}}`},
	} {
		r := call(t, "PUT", tc.URL+"/api/v1/topics/ttl/contexts/bad", tt.body)
		if r.Status != 400 || r.errCode() != "invalid_argument" {
			t.Errorf("%s: PUT %s = %d %s, want 400 invalid_argument", tt.name, tt.body, r.Status, r.Raw)
		}
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/ttl/contexts/bad", nil), 404, "GET refused context")
	r = call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"neg","default_ttl_seconds":-1}`)
	if r.Status != 400 {
		t.Errorf("POST topic with default_ttl_seconds -1 = %d %s, want 400", r.Status, r.Raw)
	}
}

func TestTopicDefaultTTL(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"short","default_ttl_seconds":600}`), 201, "create topic")
	if r.JSON["default_ttl_seconds"] != float64(600) {
		t.Errorf("created topic = %s, want default_ttl_seconds 600", r.Raw)
	}
	tc.createTopic(t, "forever")
	expiresIn := func(d schema.Document) time.Duration {
		t.Helper()
		if d.Metadata.ExpiresAt == "" {
			return 0
		}
		exp, err := time.Parse(time.RFC3339Nano, d.Metadata.ExpiresAt)
		if err != nil {
			t.Fatalf("expires_at %q: %v", d.Metadata.ExpiresAt, err)
		}
		return time.Until(exp).Round(time.Minute)
	}
	tc.putContext(t, "short", "default", map[string]any{"content": map[string]any{"text": "x"}})
	tc.putContext(t, "short", "own", map[string]any{"metadata": map[string]any{"ttl_seconds": 7200}})
	tc.putContext(t, "forever", "none", map[string]any{"content": map[string]any{"text": "x"}})
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/short/contexts/chat/messages", `{"messages":[{"role":"user","content":"hi"}]}`), 200, "append")
	for _, tt := range []struct {
		topic, id string
		want      time.Duration
	}{
		{"short", "default", 10 * time.Minute},
		{"short", "own", 2 * time.Hour},
		{"forever", "none", 0},
		{"short", "chat", 10 * time.Minute}, // created by an append
	} {
		if got := expiresIn(documentOf(t, tc, tt.topic, tt.id)); got != tt.want {
			t.Errorf("%s/%s expires in %s, want %s", tt.topic, tt.id, got, tt.want)
		}
	}
}

// TestExpiredContextDisappears checks every read path: GET (from the
// shards and from the cache), lists, search, messages; and that writes
// treat an expired context as absent.
func TestExpiredContextDisappears(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3})
	tc.createTopic(t, "t")
	emb := []float32{1, 0, 0}
	for _, id := range []string{"keep", "gone", "cached"} {
		tc.putContext(t, "t", id, map[string]any{
			"metadata": map[string]any{"ttl_seconds": 3600},
			"content":  map[string]any{"text": id, "embeddings": emb, "messages": []schema.Message{{Role: "user", Content: "hi"}}},
		})
	}
	// "cached" is read from the cache, "gone" from the shards.
	v := expireNow(t, tc, "t", "gone")
	tc.router.docs.Superseded(schema.BucketContexts, []byte(schema.ContextKey("t", "gone")), v+1)
	expireNow(t, tc, "t", "cached")

	for _, id := range []string{"gone", "cached"} {
		if r := call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/"+id, nil); r.Status != 404 || r.errCode() != "not_found" {
			t.Errorf("GET expired %s = %d %s, want 404 not_found", id, r.Status, r.Raw)
		}
		if r := call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/"+id+"/messages", nil); r.Status != 404 {
			t.Errorf("GET messages of expired %s = %d %s, want 404", id, r.Status, r.Raw)
		}
	}
	if got := listIDs(t, tc, "t"); strings.Join(got, ",") != "keep" {
		t.Errorf("list = %v, want [keep]", got)
	}
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts?include=content", nil), 200, "list with content")
	if n := len(r.JSON["contexts"].([]any)); n != 1 {
		t.Errorf("list with content: %d contexts, want 1: %s", n, r.Raw)
	}
	res := searchFor(t, tc, "t", "", map[string]any{"embedding": emb, "k": 10})
	if len(res) != 1 || res[0].Metadata.ID != "keep" {
		t.Errorf("search = %+v, want only keep", res)
	}

	// Writes: an expired id is free again.
	r = must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts", `{"metadata":{"id":"gone"},"content":{"text":"new"}}`), 201, "POST over an expired context")
	if r.Header.Get("ETag") == schema.ETag(v) {
		t.Errorf("POST over an expired context kept its version")
	}
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/cached", `{"content":{"text":"new"}}`, "If-None-Match", "*"), 201, "PUT If-None-Match over an expired context")
	if d := documentOf(t, tc, "t", "gone"); d.Content.Text != "new" || d.Metadata.ExpiresAt != "" {
		t.Errorf("recreated context = %+v, want text new and no expiry", d)
	}
	// An append to an expired conversation starts a new one.
	expireNow(t, tc, "t", "keep")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/keep/messages", `{"messages":[{"role":"user","content":"again"}]}`), 200, "append to expired")
	if msgs := messagesOf(t, tc, "t", "keep"); len(msgs) != 1 || msgs[0].Content != "again" {
		t.Errorf("messages after append to an expired context = %+v, want only the new one", msgs)
	}
}

// TestExpiryPurge checks the background purge: expired contexts become
// tombstones on every replica, their vectors go too, index entries are
// dropped, and a context rewritten without an expiry is left alone.
func TestExpiryPurge(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 3, replicas: 3})
	tc.createTopic(t, "t")
	for _, id := range []string{"a", "b", "rewritten", "live"} {
		tc.putContext(t, "t", id, map[string]any{"metadata": map[string]any{"ttl_seconds": 3600}, "content": map[string]any{"embeddings": []float32{1, 2}}})
	}
	expireNow(t, tc, "t", "a")
	expireNow(t, tc, "t", "b")
	expireNow(t, tc, "t", "rewritten")
	// Rewritten after it expired, without an expiry: its old entry is due
	// but the context must stay.
	tc.putContext(t, "t", "rewritten", map[string]any{"content": map[string]any{"text": "fresh"}})

	n, err := tc.router.docs.PurgeExpired(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("purgeExpired = %d, %v, want 2, nil", n, err)
	}
	// Writes are acknowledged by a Quorum; the third replica gets them
	// in the background.
	ctx := context.Background()
	for i, st := range tc.stores {
		for _, id := range []string{"a", "b"} {
			key := []byte(schema.ContextKey("t", id))
			for _, bucket := range []string{schema.BucketContexts, schema.BucketVectors} {
				waitFor(t, fmt.Sprintf("shard %d: %s of %s is a tombstone", i, bucket, id), func() bool {
					rec, err := st.Get(ctx, bucket, key)
					return err == nil && rec.Tombstone
				})
			}
		}
		// Left: the entries of the first writes, due in an hour.
		waitFor(t, fmt.Sprintf("shard %d: only entries due in an hour left", i), func() bool {
			page, err := st.Scan(ctx, schema.BucketExpiry, storage.ScanOptions{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			return len(page.Records) == 4 && bytes.Compare(page.Records[0].Key, schema.ExpiryKey(time.Now().Add(50*time.Minute), nil)) > 0
		})
	}
	documentOf(t, tc, "t", "rewritten")
	documentOf(t, tc, "t", "live")
	if n, err := tc.router.docs.PurgeExpired(ctx); err != nil || n != 0 {
		t.Errorf("second purgeExpired = %d, %v, want 0, nil", n, err)
	}
}

// TestExpiryPurgeLosesToRewrite checks that a context rewritten between
// the purge's read and its write is kept: the tombstone is written only
// on the version found expired.
func TestExpiryPurgeLosesToRewrite(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 1})
	tc.createTopic(t, "t")
	tc.putContext(t, "t", "a", map[string]any{"metadata": map[string]any{"ttl_seconds": 60}})
	v := expireNow(t, tc, "t", "a")
	tc.putContext(t, "t", "a", map[string]any{"content": map[string]any{"text": "rewritten"}})
	ctx := context.Background()
	pk, key := schema.Placement("t", "a"), []byte(schema.ContextKey("t", "a"))
	res, _, err := tc.router.coord.Write(ctx, pk, schema.BucketContexts, key, true, nil, storage.CondVersion, v)
	if err != nil || res.Outcome != storage.Conflict {
		t.Fatalf("tombstone on the expired version = %v, %v, want a conflict", res.Outcome, err)
	}
	if d := documentOf(t, tc, "t", "a"); d.Content.Text != "rewritten" {
		t.Errorf("context = %+v, want the rewrite", d)
	}
}

// TestExpiryLoopPurges lets a context expire for real and the background
// loop purge it.
func TestExpiryLoopPurges(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2, expiryInterval: 50 * time.Millisecond})
	tc.createTopic(t, "t")
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/a", `{"metadata":{"ttl_seconds":1}}`), 201, "PUT")
	waitFor(t, "expired context gone", func() bool {
		return call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/a", nil).Status == 404
	})
	key := []byte(schema.ContextKey("t", "a"))
	waitFor(t, "expired context purged", func() bool {
		for _, st := range tc.stores {
			if rec, err := st.Get(context.Background(), schema.BucketContexts, key); err == nil && rec.Tombstone {
				return true
			}
		}
		return false
	})
}
