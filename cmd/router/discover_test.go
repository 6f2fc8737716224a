package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeDNS is the resolver of a discovery test: the addresses it returns
// are set by the test.
type fakeDNS struct {
	mu    sync.Mutex // guards addrs
	addrs []string
}

func (f *fakeDNS) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = addrs
}

func (f *fakeDNS) resolve(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), nil
}

// storageDaemon is a real storage daemon on loopback: a BoltDB file behind
// storage.NewHandler. restart serves the same file on a new port, as a
// container that restarts with its volume and a new IP.
type storageDaemon struct {
	store *storage.Store
	srv   *httptest.Server
}

func startDaemon(t testing.TB) *storageDaemon {
	t.Helper()
	st, err := storage.Open(filepath.Join(t.TempDir(), "shard.db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatalf("storage.Open: %v", err)
	}
	d := &storageDaemon{store: st, srv: httptest.NewServer(storage.NewHandler(st, quiet()))}
	t.Cleanup(func() {
		d.srv.Close()
		st.Close()
	})
	return d
}

func (d *storageDaemon) addr() string { return strings.TrimPrefix(d.srv.URL, "http://") }

func (d *storageDaemon) restart() {
	d.srv.Close()
	d.srv = httptest.NewServer(storage.NewHandler(d.store, quiet()))
}

// contexts counts the context records the daemon's file holds.
func (d *storageDaemon) contexts(t testing.TB) int64 {
	t.Helper()
	info, err := d.store.Info(context.Background())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return info.Keys["contexts"]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// discoveryRouter wires a router in discovery mode as run does, over dns.
// The caller stops it.
type discoveryRouter struct {
	rt   *router.Router
	url  string
	stop func()
}

func startDiscoveryRouter(t testing.TB, dns *fakeDNS, replicas int) *discoveryRouter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	disc := newDiscoverer("storaged:8081", dns.resolve, &http.Client{Transport: storage.NewTransport()}, log)
	nodes, err := disc.wait(ctx, replicas, time.Second, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("discoverer.wait: %v", err)
	}
	cfg := router.Config{ProbeInterval: 100 * time.Millisecond, Logger: log, Registry: prometheus.NewRegistry(), RepairInterval: time.Hour}
	disc.configure(&cfg, nodes, replicas)
	rt, err := router.New(cfg)
	if err != nil {
		t.Fatalf("router.New: %v", err)
	}
	srv := httptest.NewServer(rt.Handler())
	wait := disc.watch(ctx, 20*time.Millisecond, rt.Reload)
	dr := &discoveryRouter{rt: rt, url: srv.URL}
	var once sync.Once
	dr.stop = func() {
		once.Do(func() {
			cancel()
			wait()
			srv.Close()
			rt.Close()
			if t.Failed() {
				t.Logf("router log:\n%s", logs.String())
			}
		})
	}
	return dr
}

type clusterView struct {
	Mode     string `json:"mode"`
	Epoch    uint64 `json:"epoch"`
	State    string `json:"state"`
	Replicas int    `json:"replicas"`
	Shards   []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		State   string `json:"state"`
		NodeID  string `json:"node_id"`
	} `json:"shards"`
}

func (v clusterView) names() []string {
	var out []string
	for _, s := range v.Shards {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

func (v clusterView) shard(name string) (address, state string) {
	for _, s := range v.Shards {
		if s.Name == name {
			return s.Address, s.State
		}
	}
	return "", ""
}

func call(t testing.TB, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func (dr *discoveryRouter) cluster(t testing.TB) clusterView {
	t.Helper()
	code, raw := call(t, "GET", dr.url+"/api/v1/cluster", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/cluster = %d %s, want 200", code, raw)
	}
	var v clusterView
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("cluster: %v in %s", err, raw)
	}
	return v
}

// waitCluster polls /api/v1/cluster until cond holds.
func (dr *discoveryRouter) waitCluster(t testing.TB, what string, cond func(clusterView) bool) clusterView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := dr.cluster(t)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: cluster is %+v", what, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stableWith(ids ...string) func(clusterView) bool {
	want := slices.Sorted(slices.Values(ids))
	return func(v clusterView) bool { return v.Epoch > 0 && v.State == "stable" && slices.Equal(v.names(), want) }
}

// checkAll reads every context back and fails on any that is not there.
func (dr *discoveryRouter) checkAll(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		code, raw := call(t, "GET", fmt.Sprintf("%s/api/v1/topics/disc/contexts/c-%03d", dr.url, i), nil)
		if code != http.StatusOK {
			t.Fatalf("Get(c-%03d) = %d %s, want 200", i, code, raw)
		}
	}
}

