package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options tune Open. The zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process.
	// Zero means one second.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for tests and benchmarks that
	// measure something else; a crash may lose acknowledged writes.
	NoSync bool
	// Observer, when set, is told how long each commit took and how many
	// writes it carried.
	Observer func(commit time.Duration, writes int)
	// Written, when set, is told how many bytes each commit wrote to the
	// file: the pages it allocated (values, leaves, branches) and its meta
	// page. It runs on the committer after the commit; it must be cheap.
	Written func(bytes int64)
	// ChangesRetain and ChangesMaxAge bound the change log (changes.go):
	// an entry goes once this many newer ones are held or once it is this
	// old, whichever comes first. Zero means DefaultChangesRetain and
	// DefaultChangesMaxAge.
	ChangesRetain int
	ChangesMaxAge time.Duration
	// VectorBuckets are the buckets whose records are vectors (EncodeVector)
	// that the store keeps an ANN index of (vindex.go). Nil means
	// DefaultVectorBuckets; an empty slice, none.
	VectorBuckets []string
	// SearchObserver, when set, is told how long each TopK took and
	// whether it scanned (exact) or walked an index.
	SearchObserver func(d time.Duration, exact bool)
	// TextBuckets are the buckets whose records are text (EncodeText)
	// that the store keeps a keyword index of (keyword.go). Nil means
	// DefaultTextBuckets; an empty slice, none.
	TextBuckets []string
	// KeywordObserver, when set, is told how long each Keyword took.
	KeywordObserver func(d time.Duration)
}

// Store is one shard's BoltDB file. Its methods are safe for concurrent use.
type Store struct {
	db     *bolt.DB
	path   string
	nodeID string
	obs    func(time.Duration, int)
	// written and pageSize serve Options.Written (nil: not asked).
	written  func(int64)
	pageSize int64
	epoch    atomic.Uint64 // version of the cluster map record held
	// arriving counts write requests the HTTP handler is still reading:
	// the committer waits up to maxGather for them (see commitLoop).
	arriving atomic.Int64

	// mu guards closed and the send side of commits: Apply holds it for
	// reading while it queues, Close for writing while it closes the queue.
	mu      sync.RWMutex
	closed  bool
	commits chan *commitReq
	done    chan struct{} // closed when the committer has exited

	changes changeLog // written by the committer only

	vx        *vectorIndex // the ANN indexes of the vector buckets
	searchObs func(time.Duration, bool)

	kw         *keywordIndex // the text buckets, the queue of their index (kwindexer.go)
	keywordObs func(time.Duration)
}

// maxGather bounds how long a commit waits for writes still arriving.
// It is a fraction of an fsync, which is what waiting saves.
const maxGather = 500 * time.Microsecond

// maxRejoin bounds how long a commit waits for the writers of the last two
// commits to come back (see commitLoop); it waits at most half the last
// commit's time, so it never costs more than a fraction of the fsync it
// saves.
const maxRejoin = time.Millisecond

// callerKey carries who sent a write (see WithCaller).
type callerKey struct{}

// WithCaller returns a context whose writes are known to come from caller:
// one writer that sends one request at a time, such as a connection. The
// committer counts the callers it has recently seen to know how many writes
// are about to come back. NewHandler marks each request with its connection.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// writers tracks the callers of recent commits: caller to the sequence
// number of the last commit that carried one of its writes.
type writers struct {
	seen map[string]uint64
	seq  uint64
}

// begin starts commit seq and returns how many callers the two commits
// before it carried, forgetting older ones.
func (w *writers) begin() int {
	w.seq++
	n := 0
	for c, at := range w.seen {
		if at+2 < w.seq {
			delete(w.seen, c)
			continue
		}
		n++
	}
	return n
}

// join counts caller into the current commit and reports whether it is new
// to it. Anonymous writes are not counted: nobody waits for them.
func (w *writers) join(caller string) int {
	if caller == "" || w.seen[caller] == w.seq {
		return 0
	}
	w.seen[caller] = w.seq
	return 1
}

type commitReq struct {
	caller string // see WithCaller
	bucket string
	// buckets, when set, is the bucket of each write (a Txn, whose writes
	// apply all or none); bucket is then unused.
	buckets []string
	writes  []Write
	results []Result
	err     chan error
}

