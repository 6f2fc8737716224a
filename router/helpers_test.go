package router

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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/coherence"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// testCluster is a router in front of real shards: BoltDB files in a temp
// dir, each served by storage.NewHandler and reached by storage.Client.
type testCluster struct {
	URL    string
	router *Router
	reg    *prometheus.Registry
	stores []*storage.Store
	faults []*faultyShard   // one per shard, wrapping its client
	nodes  []placement.Node // every shard made, in order

	mu       sync.Mutex       // guards want and replicas
	want     []placement.Node // what Config.Reload returns
	replicas int
}

type clusterOpts struct {
	shards         int
	replicas       int
	cacheBytes     int64
	maxBody        int64
	repairInterval time.Duration
	expiryInterval time.Duration // of the TTL purge; zero: an hour
	llm            LLMConfig     // the Ollama bridge; zero: off
}

func newTestCluster(t testing.TB, o clusterOpts) *testCluster {
	t.Helper()
	if o.shards == 0 {
		o.shards = 3
	}
	if o.cacheBytes == 0 {
		o.cacheBytes = 64 << 20
	}
	if o.repairInterval == 0 {
		o.repairInterval = time.Hour
	}
	if o.expiryInterval == 0 {
		o.expiryInterval = time.Hour
	}
	tc := &testCluster{reg: prometheus.NewRegistry(), replicas: o.replicas}
	for range o.shards {
		tc.want = append(tc.want, tc.addShard(t))
	}
	tc.router = tc.newRouter(t, Config{
		Nodes:          tc.want,
		CacheBytes:     o.cacheBytes,
		MaxBodyBytes:   o.maxBody,
		Replicas:       o.replicas,
		RepairInterval: o.repairInterval,
		ExpiryInterval: o.expiryInterval,
		Registry:       tc.reg,
		LLM:            o.llm,
	})
	srv := httptest.NewServer(tc.router.Handler())
	t.Cleanup(srv.Close)
	tc.URL = srv.URL
	waitFor(t, "cluster map installed", func() bool { return tc.router.topo.Load().Epoch > 0 })
	waitFor(t, "change streams followed", tc.router.CacheCoherent)
	return tc
}

// newRouter starts a router over the cluster's shards; Reload returns
// what setShape last set.
func (tc *testCluster) newRouter(t testing.TB, cfg Config) *Router {
	t.Helper()
	cfg.ProbeInterval = 50 * time.Millisecond
	cfg.Logger = quietLogger()
	cfg.NewShard = func(name, addr string) Shard {
		for _, n := range tc.nodes {
			if n.Name == name {
				return n.Shard
			}
		}
		return storage.NewClient(name, addr, nil)
	}
	cfg.Reload = func() ([]placement.Node, int, error) {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return tc.want, tc.replicas, nil
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatalf("router.New: %v", err)
	}
	t.Cleanup(rt.Close)
	// Until it follows every shard's change stream the router caches
	// nothing; tests of the cache need it to.
	waitFor(t, "change streams followed", rt.CacheCoherent)
	return rt
}

// addShard makes one more shard (not yet in the cluster) and returns it.
func (tc *testCluster) addShard(t testing.TB) placement.Node {
	t.Helper()
	i := len(tc.nodes)
	st, err := storage.Open(filepath.Join(t.TempDir(), fmt.Sprintf("sh-%d.db", i+1)), storage.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open shard: %v", err)
	}
	srv := httptest.NewServer(storage.NewHandler(st, quietLogger()))
	t.Cleanup(func() {
		srv.CloseClientConnections() // a router's change stream may still be open
		srv.Close()
		st.Close()
	})
	name := fmt.Sprintf("sh-%d", i+1)
	f := &faultyShard{Shard: storage.NewClient(name, srv.URL, nil)}
	tc.stores = append(tc.stores, st)
	tc.faults = append(tc.faults, f)
	n := placement.Node{Name: name, Address: srv.URL, Shard: f}
	tc.nodes = append(tc.nodes, n)
	return n
}

// setShape sets what the next reload asks for.
func (tc *testCluster) setShape(nodes []placement.Node, replicas int) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.want, tc.replicas = nodes, replicas
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// faultyShard is a real shard client with a switch that makes it fail as an
// unreachable daemon would, and a count of records its scans returned.
type faultyShard struct {
	Shard
	down    atomic.Bool
	scanned atomic.Int64
}

var errDown = fmt.Errorf("connection refused (test fault): %w", storage.ErrUnavailable)

