// Package cluster owns the router's view of its shards: the registry of
// nodes and their health (probes), the cluster map stored on every shard
// (load, adopt, install, bootstrap), membership changes (reload, operator
// removal, the rebalance that moves data: copy, verify, switch, clean
// up), anti-entropy repair, and the status of those passes.
//
// It never reads or writes records for clients (package coord does), and
// knows nothing of the HTTP API: handlers call Info, Repair, Reload and
// Remove.
package cluster
