// Package placement owns where keys live: the ring (weighted points per
// shard), shapes (a ring and a replica count), topologies (the immutable
// view of the cluster a request plans on, swapped whole), replica sets and
// quorum sizes; a node and its health as the prober sees it; the one
// unwrapper of shard decorators (As, Base) and the one page walk (Walk).
// It imports nothing of router/.
package placement
