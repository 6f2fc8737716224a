package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Discovery mode (-discover=storaged:8081): the storage daemons are the
// addresses a DNS name resolves to, as a compose service name resolves to
// every replica of the service. Each daemon is known by the node id kept
// in its data file, never by its address, which changes when its container
// restarts: a known id seen at a new address keeps its place and its data,
// a new id joins through the router's rebalance. A daemon that vanishes
// from DNS stays in the cluster, down, until an operator removes it
// (POST /api/v1/admin/remove?shard=ID); the router keeps that rule
// (router.Config.Discovery).

// resolveFunc returns the host:port addresses the daemons answer on now.
type resolveFunc func(ctx context.Context) ([]string, error)

// lookupHost resolves target (host:port) through DNS: every address of the
// host, each with the port.
func lookupHost(target string) (resolveFunc, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("%q is not host:port", target)
	}
	return func(ctx context.Context) ([]string, error) {
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = net.JoinHostPort(ip, port)
		}
		return out, nil
	}, nil
}

// discoverer keeps the daemons found so far, by node id.
type discoverer struct {
	target  string // what -discover named: every member's router.Node.Address
	resolve resolveFunc
	hc      *http.Client
	log     *slog.Logger

	// mu guards members: every node id seen, or named by the cluster map.
	mu      sync.Mutex
	members map[string]*member
}

func newDiscoverer(target string, resolve resolveFunc, hc *http.Client, log *slog.Logger) *discoverer {
	return &discoverer{target: target, resolve: resolve, hc: hc, log: log, members: map[string]*member{}}
}

// member returns the daemon with node id id, creating it (not yet found
// at any address: unavailable) the first time. The router reaches a shard
// named only by the cluster map this way, until DNS finds it.
func (d *discoverer) member(id string) *member {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.members[id]
	if m == nil {
		m = &member{id: id}
		d.members[id] = m
	}
	return m
}

// nodes lists every member as the router wants them: named by node id.
// Members the router was never told about (seen but unreachable since) are
// listed too; the router drops those an operator removed.
func (d *discoverer) nodes() []router.Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.members))
	for id, m := range d.members {
		if m.found.Load() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := make([]router.Node, len(ids))
	for i, id := range ids {
		out[i] = router.Node{Name: id, Address: d.target, Shard: d.members[id]}
	}
	return out
}

// configure sets cfg for discovery mode: the shards are the members, named
// by node id; a shard known only from the cluster map is reached through
// its member, found when DNS shows it; replicas stays what the flag says.
func (d *discoverer) configure(cfg *router.Config, nodes []router.Node, replicas int) {
	cfg.Mode, cfg.Discovery = "discovery", true
	cfg.Nodes, cfg.Replicas = nodes, replicas
	cfg.NewShard = func(name, _ string) router.Shard { return d.member(name) }
	cfg.Reload = func() ([]router.Node, int, error) { return d.nodes(), replicas, nil }
}

// refresh resolves the name, asks every address for its node id and
// updates the members. It reports how many daemons answered and whether
// a node id never seen before did.
func (d *discoverer) refresh(ctx context.Context) (answered int, joined bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := d.resolve(rctx)
	if err != nil {
		return 0, false, fmt.Errorf("resolve %s: %w", d.target, err)
	}
	ids := make([]string, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			h, err := storage.NewClient(addr, addr, d.hc).Health(hctx)
			if err != nil || h.NodeID == "" {
				d.log.Debug("discovered address does not answer", "addr", addr, "err", err)
				return
			}
			ids[i] = h.NodeID
		})
	}
	wg.Wait()

	d.mu.Lock()
	defer d.mu.Unlock()
	byAddr := map[string]string{} // address → node id answering there now
	for i, id := range ids {
		if id == "" {
			continue
		}
		answered++
		byAddr[addrs[i]] = id
		m := d.members[id]
		if m == nil {
			m = &member{id: id}
			d.members[id] = m
		}
		if !m.found.Swap(true) {
			joined = true
			d.log.Info("storage node discovered", "node_id", id, "addr", addrs[i])
		}
		if old := m.addr(); old != addrs[i] {
			if old != "" {
				d.log.Info("storage node moved", "node_id", id, "from", old, "to", addrs[i])
			}
			m.at.Store(&location{addr: addrs[i], client: storage.NewClient(id, addrs[i], d.hc)})
		}
	}
	// An address now answered by another node (a restarted container got
	// a former neighbour's IP): the member that was there is lost until
	// DNS shows where it went.
	for id, m := range d.members {
		if now, ok := byAddr[m.addr()]; ok && now != id {
			d.log.Warn("storage node's address taken by another node", "node_id", id, "addr", m.addr(), "now", now)
			m.at.Store(nil)
		}
	}
	return answered, joined, nil
}

