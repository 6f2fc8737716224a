package storage

import (
	"encoding/binary"
	"fmt"
	"regexp"
)

// Limits on what a shard accepts. They are checked before anything is
// written, so an oversized request changes nothing.
const (
	MaxKeySize   = 4096     // bytes; BoltDB allows 32 KiB, we keep keys small
	MaxValueSize = 64 << 20 // bytes
	MaxScanLimit = 10000    // records per scan page
	MaxBatch     = 10000    // writes per Apply
)

// Record is one versioned value. A zero Version means "never written".
type Record struct {
	Key       []byte
	Version   uint64
	Tombstone bool
	Value     []byte // nil for tombstones
	// Truncated is set by a scan with ValueLimit when Value holds only the
	// first ValueLimit bytes of the value. A write may not be truncated.
	Truncated bool
}

// Cond is a condition checked in the write's transaction.
type Cond uint8

const (
	CondNone    Cond = iota // apply when newer than what is held
	CondAbsent              // ... and only when no live record is held (absent or tombstone)
	CondExists              // ... and only when a live record is held
	CondVersion             // ... and only when the live record held has version Match
	CondExact               // ... and only when the record held, live or tombstone, has version Match (0: none)
	// CondRewrite replaces the value of the live record held at exactly the
	// write's version, keeping that version: the one write not newer than
	// what it replaces. The router re-seals values under a new encryption
	// key with it; the plaintext is the same, so every reader still sees
	// the same record. Anything else held (another version, a tombstone,
	// nothing) is a Conflict.
	CondRewrite
)

// Write is a record to apply, with an optional condition.
type Write struct {
	Record
	Cond  Cond
	Match uint64 // for CondVersion
}

// TxnWrite is one write of a transaction (see Store.Txn): a Write to a
// bucket of its own.
type TxnWrite struct {
	Bucket string
	Write
}

// Outcome says what happened to one Write.
type Outcome uint8

const (
	Applied  Outcome = iota // the write is stored
	Stale                   // a record with a version >= the write's is held; nothing changed
	Conflict                // the condition did not hold; nothing changed
	// Aborted is the outcome of a write of a transaction (Txn) that
	// another of its writes' conditions failed: nothing of it changed.
	Aborted
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	case Conflict:
		return "conflict"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result reports one Write's outcome and what the shard held before it.
type Result struct {
	Outcome       Outcome
	PrevVersion   uint64 // 0 when nothing was held
	PrevTombstone bool
}

// PrevLive reports whether a live (non-deleted) record was held before.
func (r Result) PrevLive() bool { return r.PrevVersion != 0 && !r.PrevTombstone }

// ScanOptions selects a page of records in key order.
type ScanOptions struct {
	Prefix     []byte // only keys with this prefix
	After      []byte // start after this key (exclusive); nil starts at Prefix
	Limit      int    // 1..MaxScanLimit
	Tombstones bool   // include tombstones (repair and rebalance need them)
	KeysOnly   bool   // return keys, versions and flags without values
	// ValueLimit, when positive, cuts each value to at most this many bytes
	// (marking the record Truncated): a list that needs only what a value
	// starts with reads a fraction of the bytes.
	ValueLimit int
}

// ScanPage is one page of a scan. More is true when records may follow the
// last one returned.
type ScanPage struct {
	Records []Record
	More    bool
}

// Buckets hold records of one kind. Their names are short and lower case.
var bucketName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// metaBucket holds the shard's own facts (its node id, the lineage of its
// change log) and changesBucket its change log (changes.go); neither is
// reachable through the record API, whose bucket names cannot start with
// '_'.
const (
	metaBucket    = "_meta"
	changesBucket = "_changes"
)

// ClusterBucket and MapKey name the record that holds the cluster's shard
// map. The router writes it with the map's epoch as its version; the store
// remembers the newest epoch it holds and refuses writes sent under an older
// one (see ErrStaleEpoch), so a router that has not seen a membership
// change cannot write to the wrong owners.
const (
	ClusterBucket = "cluster"
	MapKey        = "map"
)

// DictBucket holds the router's compression dictionaries (and which one is
// current), a copy on every shard: records compressed with a dictionary
// cannot be read without it. A snapshot writes this bucket first, so a
// restore replays the dictionaries before the records that need them.
const DictBucket = "dicts"

func checkBucket(b string) error {
	if !bucketName.MatchString(b) {
		return fmt.Errorf("bucket %q: %w", b, ErrInvalid)
	}
	return nil
}

func checkKey(k []byte) error {
	if len(k) == 0 {
		return fmt.Errorf("empty key: %w", ErrInvalid)
	}
	if len(k) > MaxKeySize {
		return fmt.Errorf("key of %d bytes exceeds %d: %w", len(k), MaxKeySize, ErrInvalid)
	}
	return nil
}

func checkWrite(w *Write) error {
	if err := checkKey(w.Key); err != nil {
		return err
	}
	if w.Version == 0 {
		return fmt.Errorf("write without version: %w", ErrInvalid)
	}
	if len(w.Value) > MaxValueSize {
		return fmt.Errorf("value of %d bytes exceeds %d: %w", len(w.Value), MaxValueSize, ErrInvalid)
	}
	if w.Cond > CondRewrite {
		return fmt.Errorf("unknown condition %d: %w", w.Cond, ErrInvalid)
	}
	if w.Truncated {
		return fmt.Errorf("write of a truncated value: %w", ErrInvalid)
	}
	return nil
}

// On disk and on the wire a record's value is stored as
//
//	version (8 bytes, big endian) | flags (1 byte) | value
//
// so the version is read without touching the value.
const (
	headerSize    = 9
	flagTombstone = 1 << 0
	flagTruncated = 1 << 1 // on the wire only: a scan cut the value
)

func appendStored(dst []byte, version uint64, tombstone bool, value []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, version)
	var flags byte
	if tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, flags)
	return append(dst, value...)
}

// parseStored splits a stored value; the returned value aliases b.
func parseStored(b []byte) (version uint64, tombstone bool, value []byte, err error) {
	if len(b) < headerSize {
		return 0, false, nil, fmt.Errorf("stored record of %d bytes is shorter than its header", len(b))
	}
	return binary.BigEndian.Uint64(b), b[8]&flagTombstone != 0, b[headerSize:], nil
}