// Open opens (creating if needed, with its directory) the BoltDB file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create directory for %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (waited %s)", path, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{
		db:         db,
		path:       path,
		obs:        opts.Observer,
		written:    opts.Written,
		searchObs:  opts.SearchObserver,
		keywordObs: opts.KeywordObserver,
		commits:    make(chan *commitReq, 1024),
		done:       make(chan struct{}),
	}
	s.pageSize = int64(db.Info().PageSize)
	if err := s.loadNodeID(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := s.openChanges(opts); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if rec, err := s.Get(context.Background(), ClusterBucket, []byte(MapKey)); err == nil {
		s.epoch.Store(rec.Version)
	}
	if err := s.openKeywordIndex(opts); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := s.openVectorIndex(opts); err != nil {
		s.kw.db.Close()
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	go s.commitLoop()
	go s.runIndexer()
	s.vx.passing.Store(true)
	s.startPass()
	return s, nil
}

// loadNodeID reads the shard's stable identity, creating it on first open.
// It survives restarts and address changes, so a shard is known by its data.
func (s *Store) loadNodeID() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		if id := b.Get([]byte("node_id")); id != nil {
			s.nodeID = string(id)
			return nil
		}
		var raw [8]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return err
		}
		s.nodeID = hex.EncodeToString(raw[:])
		return b.Put([]byte("node_id"), []byte(s.nodeID))
	})
}

// Path is the file the store was opened from.
func (s *Store) Path() string { return s.path }

// NodeID is the shard's stable identity, kept in its file.
func (s *Store) NodeID() string { return s.nodeID }

// Epoch is the epoch of the cluster map the shard holds (0: none).
func (s *Store) Epoch() uint64 { return s.epoch.Load() }

// Close waits for queued writes to commit, then closes the files.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.commits)
	s.mu.Unlock()
	<-s.done
	s.kw.stopIndexer()
	terr := s.trimQueue()
	s.changes.publish() // followers wake, and find the store closed
	verr := s.closeVectorIndex()
	return errors.Join(terr, s.db.Close(), s.kw.db.Close(), verr)
}

// Get returns the record held for key, tombstones included, or ErrNotFound.
func (s *Store) Get(_ context.Context, bucket string, key []byte) (Record, error) {
	if err := checkBucket(bucket); err != nil {
		return Record{}, err
	}
	if err := checkKey(key); err != nil {
		return Record{}, err
	}
	var rec Record
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return ErrNotFound
		}
		raw := b.Get(key)
		if raw == nil {
			return ErrNotFound
		}
		v, tomb, val, err := parseStored(raw)
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		rec = Record{Key: bytes.Clone(key), Version: v, Tombstone: tomb}
		if !tomb {
			rec.Value = bytes.Clone(val)
		}
		return nil
	})
	return rec, err
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Apply stores the writes that are newer than what is held and whose
// conditions hold, all in one transaction, and reports each one's outcome.
// Stale and conflicting writes are outcomes, not errors.
func (s *Store) Apply(ctx context.Context, bucket string, writes []Write) ([]Result, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	if len(writes) == 0 || len(writes) > MaxBatch {
		return nil, fmt.Errorf("batch of %d writes (want 1..%d): %w", len(writes), MaxBatch, ErrInvalid)
	}
	for i := range writes {
		if err := checkWrite(&writes[i]); err != nil {
			return nil, err
		}
	}
	if err := s.checkEpoch(ctx, bucket); err != nil {
		return nil, err
	}
	caller, _ := ctx.Value(callerKey{}).(string)
	return s.commit(&commitReq{caller: caller, bucket: bucket, writes: writes, results: make([]Result, len(writes)), err: make(chan error, 1)})
}

// commit queues req for the committer and waits for its outcome.
func (s *Store) commit(req *commitReq) ([]Result, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	s.commits <- req
	s.mu.RUnlock()
	// The write is queued: it commits whatever the caller does now, so we
	// wait for it rather than report an outcome we do not know.
	if err := <-req.err; err != nil {
		return nil, err
	}
	return req.results, nil
}