// wait refreshes until at least want daemons answer, or until patience
// runs out with at least one: a new cluster is then created with all the
// daemons compose is starting, rather than grown one rebalance at a time.
func (d *discoverer) wait(ctx context.Context, want int, patience, every time.Duration) ([]router.Node, error) {
	deadline := time.Now().Add(patience)
	for {
		n, _, err := d.refresh(ctx)
		if n >= want || (n > 0 && time.Now().After(deadline)) {
			return d.nodes(), nil
		}
		d.log.Info("waiting for storage nodes", "target", d.target, "answered", n, "want", want, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(every):
		}
	}
}

// watch refreshes every interval until ctx ends and calls reload when a
// new node joined (or after a failed reload, until one succeeds). The
// returned func waits for the loop to end.
func (d *discoverer) watch(ctx context.Context, interval time.Duration, reload func() error) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		pending := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_, joined, err := d.refresh(ctx)
			if err != nil {
				d.log.Warn("discovery", "err", err)
			}
			if !joined && !pending {
				continue
			}
			if err := reload(); err != nil {
				d.log.Error("discovery: reload refused", "err", err)
				pending = true
				continue
			}
			pending = false
		}
	}()
	return func() { <-done }
}

var _ router.Shard = (*member)(nil)

// member is one storage daemon known by node id. It satisfies
// router.Shard (and the vector search) by forwarding to the client of its
// current address, which refresh swaps when the daemon moves.
type member struct {
	id    string
	found atomic.Bool              // answered at some address once
	at    atomic.Pointer[location] // nil: no address known now
}

// location is where a member answers: the address DNS gave and its client.
type location struct {
	addr   string // host:port
	client *storage.Client
}

// addr is the host:port the member answers on now, "" while unknown.
func (m *member) addr() string {
	if l := m.at.Load(); l != nil {
		return l.addr
	}
	return ""
}

// Addr is the URL the daemon is reached at now ("" while unknown); the
// router shows it in /api/v1/cluster.
func (m *member) Addr() string {
	if l := m.at.Load(); l != nil {
		return l.client.Addr()
	}
	return ""
}

func (m *member) c() (*storage.Client, error) {
	l := m.at.Load()
	if l == nil {
		return nil, fmt.Errorf("shard %s: no address known (not found by DNS): %w", m.id, storage.ErrUnavailable)
	}
	return l.client, nil
}

func (m *member) Get(ctx context.Context, bucket string, key []byte) (storage.Record, error) {
	c, err := m.c()
	if err != nil {
		return storage.Record{}, err
	}
	return c.Get(ctx, bucket, key)
}

func (m *member) Apply(ctx context.Context, bucket string, writes []storage.Write) ([]storage.Result, error) {
	c, err := m.c()
	if err != nil {
		return nil, err
	}
	return c.Apply(ctx, bucket, writes)
}

func (m *member) Txn(ctx context.Context, writes []storage.TxnWrite) ([]storage.Result, error) {
	c, err := m.c()
	if err != nil {
		return nil, err
	}
	return c.Txn(ctx, writes)
}

func (m *member) Scan(ctx context.Context, bucket string, opts storage.ScanOptions) (storage.ScanPage, error) {
	c, err := m.c()
	if err != nil {
		return storage.ScanPage{}, err
	}
	return c.Scan(ctx, bucket, opts)
}

func (m *member) DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error) {
	c, err := m.c()
	if err != nil {
		return 0, err
	}
	return c.DeletePrefix(ctx, bucket, prefix, version)
}

func (m *member) MultiGet(ctx context.Context, bucket string, keys [][]byte) ([]storage.Record, error) {
	c, err := m.c()
	if err != nil {
		return nil, err
	}
	return c.MultiGet(ctx, bucket, keys)
}

func (m *member) Purge(ctx context.Context, bucket string, recs []storage.Record) (int, error) {
	c, err := m.c()
	if err != nil {
		return 0, err
	}
	return c.Purge(ctx, bucket, recs)
}

func (m *member) TopK(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error) {
	c, err := m.c()
	if err != nil {
		return storage.TopKResult{}, err
	}
	return c.TopK(ctx, bucket, q)
}

// Reindex asks the daemon to rebuild its vector indexes.
func (m *member) Reindex(ctx context.Context) error {
	c, err := m.c()
	if err != nil {
		return err
	}
	return c.Reindex(ctx)
}

// Snapshot streams the daemon's consistent snapshot (backups).
func (m *member) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	c, err := m.c()
	if err != nil {
		return nil, err
	}
	return c.Snapshot(ctx)
}

// Health probes the daemon and checks that it is still this node: an
// address taken over by another daemon must not pass for this one.
func (m *member) Health(ctx context.Context) (storage.Health, error) {
	c, err := m.c()
	if err != nil {
		return storage.Health{}, err
	}
	h, err := c.Health(ctx)
	if err == nil && h.NodeID != m.id {
		return storage.Health{}, fmt.Errorf("shard %s: %s answers as node %s: %w", m.id, c.Addr(), h.NodeID, storage.ErrUnavailable)
	}
	return h, err
}
