package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedShard serves a store and holds the first Get request until released,
// counting the requests of each kind it answered.
type gatedShard struct {
	store     *Store
	client    *Client
	held      chan struct{} // closed when the first Get is being held
	release   chan struct{}
	gets      atomic.Int64
	multiGets atomic.Int64
	applies   atomic.Int64
	first     sync.Once

	mu      sync.Mutex
	batches []string // "op:calls" per request the client sent, as observed
}

func newGatedShard(t *testing.T, inFlight int) *gatedShard {
	t.Helper()
	g := &gatedShard{store: openTestStore(t), held: make(chan struct{}), release: make(chan struct{})}
	h := NewHandler(g.store, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, pathGet):
			g.gets.Add(1)
			g.first.Do(func() {
				close(g.held)
				<-g.release
			})
		case strings.HasPrefix(r.URL.Path, pathMultiGet):
			g.multiGets.Add(1)
		case strings.HasPrefix(r.URL.Path, pathApply):
			g.applies.Add(1)
			g.first.Do(func() {
				close(g.held)
				<-g.release
			})
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.client = NewClient("sh-gated", srv.URL, nil)
	g.client.InFlight = inFlight
	g.client.ObserveBatches(func(op string, calls int) {
		g.mu.Lock()
		g.batches = append(g.batches, fmt.Sprintf("%s:%d", op, calls))
		g.mu.Unlock()
	})
	t.Cleanup(g.client.hc.CloseIdleConnections)
	return g
}

