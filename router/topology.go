package router

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
)

// Cluster states. A membership change runs stable → migrating (reads and
// writes reach the old and the new owners while data is copied) → cleanup
// (only the new owners serve; copies on former owners are purged) → stable.
const (
	stateStable    = "stable"
	stateMigrating = "migrating"
	stateCleanup   = "cleanup"
)

// shape is a Placement: a ring and how many of its nodes hold each key.
type shape struct {
	ring     *ring
	replicas int // capped at the ring's size
}

func newShape(nodes []*Node, replicas int) (shape, error) {
	rg, err := newRing(nodes)
	if err != nil {
		return shape{}, err
	}
	return shape{ring: rg, replicas: max(1, min(replicas, len(nodes)))}, nil
}

// quorum is the number of a key's n replicas that must acknowledge a write
// (and answer a read): a majority, so any read meets any acknowledged write.
func quorum(n int) int { return n/2 + 1 }

// topology is the router's view of the cluster. It is immutable and swapped
// whole: a request works with one view from start to end.
type topology struct {
	epoch   uint64 // of the cluster map it came from; 0 before one is known
	state   string
	cur     shape   // owners that serve reads and writes
	prev    shape   // while migrating: the owners data moves from (ring nil otherwise)
	leaving []*Node // nodes that own nothing in cur but may still hold data
	all     []*Node // every node to talk to: cur, then prev and leaving ones
}

func newTopology(epoch uint64, state string, cur, prev shape, leaving []*Node) *topology {
	t := &topology{epoch: epoch, state: state, cur: cur, prev: prev}
	seen := map[*Node]bool{}
	add := func(n *Node) {
		if !seen[n] {
			seen[n] = true
			t.all = append(t.all, n)
		}
	}
	for _, n := range cur.ring.nodes {
		add(n)
	}
	if prev.ring != nil {
		for _, n := range prev.ring.nodes {
			add(n)
		}
	}
	for _, n := range leaving {
		if !seen[n] {
			t.leaving = append(t.leaving, n)
			add(n)
		}
	}
	if prev.ring != nil {
		for _, n := range prev.ring.nodes {
			if _, ok := cur.ring.byName[n.Name]; !ok && !slices.Contains(t.leaving, n) {
				t.leaving = append(t.leaving, n)
			}
		}
	}
	return t
}

// replicaSet is who holds one key: a group of owners per shape that must
// each reach a quorum, and their union, current owners first.
type replicaSet struct {
	groups [][]*Node
	union  []*Node
}

func (t *topology) replicaSet(pk string) replicaSet {
	cur := t.cur.ring.replicas(pk, t.cur.replicas)
	if t.prev.ring == nil {
		return replicaSet{groups: [][]*Node{cur}, union: cur}
	}
	prev := t.prev.ring.replicas(pk, t.prev.replicas)
	union := slices.Clone(cur)
	for _, n := range prev {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	return replicaSet{groups: [][]*Node{cur, prev}, union: union}
}

// shapes returns the shapes whose owners serve reads: cur, and prev while
// migrating.
func (t *topology) shapes() []shape {
	if t.prev.ring == nil {
		return []shape{t.cur}
	}
	return []shape{t.cur, t.prev}
}

// readNodes are the nodes a list must ask: every owner in every serving shape.
func (t *topology) readNodes() []*Node {
	if t.prev.ring == nil {
		return t.cur.ring.nodes
	}
	out := slices.Clone(t.cur.ring.nodes)
	for _, n := range t.prev.ring.nodes {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// nodeState is what /api/v1/cluster says of a node.
func (t *topology) nodeState(n *Node) string {
	if n.health.down.Load() {
		return "down"
	}
	_, inCur := t.cur.ring.byName[n.Name]
	switch {
	case slices.Contains(t.leaving, n):
		return "leaving"
	case inCur && t.state == stateMigrating && t.prev.ring != nil:
		if _, inPrev := t.prev.ring.byName[n.Name]; !inPrev {
			return "joining"
		}
	}
	return "up"
}

// nodeHealth is a node's health as the prober sees it. A node starts up;
// a few missed probes mark it down, one answer marks it up again. Health
// changes only whom the router asks, never where keys live.
type nodeHealth struct {
	down    atomic.Bool
	misses  atomic.Int32
	epoch   atomic.Uint64 // of the cluster map the node reported holding
	nodeID  atomic.Value  // string
	lastErr atomic.Value  // string
	// stale is set when a node comes back from down: until a repair pass
	// has run with it up, it may lack writes, so it does not act as the
	// primary that decides conditional writes.
	stale atomic.Bool
}

func (n *Node) up() bool { return !n.health.down.Load() }

// clusterMap is the shape of the cluster as stored on every storage node
// (bucket storage.ClusterBucket, key storage.MapKey, version = epoch). It is
// the cluster's truth; the config file is what the operator wants next.
type clusterMap struct {
	Epoch        uint64     `json:"epoch"`
	State        string     `json:"state"`
	Replicas     int        `json:"replicas"`
	Shards       []mapShard `json:"shards"`
	Previous     []mapShard `json:"previous,omitempty"`
	PrevReplicas int        `json:"previous_replicas,omitempty"`
	Leaving      []mapShard `json:"leaving,omitempty"`
	// Removed names the shards an operator removed in discovery mode:
	// never added back (see admin.go).
	Removed []string `json:"removed,omitempty"`
}

type mapShard struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

func (m *clusterMap) encode() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal cluster map: %v", err))
	}
	return b
}

func mapShards(nodes []*Node) []mapShard {
	out := make([]mapShard, len(nodes))
	for i, n := range nodes {
		out[i] = mapShard{Name: n.Name, Address: n.Address}
	}
	return out
}

// sameShards reports whether two shard lists name the same nodes at the
// same addresses, in any order.
func sameShards(a, b []mapShard) bool {
	if len(a) != len(b) {
		return false
	}
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}
