// Package backup owns the formats of Go-KVDB backups: a shard's snapshot
// stream, the router's backup stream that carries every shard's snapshot,
// and the archive file kvdbctl writes. It is a leaf: storage writes
// snapshots with it, the router relays and restores them, the client and
// kvdbctl turn them into archives and back. It does not reach a shard or
// a router itself.
//
// # Basics
//
// A snapshot is every record of a shard (key, version, tombstone flag,
// value: the storage wire format's record) grouped by bucket, each bucket
// and the whole closed by their record counts, so a reader tells a
// complete snapshot from a truncated one:
//
//	snapshot = "KVDBSNP1" | bucket* | uvarint(0) | uvarint(records)
//	bucket   = uvarint(len name) name | record* | uvarint(0) | uvarint(records)
//	record   = uvarint(len key) key | version (8, big endian) | flags (1) | uvarint(len value) value
//
// A restore request body is a snapshot too (of the records to replay).
//
// The backup stream (GET /api/v1/admin/backup) and the archive share one
// framing: a magic, the cluster's shape, then one section per shard whose
// data is that shard's snapshot cut into chunks, closed by its count:
//
//	stream  = "KVDBBAK1" | info | section* | ('E' | error)
//	archive = "KVDBARC1" | info | section* | manifest        (all zstd-compressed)
//	info    = 'I' | uvarint(len) JSON (Info)
//	section = 'S' | uvarint(len name) name | ('D' | uvarint(n) | n bytes)* | 'Z' | uvarint(records)
//	error   = 'X' | uvarint(len) message      (a shard failed mid-stream)
//	manifest = 'M' | uvarint(len) JSON (Manifest) | SHA-256 of that JSON (32 bytes)
//
// The manifest holds the record counts and the SHA-256 of each section's
// snapshot and of the whole archive before the manifest, so Verify checks
// an archive without a cluster.
//
// # Caveats
//
// Values are copied as the router stored them (compressed, and encrypted
// if the cluster encrypts): an archive restores into a cluster that reads
// them the same way. Readers hold at most one record in memory, but a
// record may be as large as MaxValueSize.
package backup
