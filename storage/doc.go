// Package storage owns one shard of Go-KVDB: a BoltDB file of versioned
// records, the HTTP handler that storaged serves it with, and the Client the
// router uses to reach it. The local Store and the remote Client have the same
// methods, so the router treats an embedded file and a storage daemon alike.
//
// # Basics
//
// A shard holds buckets of records. A Record is a key, a 64-bit version, a
// tombstone flag and an opaque value. The router assigns versions (hybrid
// logical clock values); the store applies a write only when its version is
// newer than the one it holds, in one BoltDB transaction. That single rule
// makes retries, replication, repair and restore idempotent and independent
// of order. Deletes are tombstones, which are written like any other record.
//
// Writes may carry a condition (CondAbsent, CondExists, CondVersion) that the
// store checks in the same transaction, which gives create-only, delete-only-
// if-present and compare-and-set without a lock in the router.
//
// Concurrent writers share one transaction and one fsync: a single committer
// goroutine takes every write queued while the previous commit was syncing
// (group commit). A lone writer is committed at once, never delayed.
//
// For semantic search a bucket may hold vectors in the format EncodeVector
// writes (model, tags, dimension, norm, float32 values); TopK scans a key
// prefix of such a bucket and returns its k best cosine matches, so each
// shard answers with its own top k and the router merges.
//
// Snapshot (GET /v1/snapshot on the wire) copies every bucket but the
// shard's own in one read transaction, in package backup's snapshot
// format, through a temporary file so the transaction stays short: the
// router streams them as a backup of the cluster.
//
// # Caveats
//
// Values are opaque: the store never looks inside them (except the vector
// buckets TopK is asked to scan), so filtering by content happens in the
// router. TopK is a flat scan: one dot product per vector under the prefix. Tombstones are kept until a purge removes
// them (see Store.Purge); scans skip them unless asked for.
// A BoltDB file can be opened by one process only; Open fails after
// Options.LockTimeout instead of waiting forever.
package storage
