package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The keyword index is written behind the records. A 4 KB document has
// some 350 terms, and a posting each is 350 random inserts into the
// index's B+tree: in the small commits of concurrent writers (a few
// documents each) BoltDB materializes, splits and spills nearly as many
// nodes as it inserts keys, and that cost a write ten times what it did
// without the index. The same inserts in commits of a few hundred
// documents share their nodes and cost a third to a quarter as much.
//
// So a write of a text bucket, in its own transaction, only appends to
// the queue (kwQueueBucket) what it did to the record: the live value it
// replaced and the write, or the purge and the value it removed. The
// indexer, a goroutine of its own, applies queued entries in sequence
// order in bounded batches. Applying them in order does exactly what
// applying each in its write's transaction did, so the index is what it
// always was, only later; and as the queue commits with the records, a
// crash loses nothing: Open restarts the indexer on what is left.
//
// The postings are a BoltDB file of their own beside the records' (path
// + ".kw"): BoltDB has one writer per file, and an indexer batch in the
// records' file held their commits up for as long as it took. A batch is
// read from the queue in a read transaction of the records' file and
// applied in one transaction of the postings file, which also records
// the last sequence applied (kwAppliedKey); the next commit of the
// committer deletes the applied entries from the queue (contiguous keys:
// a page or two) and notes, in the records' meta bucket, the sequence it
// deleted through (kwTrimmedKey). So a crash between the two leaves
// entries that the postings file says are applied, and Open deletes them
// without applying them again.
//
// The postings file is derived data: backups, snapshots, repairs and
// rebalances never read it. When it is missing or unreadable, belongs to
// another record file, or is older than the queue (the queue was trimmed
// past what it applied), Open rebuilds it from the text records (and
// drops the _kw_ buckets a record file of the synchronous design held).
//
// Searches do not see "later": Keyword and KeywordStats first wait until
// every entry committed before they began is applied (waitIndexed), so a
// search after an acknowledged write sees it and never a document since
// deleted or rewritten.
//
//	key   = seq (8, big endian): the store's, increasing in commit order
//	value = uvarint len bucket | bucket | uvarint len key | key | kind (1) | rest
//	rest  = (kind 'w') flags (1: has old | tombstone) | uvarint version
//	        | [uvarint len old | old] | value
//	      | (kind 'p') the purged value
//
// where old is the live value the write replaced (none when the key held
// nothing or a tombstone).
//
// Like the index, the queue is the shard's own (a name starting with '_'
// is no record bucket): never scanned, snapshotted, copied by a repair or
// a rebalance, logged as a change or counted in Info.
const (
	kwQueueBucket = "_kwq"

	// kwFileSuffix names the postings file: the records' path and it.
	kwFileSuffix = ".kw"
	// kwMetaBucket, in the postings file, holds the last queue sequence
	// applied (8 bytes, big endian) and the node ID of the record file
	// the postings are of.
	kwMetaBucket = "_kwmeta"
	kwAppliedKey = "applied"
	kwNodeKey    = "node_id"
	kwTrimmedKey = "kwq_trimmed" // in the records' metaBucket: the queue is deleted through it

	// maxRebuildPostings bounds one transaction of a rebuild.
	maxRebuildPostings = 1 << 18

	kwQueueWrite = 'w'
	kwQueuePurge = 'p'

	kwOldValue  = 1 << 0
	kwTombstone = 1 << 1

	// maxIndexEntries and maxIndexPostings bound one indexer transaction
	// (of the postings file: writers' commits do not wait for it, but a
	// throttled committer and a search wait for it to end). The postings
	// budget is some 50 documents of 4 KB, a few tens of milliseconds.
	maxIndexEntries  = 256
	maxIndexPostings = 16384

	// indexBatchEntries is what the indexer waits to gather before it
	// runs: a batch of a few documents costs what the index cost in the
	// writers' commits. A search that waits for the index (urgent), or
	// maxIndexDelay after entries came, runs it sooner.
	indexBatchEntries = 128
	maxIndexDelay     = 100 * time.Millisecond

	// maxIndexBacklog bounds the entries queued and not yet applied: past
	// it, the committer waits for the indexer (throttle). Otherwise
	// writers that outpace it would grow the queue without end and a
	// search would wait for all of it; bounded, a search waits for a few
	// batches at most, and sustained writes go at the indexer's pace. It
	// is more than indexBatchEntries, so a throttled committer always has
	// a running indexer to wait for.
	maxIndexBacklog = 256

	// indexerBackoff is the wait before the indexer retries a batch that
	// failed (a full disk, say); it doubles to maxIndexerBackoff.
	indexerBackoff    = 100 * time.Millisecond
	maxIndexerBackoff = 10 * time.Second

	// keywordStatsWait bounds how long KeywordDocs and KeywordIndexStats
	// (which have no context: metrics) wait for the indexer before they
	// count what is indexed.
	keywordStatsWait = 10 * time.Second
)