// queued waits until n Gets, or n Applies, wait in the client's queues.
func (g *gatedShard) queued(t *testing.T, n int) {
	t.Helper()
	for i := 0; ; i++ {
		g.client.gets.mu.Lock()
		got := len(g.client.gets.queue)
		g.client.gets.mu.Unlock()
		g.client.applies.mu.Lock()
		got += len(g.client.applies.queue)
		g.client.applies.mu.Unlock()
		if got == n {
			return
		}
		if got > n || i > 10000 {
			t.Fatalf("%d Gets queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestClientGetBatching: Gets that find every request slot busy wait, then
// leave together as one MultiGet per bucket, and each caller gets exactly
// what a Get of its own would have returned: values, tombstones, not found.
func TestClientGetBatching(t *testing.T) {
	g := newGatedShard(t, 1)
	ctx := context.Background()
	var writes []Write
	for i := range 30 {
		writes = append(writes, put(fmt.Sprintf("k%02d", i), uint64(10+i), fmt.Sprintf("value-%02d", i)))
	}
	mustApply(t, g.store, "a", writes...)
	mustApply(t, g.store, "a", del("k05", 100), del("k06", 100))
	mustApply(t, g.store, "b", put("k01", 7, "in b"))

	type ask struct{ bucket, key string }
	var asks []ask
	for i := range 40 { // k30..k39 were never written
		asks = append(asks, ask{"a", fmt.Sprintf("k%02d", i)})
	}
	asks = append(asks, ask{"b", "k01"}, ask{"b", "k02"}, ask{"a", "k01"})

	firstDone := make(chan error, 1)
	go func() {
		_, err := g.client.Get(ctx, "a", []byte("k00"))
		firstDone <- err
	}()
	<-g.held // the only slot is taken: everything below queues
	type answer struct {
		rec Record
		err error
	}
	answers := make([]answer, len(asks))
	var wg sync.WaitGroup
	for i, a := range asks {
		wg.Go(func() {
			rec, err := g.client.Get(ctx, a.bucket, []byte(a.key))
			answers[i] = answer{rec, err}
		})
	}
	g.queued(t, len(asks))
	close(g.release)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatalf("held Get: %v", err)
	}

	for i, a := range asks {
		want, wantErr := g.store.Get(ctx, a.bucket, []byte(a.key))
		got := answers[i]
		switch {
		case errors.Is(wantErr, ErrNotFound):
			if !errors.Is(got.err, ErrNotFound) {
				t.Errorf("Get(%s, %s) = %s, %v; want ErrNotFound", a.bucket, a.key, show(got.rec), got.err)
			}
		case wantErr != nil:
			t.Fatalf("store Get(%s, %s): %v", a.bucket, a.key, wantErr)
		case got.err != nil || !sameRecord(got.rec, want):
			t.Errorf("Get(%s, %s) = %s, %v; store holds %s", a.bucket, a.key, show(got.rec), got.err, show(want))
		}
	}
	if !answers[5].rec.Tombstone || answers[5].rec.Value != nil {
		t.Errorf("tombstone k05 = %s, want a tombstone without value", show(answers[5].rec))
	}
	// One Get held the slot; the queue left as one MultiGet for bucket a
	// and one for bucket b.
	if g.gets.Load() != 1 || g.multiGets.Load() != 2 {
		t.Errorf("shard saw %d Gets and %d MultiGets, want 1 and 2", g.gets.Load(), g.multiGets.Load())
	}
	slices.Sort(g.batches[1:]) // the queue leaves bucket by bucket, whichever came first
	if got := strings.Join(g.batches, " "); got != "get:1 get:2 get:41" {
		t.Errorf("observed requests %q, want the held Get, then 41 Gets of bucket a and 2 of b", got)
	}
}

// TestClientGetBatchCancel: a queued caller that gives up returns at once;
// the batch still answers the others.
func TestClientGetBatchCancel(t *testing.T) {
	g := newGatedShard(t, 1)
	mustApply(t, g.store, "a", put("x", 1, "x"), put("y", 2, "y"))
	go g.client.Get(context.Background(), "a", []byte("x"))
	<-g.held

	cctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := g.client.Get(cctx, "a", []byte("x"))
		gaveUp <- err
	}()
	patient := make(chan Record, 1)
	go func() {
		rec, err := g.client.Get(context.Background(), "a", []byte("y"))
		if err != nil {
			t.Errorf("patient Get: %v", err)
		}
		patient <- rec
	}()
	g.queued(t, 2)
	cancel()
	if err := <-gaveUp; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "canceled") {
		t.Errorf("cancelled Get = %v, want ErrUnavailable naming the cancellation", err)
	}
	close(g.release)
	if rec := <-patient; string(rec.Value) != "y" || rec.Version != 2 {
		t.Errorf("patient Get = %s, want y@2", show(rec))
	}
}

// TestClientGetBatchErrors: a bad key is refused before it can spoil a batch,
// and a shard that is gone fails every queued caller with ErrUnavailable.
func TestClientGetBatchErrors(t *testing.T) {
	g := newGatedShard(t, 1)
	if _, err := g.client.Get(context.Background(), "a", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get of an empty key = %v, want ErrInvalid", err)
	}
	if _, err := g.client.Get(context.Background(), "a", make([]byte, MaxKeySize+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get of an oversized key = %v, want ErrInvalid", err)
	}
	if g.gets.Load() != 0 {
		t.Errorf("invalid keys reached the shard (%d requests)", g.gets.Load())
	}

	down := NewClient("sh-down", "127.0.0.1:1", nil) // nothing listens on port 1
	down.InFlight = 1
	down.gets.inflight = 1 // as if a request were on the wire: the next Gets queue
	errs := make(chan error, 3)
	for _, k := range []string{"a", "b", "c"} {
		go func() {
			_, err := down.Get(context.Background(), "x", []byte(k))
			errs <- err
		}()
	}
	for i := 0; ; i++ {
		down.gets.mu.Lock()
		n := len(down.gets.queue)
		down.gets.mu.Unlock()
		if n == 3 {
			break
		}
		if i > 10000 {
			t.Fatalf("%d Gets queued, want 3", n)
		}
		time.Sleep(time.Millisecond)
	}
	release(&down.gets, down.getMany)
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrUnavailable) {
			t.Errorf("batched Get on a dead shard = %v, want ErrUnavailable", err)
		}
	}
}