// commitLoop is the single writer. Each round it takes one queued request
// and every other request already waiting, and commits them together: writers
// that arrive while an fsync runs share the next one, a lone writer waits for
// nobody.
//
// The disk does one commit at a time, so a commit should carry as many
// writers as are active. Two waits make it so, each a fraction of the fsync
// it saves: for requests the handler is still reading (arriving), and for
// the writers of the last two commits that have not come back yet (their
// answers were just sent; their next requests are on the way). Without the
// second, concurrent writers settle into two halves that alternate
// between commits, and every fsync carries half of them.
func (s *Store) commitLoop() {
	defer close(s.done)
	batch := make([]*commitReq, 0, 64)
	recent := writers{seen: make(map[string]uint64)}
	var lastCommit time.Duration
	for req := range s.commits {
		want := recent.begin()
		batch = append(batch[:0], req)
		n, have := len(req.writes), recent.join(req.caller)
		add := func(r *commitReq) {
			batch = append(batch, r)
			n += len(r.writes)
			have += recent.join(r.caller)
		}
	drain:
		for n < MaxBatch {
			select {
			case r, ok := <-s.commits:
				if !ok {
					break drain
				}
				add(r)
			default:
				break drain
			}
		}
		var wait time.Duration
		if s.arriving.Load() > 0 {
			wait = maxGather
		}
		if have < want {
			wait = max(wait, min(lastCommit/2, maxRejoin))
		}
		if wait > 0 && n < MaxBatch {
			timer := time.NewTimer(wait)
		gather:
			for n < MaxBatch && (s.arriving.Load() > 0 || have < want) {
				select {
				case r, ok := <-s.commits:
					if !ok {
						break gather
					}
					add(r)
				case <-timer.C:
					break gather
				}
			}
			timer.Stop()
		}
		s.kw.throttle()
		start := time.Now()
		var logged logState
		var changed int
		var queued uint64
		err := s.db.Update(func(tx *bolt.Tx) error {
			if s.written != nil {
				tx.OnCommit(func() {
					st := tx.Stats()
					s.written(st.GetPageAlloc() + s.pageSize)
				})
			}
			for _, r := range batch {
				if err := applyTx(tx, r, s.kw); err != nil {
					return err
				}
			}
			queued = s.kw.seq.Load()
			if err := s.kw.trim(tx); err != nil {
				return err
			}
			var err error
			logged, changed, err = s.changes.append(tx, batch, start)
			return err
		})
		lastCommit = time.Since(start)
		if s.obs != nil {
			s.obs(lastCommit, n)
		}
		if err == nil {
			s.changes.at = logged
			s.committed(batch, changed, queued)
		}
		for _, r := range batch {
			r.err <- err
		}
	}
}

// checkEpoch refuses a write sent under an older cluster map than the one
// the shard holds. Writes to the map itself are never refused: they are
// how a newer map arrives.
func (s *Store) checkEpoch(ctx context.Context, bucket string) error {
	if e, ok := EpochFrom(ctx); ok && bucket != ClusterBucket && e < s.epoch.Load() {
		return fmt.Errorf("write under epoch %d, shard holds epoch %d: %w", e, s.epoch.Load(), ErrStaleEpoch)
	}
	return nil
}

// committed runs after each commit that succeeded, before its writers hear
// of it, on the committer's goroutine: whatever must follow the durable
// writes (the epoch held, followers of the change log) learns of them here.
// It must stay cheap (the vector index inserts are the exception: a
// search that starts after a write is acknowledged must see it); anything slow belongs to a goroutine of its own that
// this only wakes.
func (s *Store) committed(batch []*commitReq, changed int, queued uint64) {
	s.noteEpoch(batch)
	s.kw.committed(queued)
	s.indexCommitted(batch)
	if changed > 0 {
		s.changes.publish()
	}
}

// noteEpoch remembers the newest cluster map version committed.
func (s *Store) noteEpoch(batch []*commitReq) {
	for _, r := range batch {
		if r.bucket != ClusterBucket || r.buckets != nil {
			continue
		}
		for i, w := range r.writes {
			if string(w.Key) == MapKey && r.results[i].Outcome == Applied && w.Version > s.epoch.Load() {
				s.epoch.Store(w.Version)
			}
		}
	}
}

// bucketOf is the bucket write i of r goes to.
func (r *commitReq) bucketOf(i int) string {
	if r.buckets != nil {
		return r.buckets[i]
	}
	return r.bucket
}

// Txn applies writes to any buckets in one transaction, all or none: when
// the condition of any write fails, that write is a Conflict (or Stale, for
// a conditional write not newer than what is held), every other one is
// Aborted and nothing changes. Otherwise each write applies as in
// Apply (a write not newer than what is held is Stale and changes nothing,
// which is what lets a replica replay a transaction). Conditions are
// checked against what was held before the transaction; writes apply in
// order. The cluster bucket cannot be written in a transaction.
func (s *Store) Txn(ctx context.Context, writes []TxnWrite) ([]Result, error) {
	if err := checkTxn(writes); err != nil {
		return nil, err
	}
	req := &commitReq{buckets: make([]string, len(writes)), writes: make([]Write, len(writes)), results: make([]Result, len(writes)), err: make(chan error, 1)}
	for i := range writes {
		req.buckets[i], req.writes[i] = writes[i].Bucket, writes[i].Write
		if err := s.checkEpoch(ctx, writes[i].Bucket); err != nil {
			return nil, err
		}
	}
	req.caller, _ = ctx.Value(callerKey{}).(string)
	return s.commit(req)
}