// keywordIndex is the set of text buckets (fixed at Open) and the state
// of the queue and its indexer.
type keywordIndex struct {
	buckets map[string]bool
	db      *bolt.DB // the postings file

	// applied is the last sequence the postings file holds applied (the
	// indexer's, read by the committer); trimmed, the committer's, is the
	// one the queue is deleted through.
	applied atomic.Uint64
	trimmed uint64

	// seq is the last queue sequence taken; only write transactions take
	// one, and they run one at a time, so the queue's keys increase in
	// commit order. A transaction that fails leaves a gap, which is fine.
	seq atomic.Uint64
	// queued is the last sequence known committed: a search waits for
	// the indexer to reach what it held when the search began.
	queued atomic.Uint64

	wake   chan struct{} // a commit queued entries (capacity 1)
	urgent chan struct{} // a search waits for the index (capacity 1)
	stop   chan struct{} // closed to stop the indexer
	halt   sync.Once
	exit   chan struct{} // closed when the indexer has stopped

	// failing is set while the indexer's batches fail (it retries with a
	// backoff): the committer then does not wait for it (throttle), so
	// the records stay writable while their index cannot be.
	failing atomic.Bool

	mu       sync.Mutex
	done     uint64        // every entry through done is applied
	stopped  bool          // the indexer has stopped: waiting is vain
	advanced chan struct{} // closed, and replaced, when done moves or the indexer stops
}

func (s *Store) openKeywordIndex(opts Options) error {
	buckets := opts.TextBuckets
	if buckets == nil {
		buckets = DefaultTextBuckets
	}
	kw := &keywordIndex{
		buckets:  map[string]bool{},
		wake:     make(chan struct{}, 1),
		urgent:   make(chan struct{}, 1),
		stop:     make(chan struct{}),
		exit:     make(chan struct{}),
		advanced: make(chan struct{}),
	}
	for _, b := range buckets {
		if err := checkBucket(b); err != nil {
			return fmt.Errorf("text bucket: %w", err)
		}
		kw.buckets[b] = true
	}
	s.kw = kw
	if err := kw.openFile(s.path+kwFileSuffix, opts); err != nil {
		return err
	}
	if err := s.recoverKeywordIndex(); err != nil {
		kw.db.Close()
		return err
	}
	return nil
}

// openFile opens the postings file, and replaces one BoltDB cannot open
// (truncated, corrupt) with an empty one: it is rebuilt from the records.
func (kw *keywordIndex) openFile(path string, opts Options) error {
	bopts := &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	}
	db, err := bolt.Open(path, 0o600, bopts)
	if err != nil && !errors.Is(err, berrors.ErrTimeout) {
		slog.Warn("keyword index: unreadable, will rebuild it", "path", path, "err", err)
		if rerr := os.Remove(path); rerr != nil {
			return fmt.Errorf("keyword index %s: %v; remove it: %w", path, err, rerr)
		}
		db, err = bolt.Open(path, 0o600, bopts)
	}
	if err != nil {
		return fmt.Errorf("keyword index %s: %w", path, err)
	}
	kw.db = db
	return nil
}

