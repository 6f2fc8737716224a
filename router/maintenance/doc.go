// Package maintenance owns the passes over whole shards: the backup
// stream and restore, compression dictionaries (training, loading,
// syncing to every shard, the rewrite pass) and re-encryption. At most one
// pass of each kind runs at a time; every pass is idempotent and safe to
// run again after an interruption.
package maintenance
