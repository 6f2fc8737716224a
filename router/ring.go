package router

import (
	"context"
	"fmt"

	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/serialx/hashring"
)

// Shard is what the router needs of a storage node. storage.Store (embedded
// single-node mode) and storage.Client (a storaged over HTTP) both satisfy it.
type Shard interface {
	Get(ctx context.Context, bucket string, key []byte) (storage.Record, error)
	Apply(ctx context.Context, bucket string, writes []storage.Write) ([]storage.Result, error)
	Scan(ctx context.Context, bucket string, opts storage.ScanOptions) (storage.ScanPage, error)
	DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error)
	Ping(ctx context.Context) error
}

// Node is a shard as the cluster configuration names it.
type Node struct {
	Name    string
	Address string // for display: a URL, or the file in single-node mode
	Shard   Shard
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

func newRing(nodes []Node) (*ring, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no shards configured")
	}
	r := &ring{byName: make(map[string]*Node, len(nodes))}
	weights := make(map[string]int, len(nodes))
	for i := range nodes {
		n := &nodes[i]
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

// owner returns the node that holds key.
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
