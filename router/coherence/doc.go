// Package coherence keeps a router's hot cache coherent with the writes
// of every other router: it follows each shard's change stream
// (storage.Store.Changes in single-node mode, storage.Client.Changes over
// the wire) with one long-lived follower per node, hands every change to
// the cache's owner to invalidate, and says, per shard, whether the router
// is caught up enough to serve a cached entry that shard owns.
//
// # Caught up
//
// A follower is caught up while its stream is connected, the last batch
// (a heartbeat at least, every Heartbeat) came less than StaleAfter ago,
// and it is no more than MaxLag changes behind the shard's log head. A
// read serves a cached entry only when every owner of its key is caught
// up (Fresh); otherwise it reads from the replicas and does not cache.
// So a shard paused or cut off stops cached answers within StaleAfter
// (by default 250 ms, under the router's default probe interval). A shard
// without a change stream (no Source in its decorator chain) is never
// caught up: the keys it owns are never served from the cache.
//
// # Resets
//
// A follower resumes from its last sequence after a disconnect: the
// replay invalidates what it missed. When it cannot (its first
// subscription, a gap: a log trimmed past it, a data file restored or
// replaced), it calls OnReset once its new stream is established. The
// router then empties the whole hot cache: bigcache cannot list one
// shard's entries cheaply, and a gap is rare.
//
// It does not own the cache, its keys or what a change means to them
// (package docstore does), nor the node list (package cluster's topology).
package coherence
