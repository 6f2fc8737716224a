package placement

import (
	"slices"
)

// Cluster states. A membership change runs stable → migrating (reads and
// writes reach the old and the new owners while data is copied) → cleanup
// (only the new owners serve; copies on former owners are purged) → stable.
const (
	StateStable    = "stable"
	StateMigrating = "migrating"
	StateCleanup   = "cleanup"
)

// Shape is a placement: a ring and how many of its nodes hold each key.
// It is a value, never changed once made.
type Shape struct {
	Ring     *Ring
	Replicas int // capped at the ring's size
}

// NewShape places keys on nodes, each on replicas of them.
func NewShape(nodes []*Node, replicas int) (Shape, error) {
	rg, err := NewRing(nodes)
	if err != nil {
		return Shape{}, err
	}
	return Shape{Ring: rg, Replicas: max(1, min(replicas, len(nodes)))}, nil
}

// Quorum is the number of a key's n replicas that must acknowledge a write
// (and answer a read): a majority, so any read meets any acknowledged write.
func Quorum(n int) int { return n/2 + 1 }

// Topology is the router's view of the cluster. It is immutable and swapped
// whole: a request works with one view from start to end. Its fields are
// read only.
type Topology struct {
	Epoch   uint64 // of the cluster map it came from; 0 before one is known
	State   string
	Cur     Shape   // owners that serve reads and writes
	Prev    Shape   // while migrating: the owners data moves from (Ring nil otherwise)
	Leaving []*Node // nodes that own nothing in Cur but may still hold data
	All     []*Node // every node to talk to: Cur, then Prev and Leaving ones
}

// NewTopology builds a view; leaving lists nodes that own nothing but may
// still hold data (prev's nodes missing from cur are added to it).
func NewTopology(epoch uint64, state string, cur, prev Shape, leaving []*Node) *Topology {
	t := &Topology{Epoch: epoch, State: state, Cur: cur, Prev: prev}
	seen := map[*Node]bool{}
	add := func(n *Node) {
		if !seen[n] {
			seen[n] = true
			t.All = append(t.All, n)
		}
	}
	for _, n := range cur.Ring.nodes {
		add(n)
	}
	if prev.Ring != nil {
		for _, n := range prev.Ring.nodes {
			add(n)
		}
	}
	for _, n := range leaving {
		if !seen[n] {
			t.Leaving = append(t.Leaving, n)
			add(n)
		}
	}
	if prev.Ring != nil {
		for _, n := range prev.Ring.nodes {
			if _, ok := cur.Ring.byName[n.Name]; !ok && !slices.Contains(t.Leaving, n) {
				t.Leaving = append(t.Leaving, n)
			}
		}
	}
	return t
}

// ReplicaSet is who holds one key: a group of owners per Shape that must
// each reach a quorum, and their union, current owners first.
type ReplicaSet struct {
	Groups [][]*Node
	Union  []*Node
}

// Owners is who holds the key placed at pk.
func (t *Topology) Owners(pk string) ReplicaSet {
	cur := t.Cur.Ring.Replicas(pk, t.Cur.Replicas)
	if t.Prev.Ring == nil {
		return ReplicaSet{Groups: [][]*Node{cur}, Union: cur}
	}
	prev := t.Prev.Ring.Replicas(pk, t.Prev.Replicas)
	union := slices.Clone(cur)
	for _, n := range prev {
		if !slices.Contains(union, n) {
			union = append(union, n)
		}
	}
	return ReplicaSet{Groups: [][]*Node{cur, prev}, Union: union}
}

// Shapes returns the shapes whose owners serve reads: cur, and prev while
// migrating.
func (t *Topology) Shapes() []Shape {
	if t.Prev.Ring == nil {
		return []Shape{t.Cur}
	}
	return []Shape{t.Cur, t.Prev}
}

// ReadNodes are the nodes a list must ask: every owner in every serving Shape.
func (t *Topology) ReadNodes() []*Node {
	if t.Prev.Ring == nil {
		return t.Cur.Ring.nodes
	}
	out := slices.Clone(t.Cur.Ring.nodes)
	for _, n := range t.Prev.Ring.nodes {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// NodeState is what /api/v1/cluster says of a node.
func (t *Topology) NodeState(n *Node) string {
	if !n.Health.Up() {
		return "down"
	}
	_, inCur := t.Cur.Ring.byName[n.Name]
	switch {
	case slices.Contains(t.Leaving, n):
		return "leaving"
	case inCur && t.State == StateMigrating && t.Prev.Ring != nil:
		if _, inPrev := t.Prev.Ring.byName[n.Name]; !inPrev {
			return "joining"
		}
	}
	return "up"
}
