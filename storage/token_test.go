package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testToken = "0123456789abcdef0123456789abcdef"

func TestRequireTokenClosesTheShard(t *testing.T) {
	st := openTestStore(t)
	ctx := context.Background()
	if _, err := st.Apply(ctx, "things", []Write{{Record: Record{Key: []byte("k"), Version: 1, Value: []byte("before")}}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(RequireToken(NewHandler(st, nil), testToken))
	t.Cleanup(srv.Close)

	for name, hc := range map[string]*http.Client{
		"no token":    nil,
		"wrong token": {Transport: &TokenTransport{Token: testToken + "x"}},
		"prefix":      {Transport: &TokenTransport{Token: testToken[:16]}},
	} {
		c := NewClient("sh-1", srv.URL, hc)
		if _, err := c.Get(ctx, "things", []byte("k")); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: Get = %v, want ErrUnauthenticated", name, err)
		}
		if _, err := c.Apply(ctx, "things", []Write{{Record: Record{Key: []byte("k"), Version: 2, Value: []byte("after")}}}); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: Apply = %v, want ErrUnauthenticated", name, err)
		}
		if _, err := c.DeletePrefix(ctx, "things", []byte("k"), 3); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: DeletePrefix = %v, want ErrUnauthenticated", name, err)
		}
		if _, err := c.Scan(ctx, "things", ScanOptions{Limit: 10}); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: Scan = %v, want ErrUnauthenticated", name, err)
		}
		if _, err := c.Purge(ctx, "things", []Record{{Key: []byte("k"), Version: 1}}); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: Purge = %v, want ErrUnauthenticated", name, err)
		}
		if _, err := c.Info(ctx); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: Info = %v, want ErrUnauthenticated", name, err)
		}
		// Health stays open, for probes and container health checks.
		if _, err := c.Health(ctx); err != nil {
			t.Errorf("%s: Health = %v, want nil", name, err)
		}
	}
	// Nothing changed.
	rec, err := st.Get(ctx, "things", []byte("k"))
	if err != nil || rec.Version != 1 || string(rec.Value) != "before" {
		t.Fatalf("Get after refused writes = %+v, %v; want version 1 \"before\"", rec, err)
	}

	// A raw request gets a JSON error body.
	resp, err := http.Post(srv.URL+pathApply+"things", "application/octet-stream", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var eb errorBody
	if resp.StatusCode != 401 || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "unauthenticated" {
		t.Errorf("raw POST = %d %s, want 401 with code unauthenticated", resp.StatusCode, body)
	}

	// With the token, all works.
	c := NewClient("sh-1", srv.URL, &http.Client{Transport: &TokenTransport{Token: testToken}})
	if _, err := c.Apply(ctx, "things", []Write{{Record: Record{Key: []byte("k"), Version: 2, Value: []byte("after")}}}); err != nil {
		t.Fatalf("Apply with the token = %v", err)
	}
	if rec, err := c.Get(ctx, "things", []byte("k")); err != nil || string(rec.Value) != "after" {
		t.Errorf("Get with the token = %+v, %v; want \"after\"", rec, err)
	}
}

func TestCondRewriteKeepsTheVersion(t *testing.T) {
	eachShard(t, func(t *testing.T, sh shard) {
		ctx := context.Background()
		put := func(w Write) Outcome {
			t.Helper()
			res, err := sh.Apply(ctx, "b", []Write{w})
			if err != nil {
				t.Fatalf("Apply = %v", err)
			}
			return res[0].Outcome
		}
		put(Write{Record: Record{Key: []byte("k"), Version: 5, Value: []byte("v5")}})
		if got := put(Write{Record: Record{Key: []byte("k"), Version: 5, Value: []byte("v5'")}, Cond: CondRewrite}); got != Applied {
			t.Fatalf("rewrite at the held version = %v, want applied", got)
		}
		if rec, _ := sh.Get(ctx, "b", []byte("k")); rec.Version != 5 || string(rec.Value) != "v5'" {
			t.Errorf("Get after rewrite = %d %q, want 5 \"v5'\"", rec.Version, rec.Value)
		}
		for _, w := range []Write{
			{Record: Record{Key: []byte("k"), Version: 4, Value: []byte("x")}, Cond: CondRewrite},
			{Record: Record{Key: []byte("k"), Version: 6, Value: []byte("x")}, Cond: CondRewrite},
			{Record: Record{Key: []byte("k"), Version: 5, Tombstone: true}, Cond: CondRewrite},
			{Record: Record{Key: []byte("absent"), Version: 5, Value: []byte("x")}, Cond: CondRewrite},
		} {
			if got := put(w); got != Conflict {
				t.Errorf("rewrite %s@%d (tombstone %v) = %v, want conflict", w.Key, w.Version, w.Tombstone, got)
			}
		}
		put(Write{Record: Record{Key: []byte("k"), Version: 7, Tombstone: true}})
		if got := put(Write{Record: Record{Key: []byte("k"), Version: 7, Value: []byte("x")}, Cond: CondRewrite}); got != Conflict {
			t.Errorf("rewrite of a tombstone = %v, want conflict", got)
		}
	})
}
