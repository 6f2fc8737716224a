package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
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
// order in bounded batches, each in one transaction that also deletes
// them. Applying them in order does exactly what applying each in its
// write's transaction did, so the index is what it always was, only
// later; and as the queue commits with the records, a crash loses
// nothing: Open restarts the indexer on what is left.
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

	kwQueueWrite = 'w'
	kwQueuePurge = 'p'

	kwOldValue  = 1 << 0
	kwTombstone = 1 << 1

	// maxIndexEntries and maxIndexPostings bound one indexer transaction:
	// it holds the writer lock, so the commits of writers wait for it.
	// The postings budget is some 50 documents of 4 KB, a few tens of
	// milliseconds, past which bigger batches save little.
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
	// What a crash left queued is applied first; the sequence goes on
	// from its last entry.
	return s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket([]byte(kwQueueBucket))
		if q == nil {
			return nil
		}
		c := q.Cursor()
		first, _ := c.First()
		last, _ := c.Last()
		if first == nil {
			return nil
		}
		kw.seq.Store(binary.BigEndian.Uint64(last))
		kw.queued.Store(kw.seq.Load())
		kw.done = binary.BigEndian.Uint64(first) - 1
		return nil
	})
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
		if err != nil {
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

// indexBatch applies and deletes the oldest queued entries, as many as
// the bounds allow; more says some are left. It reads and analyses them
// in a read transaction, so the writer lock is held only to apply them
// (and delete them) in one write transaction: nothing else removes an
// entry, so the entries read are still there, and still the oldest.
func (s *Store) indexBatch() (more bool, err error) {
	kw := s.kw
	var seqs []uint64
	var changes []kwChange
	err = s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket([]byte(kwQueueBucket))
		if q == nil {
			return nil
		}
		postings := 0
		c := q.Cursor()
		for k, v := c.First(); k != nil && len(changes) < maxIndexEntries && postings < maxIndexPostings; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			ch, err := parseQueued(seq, v)
			if err != nil {
				return err
			}
			postings += ch.postings()
			seqs, changes = append(seqs, seq), append(changes, ch)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	var done uint64
	err = s.db.Update(func(tx *bolt.Tx) error {
		// Every entry committed before this transaction began is in the
		// queue: once it is empty, all of those are applied.
		done = kw.queued.Load()
		q := tx.Bucket([]byte(kwQueueBucket))
		if q == nil {
			return nil
		}
		var key [8]byte
		for i := range changes {
			if err := indexText(tx, &changes[i]); err != nil {
				return err
			}
			binary.BigEndian.PutUint64(key[:], seqs[i])
			if err := q.Delete(key[:]); err != nil {
				return fmt.Errorf("keyword queue: %w", err)
			}
			done = max(done, seqs[i])
		}
		if k, _ := q.Cursor().First(); k != nil {
			more, done = true, binary.BigEndian.Uint64(k)-1
		}
		return nil
	})
	if err != nil {
		return false, err
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
// maxIndexBacklog entries behind (and running).
func (kw *keywordIndex) throttle() {
	for {
		kw.mu.Lock()
		stopped, advanced := kw.stopped, kw.advanced
		kw.mu.Unlock()
		if stopped || kw.backlog() <= maxIndexBacklog {
			return
		}
		<-advanced
	}
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
// applied stay queued for the next Open. Close calls it before the file
// closes.
func (kw *keywordIndex) stopIndexer() {
	kw.halt.Do(func() { close(kw.stop) })
	<-kw.exit
}
