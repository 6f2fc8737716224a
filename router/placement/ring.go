package placement

import (
	"fmt"

	"github.com/serialx/hashring"
)

// ringWeight is the number of points each shard gets on the ring. One point
// per shard splits keys very unevenly; 160 keeps every shard within a few
// percent of its fair share.
const ringWeight = 160

// Ring places keys on nodes. It is immutable: a change of membership builds
// a new ring, which is swapped in whole.
type Ring struct {
	hr     *hashring.HashRing
	nodes  []*Node          // in configuration order
	byName map[string]*Node // by Node.Name
}

// NewRing builds a ring of nodes, each with ringWeight points.
func NewRing(nodes []*Node) (*Ring, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no shards configured")
	}
	r := &Ring{byName: make(map[string]*Node, len(nodes))}
	weights := make(map[string]int, len(nodes))
	for i, n := range nodes {
		if n.Name == "" || n.Shard == nil {
			return nil, fmt.Errorf("shard %d: name and shard are required", i)
		}
		if _, dup := r.byName[n.Name]; dup {
			return nil, fmt.Errorf("shard %q: configured twice", n.Name)
		}
		r.byName[n.Name] = n
		r.nodes = append(r.nodes, n)
		weights[n.Name] = ringWeight
	}
	r.hr = hashring.NewWithWeights(weights)
	return r, nil
}

// Owner returns the first node that holds key.
func (r *Ring) Owner(key string) *Node {
	if len(r.nodes) == 1 {
		return r.nodes[0]
	}
	name, ok := r.hr.GetNode(key)
	if !ok { // only an empty ring has no owner, and NewRing refuses one
		panic("hash ring is empty")
	}
	return r.byName[name]
}

// Replicas returns the n distinct nodes that hold key, clockwise from its
// point on the ring; the first is its primary. n is capped at the ring size.
func (r *Ring) Replicas(key string, n int) []*Node {
	if n <= 1 || len(r.nodes) == 1 {
		return []*Node{r.Owner(key)}
	}
	n = min(n, len(r.nodes))
	names, ok := r.hr.GetNodes(key, n)
	if !ok {
		panic("hash ring has fewer nodes than replicas")
	}
	out := make([]*Node, len(names))
	for i, name := range names {
		out[i] = r.byName[name]
	}
	return out
}

// Names lists the ring's node names in configuration order.
func (r *Ring) Names() []string {
	out := make([]string, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.Name
	}
	return out
}

// Nodes are the ring's nodes in configuration order; the slice is shared
// and must not be changed.
func (r *Ring) Nodes() []*Node { return r.nodes }

// Node is the ring's node called name, or nil.
func (r *Ring) Node(name string) *Node { return r.byName[name] }
