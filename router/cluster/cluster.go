package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
)

// The cluster map lives on every storage node (see Map). Routers
// load it at start and whenever a node reports a newer epoch, and shards
// refuse writes planned on an older map, so several routers that see a
// configuration change at different moments never write to the wrong
// owners. A membership change is a sequence of maps, each installed on the
// nodes before the router acts on it: migrating, cleanup, stable.

// probeLoop probes every node's health each ProbeInterval.
func (cl *Cluster) probeLoop(ctx context.Context) {
	tick := time.NewTicker(cl.cfg.ProbeInterval)
	defer tick.Stop()
	for {
		cl.probeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (cl *Cluster) probeAll(ctx context.Context) {
	t := cl.topo.Load()
	var wg sync.WaitGroup
	newer := false
	var mu sync.Mutex // guards newer
	for _, n := range t.All {
		wg.Go(func() {
			// A probe may take longer than the interval on a loaded machine;
			// only one that gets no answer for half a second is a miss.
			pctx, cancel := context.WithTimeout(ctx, max(cl.cfg.ProbeInterval, 500*time.Millisecond))
			defer cancel()
			h, err := n.Shard.Health(pctx)
			if ctx.Err() != nil {
				return
			}
			cl.noteHealth(n, h, err)
			if err == nil && h.Epoch > t.Epoch {
				mu.Lock()
				newer = true
				mu.Unlock()
			}
			if err == nil && t.Epoch > 0 && h.Epoch < t.Epoch {
				// The node missed a map install while it was away.
				cl.pushMap(ctx, n)
			}
		})
	}
	wg.Wait()
	if newer {
		cl.RefreshMap(ctx)
	}
}

// noteHealth records one probe's outcome.
func (cl *Cluster) noteHealth(n *placement.Node, h storage.Health, err error) {
	wentDown, cameUp := n.Health.Probed(h, err, cl.cfg.ProbeMisses)
	switch {
	case wentDown:
		cl.log.Warn("shard down", "shard", n.Name, "err", err)
		cl.m.ShardUp.WithLabelValues(n.Name).Set(0)
	case err == nil:
		cl.m.ShardUp.WithLabelValues(n.Name).Set(1)
	}
	if cameUp {
		cl.log.Info("shard up again; repairing it", "shard", n.Name)
		cl.RequestRepair()
	}
}

// readMap returns the cluster map a node holds (nil when it holds none).
func (cl *Cluster) readMap(ctx context.Context, n *placement.Node) (*Map, error) {
	ctx, cancel := cl.shardCtx(ctx)
	defer cancel()
	rec, err := n.Shard.Get(ctx, storage.ClusterBucket, []byte(storage.MapKey))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m Map
	if err := json.Unmarshal(rec.Value, &m); err != nil {
		return nil, fmt.Errorf("cluster map on %s: %w", n.Name, err)
	}
	m.Epoch = rec.Version
	return &m, nil
}

// loadMap reads the map from every node it can reach (and from nodes the
// maps name) and returns the newest, or nil when no node holds one. It
// fails when fewer than a majority of the current nodes answer: a map read
// from a minority could be stale.
func (cl *Cluster) loadMap(ctx context.Context) (*Map, error) {
	t := cl.topo.Load()
	var best *Map
	answered := 0
	var errs []error
	for _, n := range t.All {
		m, err := cl.readMap(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		answered++
		if m != nil && (best == nil || m.Epoch > best.Epoch) {
			best = m
		}
	}
	if answered < placement.Quorum(len(t.All)) {
		return nil, fmt.Errorf("cluster map: %d of %d shards answered: %w", answered, len(t.All), errors.Join(errs...))
	}
	return best, nil
}

// RefreshMap adopts the newest map on the nodes, if newer than ours.
func (cl *Cluster) RefreshMap(ctx context.Context) {
	cl.mapMu.Lock()
	defer cl.mapMu.Unlock()
	m, err := cl.loadMap(ctx)
	if err != nil || m == nil {
		return
	}
	if m.Epoch > cl.topo.Load().Epoch {
		if err := cl.adoptLocked(m); err != nil {
			cl.log.Error("cannot adopt cluster map", "epoch", m.Epoch, "err", err)
		}
	}
}

// adoptLocked makes m the router's Topology. mapMu must be held.
func (cl *Cluster) adoptLocked(m *Map) error {
	nodes := func(list []mapShard) ([]*placement.Node, error) {
		out := make([]*placement.Node, 0, len(list))
		for _, s := range list {
			n := cl.reg.register(s.Name, s.Address, nil)
			if n == nil {
				return nil, fmt.Errorf("shard %s at %s is in the cluster map but cannot be reached", s.Name, s.Address)
			}
			out = append(out, n)
		}
		return out, nil
	}
	curNodes, err := nodes(m.Shards)
	if err != nil {
		return err
	}
	cur, err := placement.NewShape(curNodes, m.Replicas)
	if err != nil {
		return err
	}
	var prev placement.Shape
	if m.State == placement.StateMigrating {
		prevNodes, err := nodes(m.Previous)
		if err != nil {
			return err
		}
		if prev, err = placement.NewShape(prevNodes, m.PrevReplicas); err != nil {
			return err
		}
	}
	leaving, err := nodes(m.Leaving)
	if err != nil {
		return err
	}
	cl.noteRemoved(m.Removed)
	t := placement.NewTopology(m.Epoch, m.State, cur, prev, leaving)
	if m.State == placement.StateStable {
		// A stable map ends any rebalance: say so before anyone can see
		// the stable Topology, so the two never disagree.
		cl.status.finish("rebalance")
	}
	cl.topo.Store(t)
	cl.m.ClusterEpoch.Set(float64(m.Epoch))
	cl.log.Info("cluster map adopted", "epoch", m.Epoch, "state", m.State, "shards", len(m.Shards), "replicas", cur.Replicas)
	return nil
}

// installLocked writes m on every node of the current Topology and of m,
// then adopts it. It needs a majority of those nodes; a node that missed
// it gets it from the prober when it answers again. mapMu must be held.
func (cl *Cluster) installLocked(ctx context.Context, m *Map) error {
	t := cl.topo.Load()
	targets := append([]*placement.Node(nil), t.All...)
	for _, list := range [][]mapShard{m.Shards, m.Previous, m.Leaving} {
		for _, s := range list {
			if n := cl.reg.register(s.Name, s.Address, nil); n != nil && !containsNode(targets, n) {
				targets = append(targets, n)
			}
		}
	}
	body := m.Encode()
	ok := 0
	var errs []error
	for _, n := range targets {
		wctx, cancel := cl.shardCtx(ctx)
		res, err := n.Shard.Apply(wctx, storage.ClusterBucket, []storage.Write{{Record: storage.Record{Key: []byte(storage.MapKey), Version: m.Epoch, Value: body}}})
		cancel()
		switch {
		case err != nil:
			errs = append(errs, err)
		case res[0].Outcome == storage.Stale && res[0].PrevVersion > m.Epoch:
			return fmt.Errorf("shard %s holds a newer cluster map (epoch %d): another router changed the cluster", n.Name, res[0].PrevVersion)
		default:
			ok++
		}
	}
	if ok < placement.Quorum(len(targets)) {
		return fmt.Errorf("cluster map epoch %d reached %d of %d shards: %w", m.Epoch, ok, len(targets), errors.Join(errs...))
	}
	return cl.adoptLocked(m)
}

func containsNode(list []*placement.Node, n *placement.Node) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// pushMap gives a node that came back the map it missed.
func (cl *Cluster) pushMap(ctx context.Context, n *placement.Node) {
	t := cl.topo.Load()
	m := cl.MapOf(t)
	wctx, cancel := cl.shardCtx(ctx)
	defer cancel()
	if _, err := n.Shard.Apply(wctx, storage.ClusterBucket, []storage.Write{{Record: storage.Record{Key: []byte(storage.MapKey), Version: m.Epoch, Value: m.Encode()}}}); err != nil {
		cl.log.Debug("push cluster map", "shard", n.Name, "err", err)
	}
}

// MapOf describes a Topology as a map.
func (cl *Cluster) MapOf(t *placement.Topology) *Map {
	m := &Map{Epoch: t.Epoch, State: t.State, Replicas: t.Cur.Replicas, Shards: mapShards(t.Cur.Ring.Nodes()), Leaving: mapShards(t.Leaving)}
	if t.Prev.Ring != nil {
		m.Previous, m.PrevReplicas = mapShards(t.Prev.Ring.Nodes()), t.Prev.Replicas
	}
	if len(m.Leaving) == 0 {
		m.Leaving = nil
	}
	m.Removed = cl.removedNames()
	return m
}

// bootstrap loads the cluster map once the shards answer, creates it on a
// new cluster, finishes a membership change an earlier router left under
// way, and applies the configured Shape if it differs from the map.
func (cl *Cluster) bootstrap(ctx context.Context) {
	for {
		done, err := cl.bootstrapOnce(ctx)
		if done {
			return
		}
		cl.log.Warn("cluster map not loaded yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(cl.cfg.ProbeInterval):
		}
	}
}

func (cl *Cluster) bootstrapOnce(ctx context.Context) (bool, error) {
	cl.mapMu.Lock()
	m, err := cl.loadMap(ctx)
	if err != nil {
		cl.mapMu.Unlock()
		return ctx.Err() != nil, err
	}
	if m == nil {
		t := cl.topo.Load()
		first := cl.MapOf(t)
		first.Epoch, first.State = 1, placement.StateStable
		err := cl.installLocked(ctx, first)
		cl.mapMu.Unlock()
		return err == nil || ctx.Err() != nil, err
	}
	if m.Epoch > cl.topo.Load().Epoch {
		if err := cl.adoptLocked(m); err != nil {
			cl.mapMu.Unlock()
			return ctx.Err() != nil, err
		}
	}
	cl.mapMu.Unlock()
	cl.converge(ctx)
	return true, nil
}

// Reload re-reads the wanted Shape (Config.Reload) and, if it differs from
// the cluster's, starts moving data to it in the background. It also
// reloads the compression dictionaries from the shards (with or without a
// config file).
func (cl *Cluster) Reload() error {
	if cl.cfg.OnReload != nil {
		cl.cfg.OnReload()
	}
	if cl.cfg.Reload == nil {
		return errors.New("reload: the router was started without a config file")
	}
	nodes, replicas, err := cl.cfg.Reload()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	want, err := cl.reg.shapeOf(nodes, replicas)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	cl.desiredMu.Lock()
	cl.desired, cl.wantReplicas = want, max(1, replicas)
	cl.desiredMu.Unlock()
	cl.cfg.Go(cl.converge)
	return nil
}

// converge drives the cluster from its current map to the desired Shape:
// it resumes a change under way, or starts one if the shapes differ.
func (cl *Cluster) converge(ctx context.Context) {
	if !cl.syncMu.TryLock() {
		// A pass is running: a repair converges when it ends, a rebalance
		// rereads the desired Shape when it reaches a stable map.
		return
	}
	defer cl.syncMu.Unlock()
	for ctx.Err() == nil {
		t := cl.topo.Load()
		var err error
		switch t.State {
		case placement.StateMigrating:
			err = cl.finishCopy(ctx, t)
		case placement.StateCleanup:
			err = cl.finishCleanup(ctx, t)
		default:
			want := cl.wanted(t)
			if sameShards(mapShards(want.Ring.Nodes()), mapShards(t.Cur.Ring.Nodes())) && want.Replicas == t.Cur.Replicas {
				return
			}
			err = cl.startMigration(ctx, t, want)
		}
		if err != nil {
			cl.log.Error("rebalance step failed; will retry", "state", t.State, "err", err)
			cl.status.fail("rebalance", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// startMigration installs a migrating map: from now on reads and writes
// reach the old and the new owners.
func (cl *Cluster) startMigration(ctx context.Context, t *placement.Topology, want placement.Shape) error {
	m := &Map{
		Epoch: t.Epoch + 1, State: placement.StateMigrating,
		Replicas: want.Replicas, Shards: mapShards(want.Ring.Nodes()),
		Previous: mapShards(t.Cur.Ring.Nodes()), PrevReplicas: t.Cur.Replicas,
		Removed: cl.removedNames(),
	}
	cl.log.Info("rebalance starting", "from", t.Cur.Ring.Names(), "to", want.Ring.Names(), "replicas", want.Replicas)
	cl.status.start("rebalance", "copy")
	cl.mapMu.Lock()
	defer cl.mapMu.Unlock()
	return cl.installLocked(ctx, m)
}

// finishCopy copies every key to its new owners until a pass finds all of
// them in place (the verification), then switches to the new owners alone.
func (cl *Cluster) finishCopy(ctx context.Context, t *placement.Topology) error {
	if !cl.status.running("rebalance") {
		cl.status.start("rebalance", "copy")
	}
	for pass := 0; ; pass++ {
		st, err := cl.syncPass(ctx, t, "rebalance")
		if err != nil {
			return err
		}
		if st.missing == 0 && st.copied == 0 {
			break // verified: every owner holds the newest version of every key
		}
		if pass >= 20 {
			return fmt.Errorf("copy did not converge after %d passes (%d keys missing)", pass+1, st.missing)
		}
		if st.missing > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(cl.cfg.ProbeInterval):
			}
		}
	}
	m := cl.MapOf(t)
	m.Epoch, m.State = t.Epoch+1, placement.StateCleanup
	m.Previous, m.PrevReplicas = nil, 0
	m.Leaving = mapShards(t.Leaving)
	cl.status.phase("rebalance", "cleanup")
	cl.mapMu.Lock()
	defer cl.mapMu.Unlock()
	return cl.installLocked(ctx, m)
}

// finishCleanup waits for other routers to see the switch, purges copies
// from nodes that no longer own them, and declares the cluster stable.
func (cl *Cluster) finishCleanup(ctx context.Context, t *placement.Topology) error {
	if !cl.status.running("rebalance") {
		cl.status.start("rebalance", "cleanup")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(3 * cl.cfg.ProbeInterval):
	}
	st, err := cl.syncPass(ctx, t, "rebalance")
	if err != nil {
		return err
	}
	if st.missing > 0 {
		return fmt.Errorf("cleanup: %d keys could not be checked (a shard is down)", st.missing)
	}
	m := cl.MapOf(t)
	m.Epoch, m.State, m.Leaving = t.Epoch+1, placement.StateStable, nil
	cl.mapMu.Lock()
	defer cl.mapMu.Unlock()
	if err := cl.installLocked(ctx, m); err != nil {
		return err
	}
	cl.status.finish("rebalance")
	cl.log.Info("rebalance finished", "epoch", m.Epoch, "shards", t.Cur.Ring.Names())
	return nil
}