// recoverKeywordIndex, at Open, settles the queue against the postings
// file: entries the file has applied are deleted, the others are left
// for the indexer; or, if the file cannot be trusted, it is rebuilt.
func (s *Store) recoverKeywordIndex() error {
	kw := s.kw
	var last, trimmed uint64
	legacy := false  // the record file holds a _kw_ bucket of the synchronous design
	hasText := false // some text bucket holds a record: a rebuild has work to do
	err := s.db.View(func(tx *bolt.Tx) error {
		if q := tx.Bucket([]byte(kwQueueBucket)); q != nil {
			if k, _ := q.Cursor().Last(); k != nil {
				last = binary.BigEndian.Uint64(k)
			}
		}
		if m := tx.Bucket([]byte(metaBucket)); m != nil {
			if v := m.Get([]byte(kwTrimmedKey)); len(v) == 8 {
				trimmed = binary.BigEndian.Uint64(v)
			}
		}
		for b := range kw.buckets {
			legacy = legacy || tx.Bucket([]byte(kwBucketPrefix+b)) != nil
			if tb := tx.Bucket([]byte(b)); tb != nil {
				k, _ := tb.Cursor().First()
				hasText = hasText || k != nil
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The sequence goes on from the last one taken: the queue's last
	// entry, or, when it is empty, the last one deleted.
	kw.seq.Store(max(last, trimmed))
	kw.trimmed = trimmed
	applied, node, ok := kw.readMeta()
	switch {
	case legacy, !ok, node != s.nodeID:
	case applied < trimmed, applied > kw.seq.Load():
		// The queue was deleted past what the file applied (an older
		// file), or the file applied what this queue never held.
	default:
		kw.applied.Store(applied)
		kw.queued.Store(kw.seq.Load())
		kw.done = applied
		return s.trimQueue()
	}
	if hasText {
		// There are records to index, and Open waits for them.
		slog.Warn("keyword index: rebuilding it from the records before the store opens (about 300 documents of 4 KB a second)",
			"path", kw.db.Path(), "migrating", legacy)
	}
	if err := s.rebuildKeywordIndex(); err != nil {
		return fmt.Errorf("rebuild the keyword index: %w", err)
	}
	return nil
}

// readMeta reads the postings file's last applied sequence and the node
// ID it is of; ok is false when it has none (new, or a rebuild that did
// not finish).
func (kw *keywordIndex) readMeta() (applied uint64, node string, ok bool) {
	_ = kw.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte(kwMetaBucket))
		if m == nil {
			return nil
		}
		v := m.Get([]byte(kwAppliedKey))
		if len(v) != 8 {
			return nil
		}
		applied, node, ok = binary.BigEndian.Uint64(v), string(m.Get([]byte(kwNodeKey))), true
		return nil
	})
	return applied, node, ok
}

// putApplied records in the postings file that the queue is applied
// through seq.
func putApplied(tx *bolt.Tx, seq uint64) error {
	m, err := tx.CreateBucketIfNotExists([]byte(kwMetaBucket))
	if err != nil {
		return fmt.Errorf("keyword index meta: %w", err)
	}
	return m.Put([]byte(kwAppliedKey), binary.BigEndian.AppendUint64(nil, seq))
}

// rebuildKeywordIndex replaces the postings file with one built from the
// live text records, read in one read transaction with the queue's last
// sequence: every entry through it is in the records read, so the file
// is applied through it. It runs at Open, before any write. The file
// says so (its meta) only in the last transaction: a rebuild cut short
// is done again. Then the queue, and the _kw_ buckets of a record file
// of the synchronous design, go.
func (s *Store) rebuildKeywordIndex() error {
	kw := s.kw
	start := time.Now()
	path := kw.db.Path()
	if err := kw.db.Close(); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoSync:         kw.db.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if err != nil {
		return err
	}
	kw.db = db
	seq := kw.seq.Load()
	docs := 0
	err = s.db.View(func(rtx *bolt.Tx) error {
		var batch []kwChange
		postings := 0
		flush := func(last bool) error {
			err := kw.db.Update(func(tx *bolt.Tx) error {
				for i := range batch {
					if err := indexText(tx, &batch[i]); err != nil {
						return err
					}
				}
				if !last {
					return nil
				}
				if err := putApplied(tx, seq); err != nil {
					return err
				}
				return tx.Bucket([]byte(kwMetaBucket)).Put([]byte(kwNodeKey), []byte(s.nodeID))
			})
			docs += len(batch)
			batch, postings = batch[:0], 0
			return err
		}
		for name := range kw.buckets {
			b := rtx.Bucket([]byte(name))
			if b == nil {
				continue
			}
			c := b.Cursor()
			for k, raw := c.First(); k != nil; k, raw = c.Next() {
				if vectorGroup(k) == 0 {
					continue
				}
				v, tomb, val, err := parseStored(raw)
				if err != nil {
					return fmt.Errorf("bucket %s key %q: %w", name, k, err)
				}
				if tomb || !maybeText(val) {
					continue
				}
				ch := kwChange{bucket: name, key: bytes.Clone(k), version: v}
				if ch.after, ch.has = docOf(val); !ch.has {
					continue
				}
				batch = append(batch, ch)
				if postings += ch.postings(); postings >= maxRebuildPostings {
					if err := flush(false); err != nil {
						return err
					}
				}
			}
		}
		return flush(true)
	})
	if err != nil {
		return err
	}
	kw.applied.Store(seq)
	kw.queued.Store(seq)
	kw.done = seq
	err = s.db.Update(func(tx *bolt.Tx) error {
		for b := range kw.buckets {
			if tx.Bucket([]byte(kwBucketPrefix+b)) != nil {
				if err := tx.DeleteBucket([]byte(kwBucketPrefix + b)); err != nil {
					return err
				}
			}
		}
		return kw.trim(tx)
	})
	if err != nil {
		return err
	}
	if docs > 0 {
		slog.Info("keyword index: rebuilt from the records", "path", path, "docs", docs, "took", time.Since(start))
	}
	return nil
}

// trim deletes, in tx of the record file, the queue's entries that the
// postings file has applied, and notes the sequence it deleted through.
// The committer calls it in its transactions (so it costs no commit of
// its own), Open and Close in one of their own.
func (kw *keywordIndex) trim(tx *bolt.Tx) error {
	applied := kw.applied.Load()
	if applied <= kw.trimmed {
		return nil
	}
	if q := tx.Bucket([]byte(kwQueueBucket)); q != nil {
		var keys [][]byte
		c := q.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= applied; k, _ = c.Next() {
			keys = append(keys, k)
		}
		for _, k := range keys {
			if err := q.Delete(k); err != nil {
				return fmt.Errorf("keyword queue: %w", err)
			}
		}
	}
	m, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
	if err != nil {
		return err
	}
	if err := m.Put([]byte(kwTrimmedKey), binary.BigEndian.AppendUint64(nil, applied)); err != nil {
		return err
	}
	tx.OnCommit(func() { kw.trimmed = applied })
	return nil
}

// trimQueue trims the queue in a transaction of its own.
func (s *Store) trimQueue() error {
	if s.kw.applied.Load() <= s.kw.trimmed {
		return nil
	}
	return s.db.Update(s.kw.trim)
}

// enqueueWrite queues the keyword index's part of one write about to
// replace old (the stored form held, nil if none) in tx. Call it before
// the write's Put, while old is still what tx holds.
func (kw *keywordIndex) enqueueWrite(tx *bolt.Tx, bucket string, key, old []byte, w *Write) error {
	if !kw.buckets[bucket] || vectorGroup(key) == 0 {
		return nil
	}
	var flags byte
	var oldVal []byte
	if old != nil {
		if _, tomb, val, err := parseStored(old); err == nil && !tomb {
			flags, oldVal = kwOldValue, val
		}
	}
	if w.Tombstone {
		flags |= kwTombstone
	}
	if !maybeText(oldVal) && (w.Tombstone || !maybeText(w.Value)) {
		return nil // nothing indexed before or after: a router's sealed values
	}
	e := kwEntryHead(bucket, key, kwQueueWrite, 2*binary.MaxVarintLen64+len(oldVal)+len(w.Value))
	e = append(e, flags)
	e = binary.AppendUvarint(e, w.Version)
	if flags&kwOldValue != 0 {
		e = binary.AppendUvarint(e, uint64(len(oldVal)))
		e = append(e, oldVal...)
	}
	return kw.enqueue(tx, append(e, w.Value...))
}

// enqueuePurge queues the removal of a purged record's postings; raw is
// its stored form. A tombstone has none.
func (kw *keywordIndex) enqueuePurge(tx *bolt.Tx, bucket string, key, raw []byte) error {
	if !kw.buckets[bucket] || vectorGroup(key) == 0 {
		return nil
	}
	_, tomb, val, err := parseStored(raw)
	if err != nil || tomb || !maybeText(val) {
		return nil
	}
	return kw.enqueue(tx, append(kwEntryHead(bucket, key, kwQueuePurge, len(val)), val...))
}

// maybeText reports whether val may be an indexed document: one in the
// text format. Writes between values that are not change no index.
func maybeText(val []byte) bool { return len(val) > 0 && val[0] == textFormatV1 }

func kwEntryHead(bucket string, key []byte, kind byte, more int) []byte {
	e := make([]byte, 0, 2*binary.MaxVarintLen16+len(bucket)+len(key)+1+more)
	e = binary.AppendUvarint(e, uint64(len(bucket)))
	e = append(e, bucket...)
	e = binary.AppendUvarint(e, uint64(len(key)))
	e = append(e, key...)
	return append(e, kind)
}

func (kw *keywordIndex) enqueue(tx *bolt.Tx, entry []byte) error {
	q, err := tx.CreateBucketIfNotExists([]byte(kwQueueBucket))
	if err != nil {
		return fmt.Errorf("keyword queue: %w", err)
	}
	q.FillPercent = 1 // keys only ever grow: fill pages fully
	seq := kw.seq.Add(1)
	if err := q.Put(binary.BigEndian.AppendUint64(nil, seq), entry); err != nil {
		return fmt.Errorf("keyword queue entry %d: %w", seq, err)
	}
	return nil
}

// committed tells the indexer that the entries through seq (the last one
// taken in a transaction that has committed) are there to apply.
func (kw *keywordIndex) committed(seq uint64) {
	for {
		q := kw.queued.Load()
		if seq <= q {
			return
		}
		if kw.queued.CompareAndSwap(q, seq) {
			break
		}
	}
	select {
	case kw.wake <- struct{}{}:
	default:
	}
}

// parseQueued reads and analyses one queued entry. Its key is a copy:
// the entry is read in a transaction that ends before it is applied.
func parseQueued(seq uint64, e []byte) (kwChange, error) {
	r := wireReader{b: e}
	c := kwChange{bucket: string(r.bytes("bucket", MaxKeySize))}
	c.key = bytes.Clone(r.bytes("key", MaxKeySize))
	switch kind := r.byte("kind"); {
	case r.err != nil:
	case kind == kwQueuePurge:
		c.purge = true
		c.before, c.had = docOf(r.b)
		return c, nil
	case kind == kwQueueWrite:
		flags := r.byte("flags")
		c.version = r.uvarint("version", math.MaxUint64)
		var old []byte
		if flags&kwOldValue != 0 {
			old = r.bytes("old value", len(r.b))
		}
		if r.err != nil {
			break
		}
		tomb := flags&kwTombstone != 0
		if flags&kwOldValue != 0 {
			if c.same = !tomb && bytes.Equal(old, r.b); c.same {
				return c, nil
			}
			c.before, c.had = docOf(old)
		}
		if !tomb {
			c.after, c.has = docOf(r.b)
		}
		return c, nil
	}
	return kwChange{}, fmt.Errorf("keyword queue entry %d: %w", seq, ErrInternal)
}

// runIndexer applies the queue until stop: whatever is there at once,
// then in batches as they gather.
func (s *Store) runIndexer() {
	kw := s.kw
	defer func() {
		kw.mu.Lock()
		kw.stopped = true
		close(kw.advanced)
		kw.mu.Unlock()
		close(kw.exit)
	}()
	backoff := indexerBackoff
	for {
		more, err := s.indexBatch()
		kw.failing.Store(err != nil)
		if err != nil {
			kw.wakeThrottled()
			slog.Error("keyword indexer: batch failed, will retry", "path", s.path, "backoff", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-kw.stop:
				return
			}
			backoff = min(2*backoff, maxIndexerBackoff)
			continue
		}
		backoff = indexerBackoff
		if more {
			select {
			case <-kw.stop:
				return
			default:
				continue
			}
		}
		if !kw.gather() {
			return
		}
	}
}

// gather waits until a batch's worth is queued, a search waits for the
// index, or maxIndexDelay has passed since entries came; false: stop.
func (kw *keywordIndex) gather() bool {
	var timer <-chan time.Time
	for {
		switch n := kw.backlog(); {
		case n >= indexBatchEntries:
			return true
		case n > 0 && timer == nil:
			t := time.NewTimer(maxIndexDelay)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-kw.wake:
		case <-kw.urgent:
			return true
		case <-timer:
			return true
		case <-kw.stop:
			return false
		}
	}
}

// backlog is how many entries are queued and not yet applied (or fewer:
// a transaction that failed leaves a gap in the sequence). The indexer
// may apply an entry before its writer reports it committed: done may
// pass queued.
func (kw *keywordIndex) backlog() uint64 {
	queued := kw.queued.Load()
	kw.mu.Lock()
	done := kw.done
	kw.mu.Unlock()
	return queued - min(done, queued)
}

// indexBatch applies the oldest queued entries not yet applied, as many
// as the bounds allow; more says some are left. It reads and analyses
// them in a read transaction of the record file, and applies them in one
// write transaction of the postings file, which notes the last one
// applied: the records' writer lock is not taken. The committer deletes
// them from the queue in its next commit (trim).
func (s *Store) indexBatch() (more bool, err error) {
	kw := s.kw
	// Every entry committed before the read transaction began is in the
	// queue: once it is read to the end, all of those are applied.
	target := kw.queued.Load()
	applied := kw.applied.Load()
	var seqs []uint64
	var changes []kwChange
	err = s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket([]byte(kwQueueBucket))
		if q == nil {
			return nil
		}
		postings := 0
		c := q.Cursor()
		k, v := c.Seek(binary.BigEndian.AppendUint64(nil, applied+1))
		for ; k != nil && len(changes) < maxIndexEntries && postings < maxIndexPostings; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			ch, err := parseQueued(seq, v)
			if err != nil {
				return err
			}
			postings += ch.postings()
			seqs, changes = append(seqs, seq), append(changes, ch)
		}
		more = k != nil
		return nil
	})
	if err != nil {
		return false, err
	}
	if len(changes) > 0 {
		last := seqs[len(seqs)-1]
		err = kw.db.Update(func(tx *bolt.Tx) error {
			for i := range changes {
				if err := indexText(tx, &changes[i]); err != nil {
					return err
				}
			}
			return putApplied(tx, last)
		})
		if err != nil {
			return false, err
		}
		kw.applied.Store(last)
		applied = last
	}
	done := applied
	if !more {
		done = max(done, target)
	}
	kw.mu.Lock()
	if done > kw.done {
		kw.done = done
		close(kw.advanced)
		kw.advanced = make(chan struct{})
	}
	kw.mu.Unlock()
	return more, nil
}