// checkTxn checks a transaction the way Apply checks its writes.
func checkTxn(writes []TxnWrite) error {
	if len(writes) == 0 || len(writes) > MaxBatch {
		return fmt.Errorf("transaction of %d writes (want 1..%d): %w", len(writes), MaxBatch, ErrInvalid)
	}
	for i := range writes {
		if err := checkBucket(writes[i].Bucket); err != nil {
			return err
		}
		if writes[i].Bucket == ClusterBucket {
			return fmt.Errorf("bucket %s in a transaction: %w", ClusterBucket, ErrInvalid)
		}
		if err := checkWrite(&writes[i].Write); err != nil {
			return err
		}
	}
	return nil
}

// conflicts reports whether w's condition fails against res, what is held.
func conflicts(w *Write, res Result) bool {
	live := res.PrevLive()
	switch {
	case w.Cond == CondAbsent && live,
		w.Cond == CondExists && !live,
		w.Cond == CondVersion && (!live || res.PrevVersion != w.Match),
		w.Cond == CondExact && res.PrevVersion != w.Match,
		w.Cond == CondRewrite && (!live || res.PrevVersion != w.Version || w.Tombstone):
		return true
	}
	return false
}

// held is what b holds for key, as the Prev fields of a Result.
func held(b *bolt.Bucket, key []byte) (Result, error) {
	var res Result
	if b == nil {
		return res, nil
	}
	if raw := b.Get(key); raw != nil {
		v, tomb, _, err := parseStored(raw)
		if err != nil {
			return res, fmt.Errorf("key %q: %w", key, err)
		}
		res.PrevVersion, res.PrevTombstone = v, tomb
	}
	return res, nil
}

// applyTxn applies a transaction in tx: every condition is checked first,
// then all writes apply, or none.
func applyTxn(tx *bolt.Tx, r *commitReq, kw *keywordIndex) error {
	failed := false
	for i := range r.writes {
		res, err := held(tx.Bucket([]byte(r.buckets[i])), r.writes[i].Key)
		if err != nil {
			return err
		}
		w := &r.writes[i]
		switch {
		case conflicts(w, res):
			res.Outcome, failed = Conflict, true
		case w.Cond != CondNone && w.Cond != CondRewrite && res.PrevVersion >= w.Version:
			// A condition holds only for a write that applies.
			res.Outcome, failed = Stale, true
		default:
			res.Outcome = Applied // for now: Aborted below if another fails
		}
		r.results[i] = res
	}
	if failed {
		for i := range r.results {
			if r.results[i].Outcome == Applied {
				r.results[i].Outcome = Aborted
			}
		}
		return nil
	}
	for i := range r.writes {
		b, err := tx.CreateBucketIfNotExists([]byte(r.buckets[i]))
		if err != nil {
			return fmt.Errorf("bucket %s: %w", r.buckets[i], err)
		}
		w := &r.writes[i]
		cur, err := held(b, w.Key)
		if err != nil {
			return err
		}
		if cur.PrevVersion >= w.Version && w.Cond != CondRewrite {
			r.results[i].Outcome = Stale
			continue
		}
		if err := kw.enqueueWrite(tx, r.buckets[i], w.Key, b.Get(w.Key), w); err != nil {
			return err
		}
		val := appendStored(make([]byte, 0, headerSize+len(w.Value)), w.Version, w.Tombstone, w.Value)
		if err := b.Put(bytes.Clone(w.Key), val); err != nil {
			return fmt.Errorf("put %q: %w", w.Key, err)
		}
		r.results[i].Outcome = Applied
	}
	return nil
}

