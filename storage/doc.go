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
// Txn applies writes to several buckets in one transaction, all or none:
// when any write's condition fails, nothing changes (that write is a
// Conflict, the others Aborted). A conversation's append is one: its
// header written iff it is still at the version the router read, with the
// new message records beside it. A replica replays the same writes without
// conditions, put-if-newer, so a replay of what it already holds is Stale.
//
// Concurrent writers share one transaction and one fsync: a single committer
// goroutine takes every write queued while the previous commit was syncing
// (group commit). A lone writer is committed at once, never delayed.
//
// For semantic search a bucket may hold vectors in the format EncodeVector
// writes (model, tags, dimension, norm, float32 values); TopK returns the k
// best cosine matches under a key prefix of such a bucket, so each shard
// answers with its own top k and the router merges. The buckets named in
// Options.VectorBuckets ("vectors" by default) have an ANN index
// (storage/vindex) per key group (the key through its first 0 byte: the
// router's topic), model and dimension, kept in step with every commit
// and purge, saved on Close and reconciled with the records after Open
// (vindex.go); TopK walks it when it can and otherwise scans, and says
// which (TopKResult.Exact).
//
// For keyword search a bucket may hold text in the format EncodeText
// writes (tags and words). The buckets named in Options.TextBuckets
// ("text" by default) have an inverted index per key group, kept in a
// BoltDB file of its own beside the records' (path + ".kw", rebuilt from
// the records when it is missing) by a background indexer that applies,
// in large batches, what every write, tombstone and purge queued in its
// own transaction (keyword.go, kwindexer.go); a search waits for what was
// queued before it. The words are analysed by package kwindex. A search is two calls so that shards score alike:
// KeywordStats (this shard's counts for the query's terms), then Keyword
// with the counts the caller summed over every shard (BM25).
//
// # Change log
//
// Every write a commit applies (puts, tombstones, DeletePrefix's tombstones,
// CondRewrite's rewrites; stale and conflicting writes change nothing and
// are not logged) gets the shard's next sequence number, in commit order,
// and an entry (seq, time, bucket, key, version, tombstone: no value) in the
// same transaction: the log holds exactly what is durable, and a restart
// continues it. Routers follow it to keep their caches coherent. Changes
// replays the entries after a sequence, then follows each commit as it lands
// (a broadcast the committer sends after the commit, that costs it nothing
// per follower; followers read the log from BoltDB, each at its own pace)
// with an empty batch every heartbeat while nothing changes, so a follower
// knows it is caught up (its last seq is the batch's Head) and the shard
// alive. ChangesHead (and Info) say where the log stands.
//
// The log keeps the newest Options.ChangesRetain entries no older than
// Options.ChangesMaxAge (a million, a day), trimmed by the commits
// themselves a bounded number at a time, and never its newest entry. Each
// Open starts a generation of the log with an ID of its own, and the file
// keeps their lineage: a follower resumes with the last ID it saw, which
// continues across restarts, while a new file, one restored from a snapshot
// or copied back from earlier, or one whose log was lost does not continue
// it. A follower that asks for changes the log does not hold (trimmed, of a
// generation the file does not continue, or past where it went) gets a
// *ChangesGapError (ErrChangesGap) naming what is held, at the start or
// while it follows: it has missed changes and must forget what it learnt,
// then follow from the head. Purge is not logged: what it removes is a
// collected tombstone (deleted and absent read alike) or a copy the shard
// no longer owns, logged by its owners when they were written.
//
// On the wire (GET /v1/changes, changes_wire.go) the stream is one
// long-lived answer of binary frames, each flushed as it is written; a gap
// known at the start is a 410 with a JSON body naming the oldest seq held.
// The Client's stream does not go through the timeout of its http.Client
// (it shares the transport), and ends with ErrUnavailable when nothing comes
// for three heartbeats.
//
// Snapshot (GET /v1/snapshot on the wire) copies every bucket but the
// shard's own in one read transaction, in package backup's snapshot
// format, through a temporary file so the transaction stays short: the
// router streams them as a backup of the cluster.
//
// # Caveats
//
// Values are opaque: the store never looks inside them (except the vector
// and text buckets it indexes and TopK is asked to rank), so filtering by
// content happens in the router. A vector or text value the store cannot
// read (sealed by the router) is stored but not indexed. Indexing a text
// costs its analysis and one index write per distinct term in the
// commit's transaction (about 14,000 short documents/s,
// BenchmarkKeyword100k). An index insert costs a graph
// search, paid on the committer before the writer hears: the price of a
// search that always sees acknowledged writes. Tombstones are kept until a purge removes
// them (see Store.Purge); scans skip them unless asked for.
// The change log is a cost of every commit: one more small record per
// applied write (see BenchmarkStorePut4KWriters). A follower that passes no
// log ID accepts any log holding its seq: only a first subscription should.
// A BoltDB file can be opened by one process only; Open fails after
// Options.LockTimeout instead of waiting forever.
package storage
