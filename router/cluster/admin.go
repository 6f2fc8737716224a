package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
)

// Membership in discovery mode (Config.Discovery). The shards come from
// DNS, and DNS forgets a container as soon as it stops: so the wanted
// Shape only grows from what Nodes and Reload list. Every shard of the
// cluster map stays in it (a node missing from DNS is down, not gone) until
// an operator removes it; then its data drains to the others and it is
// never added back, even if DNS still lists it. The removed names are kept
// in the cluster map, so other routers and a restarted router honour them.
//
// Never adding a removed node back is also what keeps deletes deleted: its
// file may hold records whose tombstones were collected since.

// membersLocked names the shards of the wanted Shape: the desired ones and,
// in discovery mode, those of t's current Shape, less the removed ones.
// desiredMu must be held.
func (cl *Cluster) membersLocked(t *placement.Topology) []string {
	var names []string
	add := func(nodes []*placement.Node) {
		for _, n := range nodes {
			if !cl.removed[n.Name] && !slices.Contains(names, n.Name) {
				names = append(names, n.Name)
			}
		}
	}
	add(cl.desired.Ring.Nodes())
	if cl.cfg.Discovery {
		add(t.Cur.Ring.Nodes())
	}
	return names
}

// wanted is the Shape converge moves the cluster to from t: the desired
// Shape, and in discovery mode also the shards of t, less removed ones.
func (cl *Cluster) wanted(t *placement.Topology) placement.Shape {
	cl.desiredMu.Lock()
	defer cl.desiredMu.Unlock()
	if !cl.cfg.Discovery {
		return cl.desired
	}
	var nodes []*placement.Node
	for _, list := range [][]*placement.Node{cl.desired.Ring.Nodes(), t.Cur.Ring.Nodes()} {
		for _, n := range list {
			if !cl.removed[n.Name] && !slices.ContainsFunc(nodes, func(m *placement.Node) bool { return m.Name == n.Name }) {
				nodes = append(nodes, n)
			}
		}
	}
	want, err := placement.NewShape(nodes, cl.wantReplicas)
	if err != nil { // nothing left: the admin endpoint prevents it
		return cl.desired
	}
	return want
}

// isRemoved reports whether an operator removed the shard called name. A
// removed shard that is down is gone for good: passes do not wait for it.
func (cl *Cluster) isRemoved(name string) bool {
	cl.desiredMu.Lock()
	defer cl.desiredMu.Unlock()
	return cl.removed[name]
}

// removedNames lists the removed shards, sorted, for the cluster map.
func (cl *Cluster) removedNames() []string {
	cl.desiredMu.Lock()
	defer cl.desiredMu.Unlock()
	var out []string
	for name := range cl.removed {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// noteRemoved adds the removals recorded in a cluster map.
func (cl *Cluster) noteRemoved(names []string) {
	if len(names) == 0 {
		return
	}
	cl.desiredMu.Lock()
	defer cl.desiredMu.Unlock()
	if cl.removed == nil {
		cl.removed = map[string]bool{}
	}
	for _, name := range names {
		cl.removed[name] = true
	}
}

// liveAddress is where a shard is reached now: a shard whose address can
// change under a stable name (found by DNS) says so through Addr.
func liveAddress(n *placement.Node) string {
	if a, ok := placement.As[interface{ Addr() string }](n.Shard); ok {
		if addr := a.Addr(); addr != "" {
			return addr
		}
	}
	return n.Address
}

// Remove takes a shard out of the wanted shape (discovery mode) and starts
// the rebalance that drains it. A shard the cluster does not hold is
// not_found; a removal that would leave fewer shards than replicas, or a
// cluster whose shards come from a config file, is failed_precondition.
func (cl *Cluster) Remove(name string) error {
	if !cl.cfg.Discovery {
		return apierr.Errorf(apierr.CodeFailedPrecondition, "shards come from the config file: delete the entry of %q and reload", name)
	}
	t := cl.topo.Load()
	cl.desiredMu.Lock()
	if !cl.removed[name] {
		members := cl.membersLocked(t)
		if !slices.Contains(members, name) {
			cl.desiredMu.Unlock()
			return apierr.Errorf(apierr.CodeNotFound, "shard %q is not in the cluster", name)
		}
		if left := len(members) - 1; left < cl.wantReplicas {
			cl.desiredMu.Unlock()
			return apierr.Errorf(apierr.CodeFailedPrecondition, "removing shard %q would leave %d shards for replicas = %d", name, left, cl.wantReplicas)
		}
		if cl.removed == nil {
			cl.removed = map[string]bool{}
		}
		cl.removed[name] = true
	}
	cl.desiredMu.Unlock()
	cl.log.Info("shard removed by the operator; draining it", "shard", name)
	cl.cfg.Go(cl.converge)
	return nil
}

// Reindex asks every shard of the current topology to rebuild its vector
// indexes (storage.Store.Reindex) and returns their names. It fails (503)
// when a shard is down or cannot: a reindex reaches every shard or the
// operator hears which did not. The rebuilds run on in the shards; their
// searches scan (and say "exact") until each has reconciled.
func (cl *Cluster) Reindex(ctx context.Context) ([]string, error) {
	t := cl.topo.Load()
	var down []string
	for _, n := range t.All {
		if !n.Up() {
			down = append(down, n.Name)
		}
	}
	if len(down) > 0 {
		return nil, apierr.Errorf(apierr.CodeUnavailable, "cannot reindex while shards are down (%s)", strings.Join(down, ", "))
	}
	var mu sync.Mutex // guards failed
	var failed []string
	var wg sync.WaitGroup
	for _, n := range t.All {
		wg.Go(func() {
			err := placement.ErrNoTopK
			if r, ok := placement.As[placement.Reindexer](n.Shard); ok {
				sctx, cancel := cl.shardCtx(ctx)
				err = r.Reindex(sctx)
				cancel()
			}
			if err != nil {
				cl.log.Warn("reindex not started", "shard", n.Name, "err", err)
				mu.Lock()
				failed = append(failed, n.Name+": "+err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		slices.Sort(failed)
		return nil, apierr.Errorf(apierr.CodeUnavailable, "reindex not started on %s", strings.Join(failed, "; "))
	}
	names := make([]string, 0, len(t.All))
	for _, n := range t.All {
		names = append(names, n.Name)
	}
	return names, nil
}