func applyTx(tx *bolt.Tx, r *commitReq, kw *keywordIndex) error {
	if r.buckets != nil {
		return applyTxn(tx, r, kw)
	}
	b, err := tx.CreateBucketIfNotExists([]byte(r.bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", r.bucket, err)
	}
	for i := range r.writes {
		w := &r.writes[i]
		res, err := held(b, w.Key)
		if err != nil {
			return err
		}
		switch {
		case conflicts(w, res):
			res.Outcome = Conflict
		case res.PrevVersion >= w.Version && w.Cond != CondRewrite:
			res.Outcome = Stale
		default:
			if err := kw.enqueueWrite(tx, r.bucket, w.Key, b.Get(w.Key), w); err != nil {
				return err
			}
			// Put keeps the slices until commit, and w aliases the caller's
			// request buffer: store fresh copies.
			val := appendStored(make([]byte, 0, headerSize+len(w.Value)), w.Version, w.Tombstone, w.Value)
			if err := b.Put(bytes.Clone(w.Key), val); err != nil {
				return fmt.Errorf("put %q: %w", w.Key, err)
			}
			res.Outcome = Applied
		}
		r.results[i] = res
	}
	return nil
}

// Scan returns a page of records in key order.
func (s *Store) Scan(_ context.Context, bucket string, opts ScanOptions) (ScanPage, error) {
	if err := checkBucket(bucket); err != nil {
		return ScanPage{}, err
	}
	if opts.Limit < 1 || opts.Limit > MaxScanLimit {
		return ScanPage{}, fmt.Errorf("scan limit %d (want 1..%d): %w", opts.Limit, MaxScanLimit, ErrInvalid)
	}
	var page ScanPage
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var k, raw []byte
		// A cursor before the prefix starts at the prefix.
		if opts.After != nil && bytes.Compare(opts.After, opts.Prefix) >= 0 {
			k, raw = c.Seek(opts.After)
			if k != nil && bytes.Equal(k, opts.After) {
				k, raw = c.Next()
			}
		} else {
			k, raw = c.Seek(opts.Prefix)
		}
		for ; k != nil && bytes.HasPrefix(k, opts.Prefix); k, raw = c.Next() {
			if len(page.Records) == opts.Limit {
				page.More = true
				break
			}
			v, tomb, val, err := parseStored(raw)
			if err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
			if tomb && !opts.Tombstones {
				continue
			}
			rec := Record{Key: bytes.Clone(k), Version: v, Tombstone: tomb}
			if !tomb && !opts.KeysOnly {
				if opts.ValueLimit > 0 && len(val) > opts.ValueLimit {
					val, rec.Truncated = val[:opts.ValueLimit], true
				}
				rec.Value = bytes.Clone(val)
			}
			page.Records = append(page.Records, rec)
		}
		return nil
	})
	return page, err
}

// DeletePrefix writes a tombstone at version for every live record under
// prefix whose version is older, and returns how many it deleted. It works in
// transactions of a bounded size, so a large prefix does not hold the writer
// for long; running it again finishes an interrupted run.
func (s *Store) DeletePrefix(ctx context.Context, bucket string, prefix []byte, version uint64) (int, error) {
	if err := checkBucket(bucket); err != nil {
		return 0, err
	}
	if len(prefix) == 0 {
		return 0, fmt.Errorf("empty prefix: %w", ErrInvalid)
	}
	if version == 0 {
		return 0, fmt.Errorf("delete without version: %w", ErrInvalid)
	}
	if err := s.checkEpoch(ctx, bucket); err != nil {
		return 0, err
	}
	total := 0
	var after []byte
	for {
		page, err := s.Scan(ctx, bucket, ScanOptions{Prefix: prefix, After: after, Limit: 1000})
		if err != nil {
			return total, err
		}
		if len(page.Records) == 0 {
			return total, nil
		}
		writes := make([]Write, 0, len(page.Records))
		for _, r := range page.Records {
			if r.Version < version {
				writes = append(writes, Write{Record: Record{Key: r.Key, Version: version, Tombstone: true}})
			}
		}
		if len(writes) > 0 {
			res, err := s.Apply(ctx, bucket, writes)
			if err != nil {
				return total, err
			}
			for _, r := range res {
				if r.Outcome == Applied {
					total++
				}
			}
		}
		if !page.More {
			return total, nil
		}
		after = page.Records[len(page.Records)-1].Key
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// Info describes the shard.
type Info struct {
	NodeID    string           `json:"node_id"`
	Path      string           `json:"path"`
	SizeBytes int64            `json:"size_bytes"`
	Keys      map[string]int64 `json:"keys"`    // records per bucket, tombstones included
	Changes   ChangeLog        `json:"changes"` // where the change log stands
}

// Info reports the shard's identity and size.
func (s *Store) Info(context.Context) (Info, error) {
	info := Info{NodeID: s.nodeID, Path: s.path, Keys: map[string]int64{}}
	err := s.view(func(tx *bolt.Tx) error {
		info.SizeBytes = tx.Size()
		info.Changes = logPosition(tx.Bucket([]byte(changesBucket)), s.changes.id)
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if name[0] != '_' { // the shard's own: meta, change log, keyword queue
				info.Keys[string(name)] = int64(b.Stats().KeyN)
			}
			return nil
		})
	})
	return info, err
}

// Ping reports whether the store is open.
func (s *Store) Ping(context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}
