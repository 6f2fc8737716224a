package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
)

// testCluster is a real router in front of real storage daemons: each
// shard a BoltDB file in a temp dir served by storage.NewHandler behind an
// httptest server, reached through storage.Client, so backups and
// restores cross the same HTTP endpoints as between processes.
type testCluster struct {
	URL    string
	stores []*storage.Store
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCluster(t testing.TB, shards, replicas int, llm router.LLMConfig) *testCluster {
	t.Helper()
	tc := &testCluster{}
	var nodes []router.Node
	for i := range shards {
		name := fmt.Sprintf("sh-%d", i+1)
		st, err := storage.Open(filepath.Join(t.TempDir(), name+".db"), storage.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(storage.NewHandler(st, quiet()))
		t.Cleanup(func() {
			srv.Close()
			st.Close()
		})
		tc.stores = append(tc.stores, st)
		nodes = append(nodes, router.Node{Name: name, Address: srv.URL, Shard: storage.NewClient(name, srv.URL, nil)})
	}
	rt, err := router.New(router.Config{
		Mode:          "sharded",
		Nodes:         nodes,
		Replicas:      replicas,
		CacheBytes:    16 << 20,
		ShardTimeout:  10 * time.Second,
		ProbeInterval: 100 * time.Millisecond,
		ProbeMisses:   20, // a loaded test machine is not a dead shard
		Logger:        quiet(),
		LLM:           llm,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(func() {
		srv.Close()
		rt.Close()
	})
	tc.URL = srv.URL
	waitFor(t, "the cluster map installed", func() bool {
		resp, err := http.Get(srv.URL + "/api/v1/cluster")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var c struct{ Epoch uint64 }
		json.NewDecoder(resp.Body).Decode(&c)
		return c.Epoch > 0
	})
	return tc
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: still not true after 10s", what)
}

// result is what one kvdbctl run printed and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

// ctl runs kvdbctl in-process against url with stdin.
func ctl(t testing.TB, url, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{"-url", url}, args...)
	err := run(context.Background(), all, strings.NewReader(stdin), &out, &errb)
	code := exitCode(err, &errb)
	return result{out.String(), errb.String(), code}
}

// mustCtl runs kvdbctl and fails the test unless it exits 0.
func mustCtl(t testing.TB, url, stdin string, args ...string) string {
	t.Helper()
	r := ctl(t, url, stdin, args...)
	if r.code != 0 {
		t.Fatalf("kvdbctl %s = exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}
