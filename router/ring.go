package router

import (
	"fmt"

	"github.com/serialx/hashring"
)

// Node is a shard as the cluster configuration names it.
type Node struct {
	Name    string
	Address string // a URL, or the file in single-node mode
	Shard   Shard

	health *nodeHealth // set by the router; shared by every topology
}

// ringWeight is the number of points each shard gets on the ring. One point
// per shard splits keys very unevenly; 160 keeps every shard within a few
// percent of its fair share.
const ringWeight = 160

// ring places keys on nodes. It is immutable: a change of membership builds
// a new ring, which is swapped in whole.
type ring struct {
	hr     *hashring.HashRing
	nodes  []*Node          // in configuration order
	byName map[string]*Node // by Node.Name
}

func newRing(nodes []*Node) (*ring, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no shards configured")
	}
	r := &ring{byName: make(map[string]*Node, len(nodes))}
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

// owner returns the first node that holds key.
func (r *ring) owner(key string) *Node {
	if len(r.nodes) == 1 {
		return r.nodes[0]
	}
	name, ok := r.hr.GetNode(key)
	if !ok { // only an empty ring has no owner, and newRing refuses one
		panic("hash ring is empty")
	}
	return r.byName[name]
}

// replicas returns the n distinct nodes that hold key, clockwise from its
// point on the ring; the first is its primary. n is capped at the ring size.
func (r *ring) replicas(key string, n int) []*Node {
	if n <= 1 || len(r.nodes) == 1 {
		return []*Node{r.owner(key)}
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

// names lists the ring's node names in configuration order.
func (r *ring) names() []string {
	out := make([]string, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.Name
	}
	return out
}