func TestDiscovery(t *testing.T) {
	const keys = 60
	d := []*storageDaemon{startDaemon(t), startDaemon(t), startDaemon(t), startDaemon(t)}
	id := func(i int) string { return d[i].store.NodeID() }
	dns := &fakeDNS{}
	dns.set(d[0].addr(), d[1].addr(), d[2].addr())
	dr := startDiscoveryRouter(t, dns, 3)
	t.Cleanup(func() { dr.stop() }) // the router of the moment: a subtest replaces it

	v := dr.waitCluster(t, "three discovered shards", stableWith(id(0), id(1), id(2)))
	if v.Mode != "discovery" || v.Replicas != 3 {
		t.Errorf("cluster mode, replicas = %q, %d, want discovery, 3", v.Mode, v.Replicas)
	}
	if addr, _ := v.shard(id(1)); addr != d[1].srv.URL {
		t.Errorf("shard %s address = %q, want %q", id(1), addr, d[1].srv.URL)
	}
	if code, raw := call(t, "POST", dr.url+"/api/v1/topics", map[string]string{"name": "disc"}); code != http.StatusCreated {
		t.Fatalf("create topic = %d %s", code, raw)
	}
	for i := range keys {
		doc := map[string]any{"content": map[string]any{"text": fmt.Sprintf("text %d", i)}}
		if code, raw := call(t, "PUT", fmt.Sprintf("%s/api/v1/topics/disc/contexts/c-%03d", dr.url, i), doc); code != http.StatusCreated {
			t.Fatalf("PUT c-%03d = %d %s", i, code, raw)
		}
	}

	t.Run("a new node joins through a rebalance", func(t *testing.T) {
		before := dr.cluster(t).Epoch
		dns.set(d[0].addr(), d[1].addr(), d[2].addr(), d[3].addr())
		v := dr.waitCluster(t, "four shards", stableWith(id(0), id(1), id(2), id(3)))
		if v.Epoch <= before {
			t.Errorf("epoch = %d after the join, want > %d", v.Epoch, before)
		}
		dr.checkAll(t, keys)
		if n := d[3].contexts(t); n == 0 {
			t.Errorf("new shard holds %d contexts, want some moved to it", n)
		}
	})

	t.Run("a node at a new address keeps its place", func(t *testing.T) {
		before := dr.cluster(t)
		old := d[1].srv.URL
		d[1].restart()
		dns.set(d[0].addr(), d[1].addr(), d[2].addr(), d[3].addr())
		v := dr.waitCluster(t, "shard at its new address", func(v clusterView) bool {
			addr, state := v.shard(id(1))
			return addr == d[1].srv.URL && state == "up"
		})
		if got, want := v.names(), before.names(); !slices.Equal(got, want) {
			t.Errorf("shards after the move = %v, want %v (updated, not duplicated)", got, want)
		}
		if v.Epoch != before.Epoch {
			t.Errorf("epoch = %d after the move, want %d: no rebalance for a new address", v.Epoch, before.Epoch)
		}
		if d[1].srv.URL == old {
			t.Fatalf("restart kept the address %s", old)
		}
		dr.checkAll(t, keys)
	})

	t.Run("a vanished node stays, down", func(t *testing.T) {
		d[0].srv.Close()
		dns.set(d[1].addr(), d[2].addr(), d[3].addr())
		v := dr.waitCluster(t, "shard down", func(v clusterView) bool {
			_, state := v.shard(id(0))
			return state == "down"
		})
		if len(v.Shards) != 4 {
			t.Errorf("cluster has %d shards with one vanished, want 4", len(v.Shards))
		}
		dr.checkAll(t, keys) // replicas = 3: the others answer
		d[0].restart()
		dns.set(d[0].addr(), d[1].addr(), d[2].addr(), d[3].addr())
		dr.waitCluster(t, "shard back", func(v clusterView) bool {
			addr, state := v.shard(id(0))
			return state == "up" && addr == d[0].srv.URL
		})
	})

	t.Run("a restarted router keeps a node it cannot find", func(t *testing.T) {
		before := dr.cluster(t)
		dr.stop()
		dns.set(d[1].addr(), d[2].addr(), d[3].addr())
		dr = startDiscoveryRouter(t, dns, 3)
		v := dr.waitCluster(t, "map adopted, lost node down", func(v clusterView) bool {
			_, state := v.shard(id(0))
			return v.Epoch >= before.Epoch && state == "down"
		})
		if got, want := v.names(), before.names(); !slices.Equal(got, want) {
			t.Errorf("shards after restart = %v, want %v", got, want)
		}
		time.Sleep(200 * time.Millisecond) // a rebalance, if any, would have started
		if v := dr.cluster(t); v.Epoch != before.Epoch {
			t.Errorf("epoch = %d after restart, want %d: a node missing from DNS is not removed", v.Epoch, before.Epoch)
		}
		dns.set(d[0].addr(), d[1].addr(), d[2].addr(), d[3].addr())
		dr.waitCluster(t, "lost node found", func(v clusterView) bool {
			_, state := v.shard(id(0))
			return state == "up"
		})
	})

	t.Run("admin remove drains a node", func(t *testing.T) {
		if code, raw := call(t, "POST", dr.url+"/api/v1/admin/remove?shard=nope", nil); code != http.StatusNotFound {
			t.Errorf("remove unknown shard = %d %s, want 404", code, raw)
		}
		if code, raw := call(t, "POST", dr.url+"/api/v1/admin/remove", nil); code != http.StatusBadRequest {
			t.Errorf("remove without shard = %d %s, want 400", code, raw)
		}
		code, raw := call(t, "POST", dr.url+"/api/v1/admin/remove?shard="+id(2), nil)
		if code != http.StatusAccepted {
			t.Fatalf("remove %s = %d %s, want 202", id(2), code, raw)
		}
		dr.waitCluster(t, "removed shard gone", stableWith(id(0), id(1), id(3)))
		dr.checkAll(t, keys)
		if n := d[2].contexts(t); n != 0 {
			t.Errorf("removed shard still holds %d contexts, want 0 (drained)", n)
		}
		// Still in DNS: never added back.
		time.Sleep(200 * time.Millisecond)
		if v := dr.cluster(t); slices.Contains(v.names(), id(2)) {
			t.Errorf("removed shard came back: %v", v.names())
		}
		// Three shards, three replicas: one more removal would break them.
		code, raw = call(t, "DELETE", dr.url+"/api/v1/admin/shards/"+id(3), nil)
		if code != http.StatusPreconditionFailed {
			t.Errorf("remove down to 2 shards with replicas = 3: %d %s, want 412", code, raw)
		}
	})

	t.Run("removing a dead node does not wait for it", func(t *testing.T) {
		// A fifth node joins, then the first dies for good and is removed.
		d = append(d, startDaemon(t))
		dns.set(d[0].addr(), d[1].addr(), d[3].addr(), d[4].addr())
		dr.waitCluster(t, "fifth node in", stableWith(id(0), id(1), id(3), id(4)))
		d[0].srv.Close()
		dns.set(d[1].addr(), d[3].addr(), d[4].addr())
		dr.waitCluster(t, "dead node down", func(v clusterView) bool {
			_, state := v.shard(id(0))
			return state == "down"
		})
		if code, raw := call(t, "POST", dr.url+"/api/v1/admin/remove?shard="+id(0), nil); code != http.StatusAccepted {
			t.Fatalf("remove dead %s = %d %s, want 202", id(0), code, raw)
		}
		dr.waitCluster(t, "dead node removed", stableWith(id(1), id(3), id(4)))
		dr.checkAll(t, keys)
	})
}

func TestDiscoverFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-discover=storaged"},
		{"-discover=:8081"},
		{"-discover=storaged:8081", "-config-file=sharding.toml"},
		{"-discover=storaged:8081", "-db-location=x.db"},
		{"-discover=storaged:8081", "-replicas=0"},
		{"-discover=storaged:8081", "-discover-interval=0s"},
		{"-replicas=3"},
		{"-discover-interval=1s"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		var usage *daemon.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}
