package router

import (
	"net/http"
	"slices"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/labstack/echo/v4"
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

// adminRoutes registers the membership endpoints.
func (r *Router) adminRoutes(v1 *echo.Group) {
	v1.POST("/admin/remove", r.adminRemove)
	v1.DELETE("/admin/shards/:shard", r.adminRemove)
	r.compressionRoutes(v1)
}

// adminRemove takes a shard out of the wanted Shape and starts the
// rebalance that drains it: POST /api/v1/admin/remove?shard=NAME or
// DELETE /api/v1/admin/shards/NAME. It answers 202 with the cluster; 404
// for a shard the cluster does not hold; 412 when the router's shards come
// from a config file (edit it and reload instead) or when the removal would
// leave fewer shards than replicas.
func (r *Router) adminRemove(c echo.Context) error {
	name := c.QueryParam("shard")
	if name == "" {
		name = param(c, "shard")
	}
	if name == "" {
		return apierr.Errorf(apierr.CodeInvalidArgument, "shard: required (?shard=NAME)")
	}
	if !r.cfg.Discovery {
		return apierr.Errorf(apierr.CodeFailedPrecondition, "shards come from the config file: delete the entry of %q and reload", name)
	}
	t := r.topo.Load()
	r.desiredMu.Lock()
	if !r.removed[name] {
		members := r.membersLocked(t)
		if !slices.Contains(members, name) {
			r.desiredMu.Unlock()
			return apierr.Errorf(apierr.CodeNotFound, "shard %q is not in the cluster", name)
		}
		if left := len(members) - 1; left < r.wantReplicas {
			r.desiredMu.Unlock()
			return apierr.Errorf(apierr.CodeFailedPrecondition, "removing shard %q would leave %d shards for replicas = %d", name, left, r.wantReplicas)
		}
		if r.removed == nil {
			r.removed = map[string]bool{}
		}
		r.removed[name] = true
	}
	r.desiredMu.Unlock()
	r.log.Info("shard removed by the operator; draining it", "shard", name)
	r.background(r.converge)
	return c.JSON(http.StatusAccepted, r.clusterInfo())
}

// membersLocked names the shards of the wanted Shape: the desired ones and,
// in discovery mode, those of t's current Shape, less the removed ones.
// desiredMu must be held.
func (r *Router) membersLocked(t *placement.Topology) []string {
	var names []string
	add := func(nodes []*placement.Node) {
		for _, n := range nodes {
			if !r.removed[n.Name] && !slices.Contains(names, n.Name) {
				names = append(names, n.Name)
			}
		}
	}
	add(r.desired.Ring.Nodes())
	if r.cfg.Discovery {
		add(t.Cur.Ring.Nodes())
	}
	return names
}

// wanted is the Shape converge moves the cluster to from t: the desired
// Shape, and in discovery mode also the shards of t, less removed ones.
func (r *Router) wanted(t *placement.Topology) placement.Shape {
	r.desiredMu.Lock()
	defer r.desiredMu.Unlock()
	if !r.cfg.Discovery {
		return r.desired
	}
	var nodes []*placement.Node
	for _, list := range [][]*placement.Node{r.desired.Ring.Nodes(), t.Cur.Ring.Nodes()} {
		for _, n := range list {
			if !r.removed[n.Name] && !slices.ContainsFunc(nodes, func(m *placement.Node) bool { return m.Name == n.Name }) {
				nodes = append(nodes, n)
			}
		}
	}
	want, err := placement.NewShape(nodes, r.wantReplicas)
	if err != nil { // nothing left: the admin endpoint prevents it
		return r.desired
	}
	return want
}

// isRemoved reports whether an operator removed the shard called name. A
// removed shard that is down is gone for good: passes do not wait for it.
func (r *Router) isRemoved(name string) bool {
	r.desiredMu.Lock()
	defer r.desiredMu.Unlock()
	return r.removed[name]
}

// removedNames lists the removed shards, sorted, for the cluster map.
func (r *Router) removedNames() []string {
	r.desiredMu.Lock()
	defer r.desiredMu.Unlock()
	var out []string
	for name := range r.removed {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// noteRemoved adds the removals recorded in a cluster map.
func (r *Router) noteRemoved(names []string) {
	if len(names) == 0 {
		return
	}
	r.desiredMu.Lock()
	defer r.desiredMu.Unlock()
	if r.removed == nil {
		r.removed = map[string]bool{}
	}
	for _, name := range names {
		r.removed[name] = true
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