// throttle waits, on the committer, while the indexer is more than
// maxIndexBacklog entries behind, running and not failing: an index that
// cannot be written never stops the records from being written.
func (kw *keywordIndex) throttle() {
	for {
		kw.mu.Lock()
		stopped, advanced := kw.stopped, kw.advanced
		kw.mu.Unlock()
		if stopped || kw.failing.Load() || kw.backlog() <= maxIndexBacklog {
			return
		}
		<-advanced
	}
}

// wakeThrottled wakes a committer waiting in throttle (the indexer has
// just started failing), as an advance of the index would.
func (kw *keywordIndex) wakeThrottled() {
	kw.mu.Lock()
	close(kw.advanced)
	kw.advanced = make(chan struct{})
	kw.mu.Unlock()
}

// waitIndexed waits until the indexer has applied every entry committed
// before the call: what a search must see.
func (kw *keywordIndex) waitIndexed(ctx context.Context) error {
	target := kw.queued.Load()
	for {
		kw.mu.Lock()
		done, stopped, advanced := kw.done, kw.stopped, kw.advanced
		kw.mu.Unlock()
		switch {
		case done >= target:
			return nil
		case stopped:
			return ErrClosed
		}
		select {
		case kw.urgent <- struct{}{}:
		default:
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return fmt.Errorf("wait for the keyword index: %w", ctx.Err())
		}
	}
}

// waitIndexedFor is waitIndexed for at most d.
func (kw *keywordIndex) waitIndexedFor(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return kw.waitIndexed(ctx)
}

// stopIndexer stops the indexer and waits for it; entries it has not
// applied stay queued for the next Open. Close calls it before the files
// close.
func (kw *keywordIndex) stopIndexer() {
	kw.halt.Do(func() { close(kw.stop) })
	<-kw.exit
}
