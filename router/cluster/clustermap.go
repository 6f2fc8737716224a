package cluster

import (
	"slices"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// Map is the Shape of the cluster as stored on every storage node
// (bucket storage.ClusterBucket, key storage.MapKey, version = epoch). It is
// the cluster's truth; the config file is what the operator wants next.
type Map struct {
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

// Encode is the map as stored on every shard.
func (m *Map) Encode() []byte { return schema.MustJSON(m) }

func mapShards(nodes []*placement.Node) []mapShard {
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