// ObserveBatches passes the router's batch observer to the client inside.
func (f *faultyShard) ObserveBatches(fn func(op string, calls int)) {
	if b, ok := f.Shard.(interface{ ObserveBatches(func(string, int)) }); ok {
		b.ObserveBatches(fn)
	}
}

// Reindex asks the shard inside to rebuild its vector indexes.
func (f *faultyShard) Reindex(ctx context.Context) error {
	if f.down.Load() {
		return errDown
	}
	return f.Shard.(placement.Reindexer).Reindex(ctx)
}

func (f *faultyShard) Get(ctx context.Context, b string, k []byte) (storage.Record, error) {
	if f.down.Load() {
		return storage.Record{}, errDown
	}
	return f.Shard.Get(ctx, b, k)
}

func (f *faultyShard) Apply(ctx context.Context, b string, w []storage.Write) ([]storage.Result, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Shard.Apply(ctx, b, w)
}

func (f *faultyShard) Txn(ctx context.Context, w []storage.TxnWrite) ([]storage.Result, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Shard.Txn(ctx, w)
}

func (f *faultyShard) Scan(ctx context.Context, b string, o storage.ScanOptions) (storage.ScanPage, error) {
	if f.down.Load() {
		return storage.ScanPage{}, errDown
	}
	p, err := f.Shard.Scan(ctx, b, o)
	f.scanned.Add(int64(len(p.Records)))
	return p, err
}

func (f *faultyShard) DeletePrefix(ctx context.Context, b string, p []byte, v uint64) (int, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.Shard.DeletePrefix(ctx, b, p, v)
}

func (f *faultyShard) MultiGet(ctx context.Context, b string, k [][]byte) ([]storage.Record, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Shard.MultiGet(ctx, b, k)
}

func (f *faultyShard) Purge(ctx context.Context, b string, recs []storage.Record) (int, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.Shard.Purge(ctx, b, recs)
}

func (f *faultyShard) Health(ctx context.Context) (storage.Health, error) {
	if f.down.Load() {
		return storage.Health{}, errDown
	}
	return f.Shard.Health(ctx)
}

// ChangesHead and Changes pass the change stream through, failing while
// the shard is down as an unreachable daemon's stream would.
func (f *faultyShard) ChangesHead(ctx context.Context) (storage.ChangeLog, error) {
	if f.down.Load() {
		return storage.ChangeLog{}, errDown
	}
	return f.Shard.(*storage.Client).ChangesHead(ctx)
}

// streams passes the change stream of the shard a test wrapper embeds
// through it (the wrapper changes nothing of it).
type streams struct{ of Shard }

func (s streams) ChangesHead(ctx context.Context) (storage.ChangeLog, error) {
	return s.of.(coherence.Source).ChangesHead(ctx)
}

func (s streams) Changes(ctx context.Context, req storage.ChangesRequest, fn func(storage.ChangeBatch) error) error {
	return s.of.(coherence.Source).Changes(ctx, req, fn)
}

func (f *faultyShard) Changes(ctx context.Context, req storage.ChangesRequest, fn func(storage.ChangeBatch) error) error {
	if f.down.Load() {
		return errDown
	}
	return f.Shard.(*storage.Client).Changes(ctx, req, func(b storage.ChangeBatch) error {
		if f.down.Load() {
			return errDown
		}
		return fn(b)
	})
}

// response is an HTTP answer with its body decoded as JSON (when it is).
type response struct {
	Status int
	Header http.Header
	Raw    []byte
	JSON   map[string]any
}

// errCode returns the API error code of an error answer.
func (r response) errCode() string {
	e, _ := r.JSON["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errMessage() string {
	e, _ := r.JSON["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

// call sends a request; body may be nil, a string (sent as is) or a value
// (sent as JSON). Content-Type is application/json unless header says.
func call(t testing.TB, method, url string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal body: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.JSON); err != nil && !errors.Is(err, io.EOF) {
			r.JSON = nil
		}
	}
	return r
}

// must checks an answer's status and fails the test with its body if not.
func must(t testing.TB, r response, status int, what string) response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s = %d %s, want %d", what, r.Status, r.Raw, status)
	}
	return r
}

func (tc *testCluster) createTopic(t testing.TB, name string) {
	t.Helper()
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": name}), 201, "create topic "+name)
}

func (tc *testCluster) putContext(t testing.TB, topic, id string, doc any) response {
	t.Helper()
	r := call(t, "PUT", tc.URL+"/api/v1/topics/"+topic+"/contexts/"+id, doc)
	if r.Status != 200 && r.Status != 201 {
		t.Fatalf("PUT context %s/%s = %d %s", topic, id, r.Status, r.Raw)
	}
	return r
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: still not true after 10s", what)
}
