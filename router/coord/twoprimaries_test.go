package coord

import (
	"context"
	"errors"
	"io"
	"log/slog"
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

// gatedShard holds every Txn until gate is closed: a slow link. arrived
// is closed when the first one arrives.
type gatedShard struct {
	placement.Shard
	gate    chan struct{}
	arrived chan struct{}
	once    sync.Once
}

func (g *gatedShard) Txn(ctx context.Context, writes []storage.TxnWrite) ([]storage.Result, error) {
	g.once.Do(func() { close(g.arrived) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Shard.Txn(ctx, writes)
}

// routerOver is another coordinator (another router, with its own clock
// and its own view of the nodes' health) over tc's shards; the Txns it
// sends to the node named gated wait for gate, and arrived is closed when
// the first one does.
func routerOver(t *testing.T, tc *txnCluster, gated string, gate, arrived chan struct{}) (*Coordinator, []*placement.Node) {
	t.Helper()
	var nodes []*placement.Node
	for i, srv := range tc.srvs {
		name := "sh-" + strconv.Itoa(i+1)
		var sh placement.Shard = storage.NewClient(name, srv.URL, nil)
		if name == gated {
			sh = &gatedShard{Shard: sh, gate: gate, arrived: arrived}
		}
		nodes = append(nodes, placement.NewNode(name, srv.URL, sh))
	}
	shape, err := placement.NewShape(nodes, 3)
	if err != nil {
		t.Fatalf("NewShape = %v", err)
	}
	topo := placement.NewTopology(1, placement.StateStable, shape, placement.Shape{}, nil)
	var wg sync.WaitGroup
	bg, stop := context.WithCancel(context.Background())
	t.Cleanup(func() { stop(); wg.Wait() })
	c := New(Config{
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
	return c, topo.Owners("conv").Union
}

// TestWriteTxnTwoPrimaries: two routers that disagree on the health of a
// key's first owner (router A still holds it stale after it came back;
// router B does not) must not both acknowledge an append on the same
// header version. Before conditional writes were always decided by the
// first owner, this was the loss: B reads the header and sends its append to the first owner
// over a slow link; meanwhile A decides its append at the second owner
// and has it acknowledged by the second and third (its copy to the first
// is slow too). B's append then finds the first owner still at the old
// header, applies there, and the other two answer Stale (they hold A's
// newer header), which B counts as acknowledgements: both appends are
// acknowledged as seq 2, and one of the two message records is lost.
func TestWriteTxnTwoPrimaries(t *testing.T) {
	tc := newTxnCluster(t)
	ctx := context.Background()
	if seq, err := appendOne(ctx, tc.c); err != nil || seq != 1 {
		t.Fatalf("first append = %d, %v; want 1", seq, err)
	}
	gateA, gateB := make(chan struct{}), make(chan struct{})
	defer func() {
		select {
		case <-gateA:
		default:
			close(gateA)
		}
	}()
	_, owners := routerOver(t, tc, "", nil, nil)
	first := owners[0].Name
	aAtGate := make(chan struct{})
	a, aNodes := routerOver(t, tc, first, gateA, aAtGate)
	bAtGate := make(chan struct{})
	b, _ := routerOver(t, tc, first, gateB, bAtGate)
	// A saw the first owner go down and come back, not yet repaired.
	aNodes[0].Health.Probed(storage.Health{}, errors.New("probe failed"), 1)
	aNodes[0].Health.Probed(storage.Health{}, nil, 1)
	if !aNodes[0].Health.Stale() {
		t.Fatalf("%s not stale in A's view", first)
	}

	type result struct {
		seq int
		err error
	}
	bDone := make(chan result, 1)
	go func() {
		seq, err := appendOne(ctx, b) // reads seq 1, then waits at the gate
		bDone <- result{seq, err}
	}()
	select {
	case <-bAtGate: // B has read the header and decided at the first owner
	case rb := <-bDone:
		t.Fatalf("B's append finished (%d, %v) before reaching the first owner", rb.seq, rb.err)
	}
	// A decides at the same owner as B, however it saw that owner's
	// health: it waits behind its own slow link.
	aDone := make(chan result, 1)
	go func() {
		seq, err := appendOne(ctx, a)
		aDone <- result{seq, err}
	}()
	<-aAtGate // A asked the first owner: to decide (now), or to replicate (before)
	var ra result
	gotA := false
	select {
	case ra = <-aDone: // decided elsewhere and acknowledged: the old loss follows
		gotA = true
	case <-time.After(time.Second):
	}
	close(gateB)
	rb := <-bDone
	close(gateA)
	if !gotA {
		ra = <-aDone
	}
	if rb.err != nil || ra.err != nil {
		t.Fatalf("B's append = %d, %v; A's = %d, %v", rb.seq, rb.err, ra.seq, ra.err)
	}
	if ra.seq == rb.seq || min(ra.seq, rb.seq) != 2 || max(ra.seq, rb.seq) != 3 {
		t.Errorf("A acknowledged seq %d and B seq %d, want 2 and 3 in some order", ra.seq, rb.seq)
	}
	if seq, err := appendOne(ctx, tc.c); err != nil || seq != 4 {
		t.Errorf("the next append = %d, %v; want 4: every acknowledged one counted", seq, err)
	}
}
