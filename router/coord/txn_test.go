package coord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// txnCluster is three real shards (BoltDB files behind storage handlers,
// reached through storage clients) holding every key (replicas 3), and a
// coordinator over them.
type txnCluster struct {
	c      *Coordinator
	stores []*storage.Store
	srvs   []*httptest.Server
}

func newTxnCluster(t *testing.T) *txnCluster {
	t.Helper()
	tc := &txnCluster{}
	var nodes []*placement.Node
	for i := range 3 {
		st, err := storage.Open(filepath.Join(t.TempDir(), fmt.Sprintf("sh-%d.db", i+1)), storage.Options{NoSync: true})
		if err != nil {
			t.Fatalf("storage.Open = %v", err)
		}
		srv := httptest.NewServer(storage.NewHandler(st, nil))
		t.Cleanup(func() { srv.Close(); st.Close() })
		name := fmt.Sprintf("sh-%d", i+1)
		nodes = append(nodes, placement.NewNode(name, srv.URL, storage.NewClient(name, srv.URL, nil)))
		tc.stores, tc.srvs = append(tc.stores, st), append(tc.srvs, srv)
	}
	shape, err := placement.NewShape(nodes, 3)
	if err != nil {
		t.Fatalf("NewShape = %v", err)
	}
	topo := placement.NewTopology(1, placement.StateStable, shape, placement.Shape{}, nil)
	var wg sync.WaitGroup
	bg, stop := context.WithCancel(context.Background())
	t.Cleanup(func() { stop(); wg.Wait() })
	tc.c = New(Config{
		Topology:     func() *placement.Topology { return topo },
		Refresh:      func(context.Context) {},
		Clock:        &hlc.Clock{},
		ShardTimeout: 5 * time.Second,
		Metrics:      metrics.NewRouter(prometheus.NewRegistry()),
		Go: func(fn func(ctx context.Context)) {
			wg.Add(1)
			go func() { defer wg.Done(); fn(bg) }()
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return tc
}

// appendOne appends one record to the conversation "conv": it reads the
// header (the count), then writes the header iff unchanged with record
// count+1 beside it. It retries collisions a bounded number of times and
// returns the sequence number stored.
func appendOne(ctx context.Context, c *Coordinator) (int, error) {
	for range 200 {
		cur, err := c.Get(ctx, "conv", "head", []byte("conv"))
		cond, match, n := storage.CondAbsent, uint64(0), 0
		switch {
		case err == nil:
			cond, match = storage.CondVersion, cur.Version
			if n, err = strconv.Atoi(string(cur.Value)); err != nil {
				return 0, fmt.Errorf("header %q: %w", cur.Value, err)
			}
		case !errors.Is(err, storage.ErrNotFound):
			return 0, err
		}
		msg := storage.TxnWrite{Bucket: "msgs", Write: storage.Write{Record: storage.Record{
			Key: fmt.Appendf(nil, "conv/%06d", n+1), Value: []byte("turn")}}}
		res, _, err := c.WriteTxn(ctx, "conv", "head", []byte("conv"), []byte(strconv.Itoa(n+1)), cond, match, []storage.TxnWrite{msg})
		if err != nil {
			return 0, err
		}
		if res.Outcome == storage.Applied {
			return n + 1, nil
		}
	}
	return 0, errors.New("appendOne: collided 200 times")
}

// TestWriteTxnConcurrentAppends runs concurrent appenders over three
// replicas, one of them unreachable from the start (its answers fail as a
// dead daemon's do): every acknowledged append has exactly its record on
// the live replicas, none is doubled, none is missing.
func TestWriteTxnConcurrentAppends(t *testing.T) {
	tc := newTxnCluster(t)
	tc.srvs[0].Close() // sh-1, very likely someone's primary, is gone
	ctx := context.Background()
	const writers, each = 6, 15
	var mu sync.Mutex // guards seqs
	seqs := map[int]int{}
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				seq, err := appendOne(ctx, tc.c)
				if err != nil {
					t.Errorf("append = %v", err)
					return
				}
				mu.Lock()
				seqs[seq]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seqs) != writers*each {
		t.Errorf("%d distinct seqs acknowledged, want %d", len(seqs), writers*each)
	}
	for seq, n := range seqs {
		if n != 1 {
			t.Errorf("seq %d acknowledged %d times, want 1", seq, n)
		}
	}
	// A quorum acknowledged each append; the background sends finish too,
	// so both live replicas end up holding all of them. Wait for them
	// (bounded), then compare.
	for _, st := range tc.stores[1:] {
		var page storage.ScanPage
		for try := 0; try < 100; try++ {
			var err error
			page, err = st.Scan(ctx, "msgs", storage.ScanOptions{Prefix: []byte("conv/"), Limit: storage.MaxScanLimit})
			if err != nil {
				t.Fatalf("Scan(msgs) = %v", err)
			}
			if len(page.Records) >= writers*each {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(page.Records) != writers*each {
			t.Errorf("%s holds %d records, want %d", st.Path(), len(page.Records), writers*each)
		}
		for i, r := range page.Records {
			if want := fmt.Sprintf("conv/%06d", i+1); string(r.Key) != want {
				t.Fatalf("%s: record %d is %q, want %q", st.Path(), i, r.Key, want)
			}
		}
		head, err := st.Get(ctx, "head", []byte("conv"))
		if err != nil || string(head.Value) != strconv.Itoa(writers*each) {
			t.Errorf("%s: header = %q, %v, want %d", st.Path(), head.Value, err, writers*each)
		}
	}
}

// TestWriteTxnConflictWritesNothing checks that an append decided against
// a header that moved on stores none of its records, on any replica.
func TestWriteTxnConflictWritesNothing(t *testing.T) {
	tc := newTxnCluster(t)
	ctx := context.Background()
	if _, err := appendOne(ctx, tc.c); err != nil {
		t.Fatalf("append = %v", err)
	}
	cur, err := tc.c.Get(ctx, "conv", "head", []byte("conv"))
	if err != nil {
		t.Fatalf("Get(head) = %v", err)
	}
	// The third replica gets the first append in the background.
	for try := 0; try < 100; try++ {
		if _, err := tc.stores[2].Get(ctx, "head", []byte("conv")); err == nil {
			if _, err := tc.stores[0].Get(ctx, "head", []byte("conv")); err == nil {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	msg := storage.TxnWrite{Bucket: "msgs", Write: storage.Write{Record: storage.Record{Key: []byte("conv/late"), Value: []byte("x")}}}
	res, _, err := tc.c.WriteTxn(ctx, "conv", "head", []byte("conv"), []byte("9"), storage.CondVersion, cur.Version-1, []storage.TxnWrite{msg})
	if err != nil || res.Outcome != storage.Conflict {
		t.Fatalf("WriteTxn(old match) = %v, %v, want a conflict", res, err)
	}
	for _, st := range tc.stores {
		if rec, err := st.Get(ctx, "msgs", []byte("conv/late")); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Get(conv/late) = %v, %v, want ErrNotFound", st.Path(), rec, err)
		}
		if head, _ := st.Get(ctx, "head", []byte("conv")); string(head.Value) != "1" {
			t.Errorf("%s: header = %q, want 1", st.Path(), head.Value)
		}
	}
}

// TestRangeMergesAQuorum pages through a conversation's records while one
// replica is gone and another lacks a run of them (it missed those
// appends): the Quorum's union holds each record once, in order.
func TestRangeMergesAQuorum(t *testing.T) {
	tc := newTxnCluster(t)
	ctx := context.Background()
	const total = 250
	for range total {
		if _, err := appendOne(ctx, tc.c); err != nil {
			t.Fatalf("append = %v", err)
		}
	}
	var missed []storage.Record
	for seq := 100; seq <= 120; seq++ {
		rec, err := tc.stores[1].Get(ctx, "msgs", fmt.Appendf(nil, "conv/%06d", seq))
		if err != nil {
			t.Fatalf("Get(%d) on sh-2 = %v", seq, err)
		}
		missed = append(missed, rec)
	}
	if n, err := tc.stores[1].Purge(ctx, "msgs", missed); err != nil || n != len(missed) {
		t.Fatalf("Purge = %d, %v, want %d", n, err, len(missed))
	}
	tc.srvs[0].Close()
	var got []string
	var after []byte
	for pages := 0; ; pages++ {
		if pages > total {
			t.Fatalf("more than %d pages", total)
		}
		recs, next, err := tc.c.Range(ctx, RangeQuery{PK: "conv", Bucket: "msgs", Prefix: []byte("conv/"), After: after, Limit: 7})
		if err != nil {
			t.Fatalf("Range(after %q) = %v", after, err)
		}
		if len(recs) > 7 {
			t.Fatalf("Range(limit 7) returned %d records", len(recs))
		}
		for _, r := range recs {
			got = append(got, string(r.Key))
		}
		if next == nil {
			break
		}
		after = next
	}
	if len(got) != total {
		t.Fatalf("paged %d records, want %d", len(got), total)
	}
	for i, k := range got {
		if want := fmt.Sprintf("conv/%06d", i+1); k != want {
			t.Fatalf("record %d is %q, want %q", i, k, want)
		}
	}
}