// TestClientApplyBatching: Applies that find every slot busy leave together,
// one request per bucket and epoch; each caller gets the outcomes of its own
// writes, and a refused or stale write does not change anyone else's.
func TestClientApplyBatching(t *testing.T) {
	g := newGatedShard(t, 1)
	bg := context.Background()
	mustApply(t, g.store, "a", put("old", 50, "held"))

	firstDone := make(chan error, 1)
	go func() {
		_, err := g.client.Apply(bg, "a", []Write{put("first", 1, "f")})
		firstDone <- err
	}()
	<-g.held
	type call struct {
		ctx    context.Context
		bucket string
		writes []Write
		want   []Outcome
	}
	calls := []call{
		{WithEpoch(bg, 0), "a", []Write{put("p", 10, "p10"), put("q", 10, "q10")}, []Outcome{Applied, Applied}},
		{WithEpoch(bg, 0), "a", []Write{put("old", 40, "stale")}, []Outcome{Stale}},
		{WithEpoch(bg, 0), "a", []Write{cond(put("p", 11, "p11"), CondAbsent, 0)}, []Outcome{Conflict}},
		{bg, "a", []Write{put("r", 10, "r10")}, []Outcome{Applied}},
		{bg, "b", []Write{put("p", 10, "b10")}, []Outcome{Applied}},
	}
	results := make([][]Result, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		// Queue them one by one, so the writes to p keep this order.
		wg.Go(func() { results[i], errs[i] = g.client.Apply(c.ctx, c.bucket, c.writes) })
		g.queued(t, i+1)
	}
	close(g.release)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatalf("held Apply: %v", err)
	}
	for i, c := range calls {
		if errs[i] != nil {
			t.Errorf("Apply #%d: %v", i, errs[i])
			continue
		}
		if len(results[i]) != len(c.want) {
			t.Errorf("Apply #%d: %d results for %d writes", i, len(results[i]), len(c.writes))
			continue
		}
		for j, w := range c.want {
			if results[i][j].Outcome != w {
				t.Errorf("Apply #%d write %d: outcome %v, want %v", i, j, results[i][j].Outcome, w)
			}
		}
	}
	for _, want := range []struct{ bucket, key, value string }{{"a", "p", "p10"}, {"a", "q", "q10"}, {"a", "old", "held"}, {"a", "r", "r10"}, {"b", "p", "b10"}} {
		rec, err := g.store.Get(bg, want.bucket, []byte(want.key))
		if err != nil || string(rec.Value) != want.value {
			t.Errorf("%s/%s = %s, %v; want %q", want.bucket, want.key, show(rec), err, want.value)
		}
	}
	// The held Apply, then one request for the three calls under epoch 0,
	// one for bucket a without an epoch, one for bucket b.
	if n := g.applies.Load(); n != 4 {
		t.Errorf("shard saw %d Apply requests, want 4", n)
	}
	if got := strings.Join(g.batches, " "); got != "apply:1 apply:3 apply:1 apply:1" {
		t.Errorf("observed requests %q, want the held Apply, 3 calls under epoch 0, then 1 and 1", got)
	}
}

// TestClientApplyBatchStaleEpoch: a batch sent under an epoch older than the
// shard's is refused as a whole, and every caller in it hears ErrStaleEpoch.
func TestClientApplyBatchStaleEpoch(t *testing.T) {
	g := newGatedShard(t, 1)
	bg := context.Background()
	mustApply(t, g.store, ClusterBucket, put(MapKey, 9, "{}"))
	go g.client.Apply(bg, "a", []Write{put("first", 1, "f")})
	<-g.held
	errs := make(chan error, 2)
	for _, k := range []string{"x", "y"} {
		go func() {
			_, err := g.client.Apply(WithEpoch(bg, 3), "a", []Write{put(k, 1, k)})
			errs <- err
		}()
	}
	g.queued(t, 2)
	close(g.release)
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("Apply under a stale epoch = %v, want ErrStaleEpoch", err)
		}
	}
	for _, k := range []string{"x", "y"} {
		if _, err := g.store.Get(bg, "a", []byte(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s was written under a stale epoch (%v)", k, err)
		}
	}
}
