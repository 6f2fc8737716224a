package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The change log: every write a commit applies gets the next sequence number
// of the shard and an entry in changesBucket, in the commit's own
// transaction, so the log holds exactly the writes that are durable and a
// restart continues the sequence. Entries say what changed (bucket, key,
// version, tombstone), never the value: a follower that wants the value
// reads it.
//
//	key   = seq (8, big endian)
//	value = commit time (8, Unix nanoseconds) | version (8) | flags (1) |
//	        uvarint(len bucket) bucket | key
//
// Sequence numbers are dense: the committer adds them one by one and
// trimming removes the oldest only, so head-oldest+1 entries are held.
//
// The log's ID names the generation of the log: each Open starts a new one,
// at head+1, and the file keeps the lineage (metaBucket's changes_lineage:
// generation (8) | first seq (8), oldest first). A follower resumes with the
// ID it last saw; the shard continues it when that generation is in its
// lineage and the follower's seq is no later than where the generation
// ended. So a restart continues every follower exactly, while a file
// restored, copied back from earlier (even one opened and written since),
// or whose log was lost, has a lineage without the follower's generation,
// or one that ended before the follower's seq: a gap, never other writes
// under numbers the follower already saw.

// Defaults of the change log's retention (Options.ChangesRetain and
// ChangesMaxAge) and of a follower's heartbeat (ChangesRequest.Heartbeat).
const (
	DefaultChangesRetain    = 1_000_000
	DefaultChangesMaxAge    = 24 * time.Hour
	DefaultChangesHeartbeat = time.Second

	// A heartbeat is asked for between these bounds.
	MinChangesHeartbeat = 10 * time.Millisecond
	MaxChangesHeartbeat = time.Minute
)

const (
	// maxChangeBatch bounds the entries of one ChangeBatch: a follower far
	// behind replays in steps, and no read transaction stays open long.
	maxChangeBatch = 1000
	// trimSlack is how many entries a commit may trim beyond the ones it
	// adds, so a backlog (a retention lowered, entries aged out) drains at
	// a bounded cost per commit.
	trimSlack = 256
	// lineageKey names the log's lineage in metaBucket.
	lineageKey = "changes_lineage"
	// maxLineage bounds the generations kept: a follower of a generation
	// forgotten (a thousand restarts ago) gets a gap, which is safe.
	maxLineage = 1000
)

// changesIDPattern is the form of a log ID (a generation's 8 random bytes
// in hex).
var changesIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// Change is one applied write, as the change log keeps it.
type Change struct {
	Seq       uint64
	Time      time.Time // when its commit ran, by the shard's clock
	Bucket    string
	Key       []byte
	Version   uint64
	Tombstone bool
}

// ChangeBatch is what a follower is handed at a time: the changes after the
// last one it saw, in sequence order, and the log's head when they were
// read. A batch without changes is a heartbeat: the follower is caught up to
// Head and the shard is alive.
type ChangeBatch struct {
	LogID   string
	Head    uint64
	Changes []Change
}

// ChangeLog is where a shard's change log stands.
type ChangeLog struct {
	// ID names the log's current generation, new each time the file is
	// opened. A follower passes back the last ID it saw and learns from
	// Changes whether it continues (after a restart it does) or has a gap
	// (the file was replaced, restored, or its log lost); IDs are not for
	// comparing.
	ID     string `json:"id"`
	Oldest uint64 `json:"oldest"` // oldest seq held; Head+1 when none is
	Head   uint64 `json:"head"`   // newest seq given out; 0 before the first write
}

// ChangesRequest says where a follower resumes.
type ChangesRequest struct {
	// Since is the last seq the follower has seen: the changes after it
	// are replayed. 0 replays the whole log, which is a gap once the log
	// has been trimmed; a new follower asks ChangesHead first and starts
	// from its Head.
	Since uint64
	// LogID is the ID of the batch Since came in; empty accepts any log
	// that holds Since (a first subscription).
	LogID string
	// Heartbeat is how often an empty batch is sent while nothing
	// changes; 0 means DefaultChangesHeartbeat.
	Heartbeat time.Duration
}

func (r *ChangesRequest) check() error {
	if r.LogID != "" && !changesIDPattern.MatchString(r.LogID) {
		return fmt.Errorf("change log id %q (want 16 hex digits): %w", r.LogID, ErrInvalid)
	}
	if r.Heartbeat != 0 && (r.Heartbeat < MinChangesHeartbeat || r.Heartbeat > MaxChangesHeartbeat) {
		return fmt.Errorf("heartbeat %s (want %s..%s): %w", r.Heartbeat, MinChangesHeartbeat, MaxChangesHeartbeat, ErrInvalid)
	}
	return nil
}

func (r *ChangesRequest) heartbeat() time.Duration {
	if r.Heartbeat == 0 {
		return DefaultChangesHeartbeat
	}
	return r.Heartbeat
}

// ChangesGapError is returned by Changes when the changes a follower asks
// for are not all held: older than the oldest entry kept, from a log this
// file never continued (LogID), or beyond where it went (the file went back
// in time). The follower has missed changes: it must forget what it learnt
// from the log, then follow again from Log.Head under Log.ID.
// errors.Is(err, ErrChangesGap) holds.
type ChangesGapError struct {
	Since uint64    // what the follower asked for
	LogID string    // the log it asked about ("" for any)
	Log   ChangeLog // what the shard holds
	// Unknown: LogID is no generation of this file's log. Beyond: it is,
	// but the generation ended before Since.
	Unknown, Beyond bool
}

func (e *ChangesGapError) Error() string {
	held := fmt.Sprintf("the shard holds change log %s, seqs %d..%d", e.Log.ID, e.Log.Oldest, e.Log.Head)
	switch {
	case e.Unknown:
		return fmt.Sprintf("change log %s is not one this shard continues (%s): %v", e.LogID, held, ErrChangesGap)
	case e.Beyond || e.Since > e.Log.Head:
		return fmt.Sprintf("changes after %d asked, a seq this shard's log never reached there (%s): %v", e.Since, held, ErrChangesGap)
	}
	return fmt.Sprintf("changes after %d asked, trimmed from the log (%s): %v", e.Since, held, ErrChangesGap)
}

// Is makes errors.Is(err, ErrChangesGap) true.
func (e *ChangesGapError) Is(target error) bool { return target == ErrChangesGap }

// changeLog is the store's side of the log. The committer alone writes it,
// in its transaction; readers read the bucket.
type changeLog struct {
	id      string       // the generation this Store writes
	lineage []generation // every generation kept, oldest first; fixed after Open
	retain  uint64
	maxAge  time.Duration
	// at is where the log stood after the last commit; the committer's
	// own (see append).
	at logState
	// wake is closed, and replaced, after each commit that logged changes:
	// a follower waits on the channel it loaded before it last read.
	wake atomic.Pointer[chan struct{}]
}

type logState struct{ head, oldest uint64 }

// generation is one Open's part of the log: from first to the next's first.
type generation struct {
	id    string
	first uint64
}

// continues reports why the log cannot continue a follower that saw since
// in generation id ("" for any): not one of its generations, or one that
// ended before since. Both false: it continues.
func (l *changeLog) continues(id string, since uint64) (unknown, beyond bool) {
	if id == "" {
		return false, false
	}
	for i, g := range l.lineage {
		if g.id == id {
			return false, i+1 < len(l.lineage) && since >= l.lineage[i+1].first
		}
	}
	return true, false
}

// openChanges loads the change log and starts a new generation of it, or
// starts a new log when there is none or its entries are gone.
func (s *Store) openChanges(opts Options) error {
	l := &s.changes
	l.retain, l.maxAge = DefaultChangesRetain, DefaultChangesMaxAge
	if opts.ChangesRetain > 0 {
		l.retain = uint64(opts.ChangesRetain)
	}
	if opts.ChangesMaxAge > 0 {
		l.maxAge = opts.ChangesMaxAge
	}
	ch := make(chan struct{})
	l.wake.Store(&ch)
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("change log generation: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(metaBucket))
		b := tx.Bucket([]byte(changesBucket))
		lineage, ok := parseLineage(meta.Get([]byte(lineageKey)))
		if b == nil || !ok {
			// A file from before the log, or one whose log was lost:
			// its writes so far were never logged, so the log starts
			// anew, with a lineage no follower has seen.
			if b != nil {
				if err := tx.DeleteBucket([]byte(changesBucket)); err != nil {
					return fmt.Errorf("reset change log: %w", err)
				}
			}
			var err error
			if b, err = tx.CreateBucket([]byte(changesBucket)); err != nil {
				return fmt.Errorf("create change log: %w", err)
			}
			lineage = nil
		}
		pos := logPosition(b, "")
		l.at = logState{head: pos.Head, oldest: pos.Oldest}
		l.id = hex.EncodeToString(raw[:])
		lineage = append(lineage, generation{id: l.id, first: pos.Head + 1})
		if len(lineage) > maxLineage {
			lineage = lineage[len(lineage)-maxLineage:]
		}
		l.lineage = lineage
		if err := meta.Put([]byte(lineageKey), appendLineage(nil, lineage)); err != nil {
			return fmt.Errorf("change log lineage: %w", err)
		}
		return nil
	})
}

func appendLineage(dst []byte, lineage []generation) []byte {
	for _, g := range lineage {
		raw, _ := hex.DecodeString(g.id)
		dst = append(dst, raw...)
		dst = binary.BigEndian.AppendUint64(dst, g.first)
	}
	return dst
}

// parseLineage decodes a stored lineage; ok is false when there is none or
// it is damaged.
func parseLineage(b []byte) (lineage []generation, ok bool) {
	if len(b) == 0 || len(b)%16 != 0 {
		return nil, false
	}
	for ; len(b) > 0; b = b[16:] {
		lineage = append(lineage, generation{id: hex.EncodeToString(b[:8]), first: binary.BigEndian.Uint64(b[8:16])})
	}
	return lineage, true
}

// logPosition reads where the log in b stands.
func logPosition(b *bolt.Bucket, id string) ChangeLog {
	pos := ChangeLog{ID: id}
	c := b.Cursor()
	if k, _ := c.Last(); len(k) == 8 {
		pos.Head = binary.BigEndian.Uint64(k)
	}
	pos.Oldest = pos.Head + 1
	if k, _ := c.First(); len(k) == 8 {
		pos.Oldest = binary.BigEndian.Uint64(k)
	}
	return pos
}

// append logs the applied writes of batch in tx, then trims what retention
// no longer keeps, at most trimSlack entries more than it added. It returns
// where the log stands if tx commits, and how many entries it added.
func (l *changeLog) append(tx *bolt.Tx, batch []*commitReq, now time.Time) (logState, int, error) {
	at := l.at
	var b *bolt.Bucket
	// Put keeps its slices until commit: every entry is cut from one
	// growing arena, whose old arrays stay valid when it moves.
	var arena []byte
	added := 0
	stamp := uint64(now.UnixNano())
	for _, r := range batch {
		for i := range r.results {
			if r.results[i].Outcome != Applied {
				continue
			}
			if b == nil {
				b = tx.Bucket([]byte(changesBucket))
				b.FillPercent = 1 // keys only ever grow: fill pages fully
				arena = make([]byte, 0, 64*len(r.writes))
			}
			w := &r.writes[i]
			at.head++
			start := len(arena)
			arena = binary.BigEndian.AppendUint64(arena, at.head)
			arena = binary.BigEndian.AppendUint64(arena, stamp)
			arena = binary.BigEndian.AppendUint64(arena, w.Version)
			var flags byte
			if w.Tombstone {
				flags |= flagTombstone
			}
			arena = append(arena, flags)
			bucket := r.bucketOf(i)
			arena = binary.AppendUvarint(arena, uint64(len(bucket)))
			arena = append(arena, bucket...)
			arena = append(arena, w.Key...)
			entry := arena[start:len(arena):len(arena)]
			if err := b.Put(entry[:8], entry[8:]); err != nil {
				return at, 0, fmt.Errorf("change %d: %w", at.head, err)
			}
			added++
		}
	}
	if added == 0 {
		return at, 0, nil
	}
	// The newest entry is never trimmed, so the head survives a restart
	// however old it gets.
	cutoff := now.Add(-l.maxAge).UnixNano()
	c := b.Cursor()
	for budget := added + trimSlack; budget > 0; budget-- {
		k, v := c.First()
		if len(k) != 8 {
			break
		}
		seq := binary.BigEndian.Uint64(k)
		at.oldest = seq
		if seq >= at.head {
			break
		}
		if at.head-seq+1 <= l.retain && (len(v) < 8 || int64(binary.BigEndian.Uint64(v)) >= cutoff) {
			break
		}
		if err := c.Delete(); err != nil {
			return at, 0, fmt.Errorf("trim change %d: %w", seq, err)
		}
		at.oldest = seq + 1
	}
	return at, added, nil
}

// publish wakes every follower waiting for changes.
func (l *changeLog) publish() {
	ch := make(chan struct{})
	close(*l.wake.Swap(&ch))
}

// waiter returns the channel the next publish closes.
func (l *changeLog) waiter() <-chan struct{} { return *l.wake.Load() }

// ChangesHead reports where the change log stands.
func (s *Store) ChangesHead(context.Context) (ChangeLog, error) {
	var pos ChangeLog
	err := s.view(func(tx *bolt.Tx) error {
		pos = logPosition(tx.Bucket([]byte(changesBucket)), s.changes.id)
		return nil
	})
	return pos, err
}

// Changes hands fn the changes after req.Since, in sequence order and in
// batches of at most a thousand, then follows the log: each commit's
// changes as it lands, and an empty batch (a heartbeat) every
// req.Heartbeat while nothing changes. The first batch comes at once, empty
// when the follower is caught up. It returns when ctx ends (ctx's error),
// when fn fails (fn's error), when the store closes (ErrClosed), or with a
// *ChangesGapError when the changes asked for are not all held, at the
// start or later (a follower slower than the retention).
//
// fn runs on the caller's goroutine and may keep the batch; while it runs
// nothing is read for it, and writers do not wait for it.
func (s *Store) Changes(ctx context.Context, req ChangesRequest, fn func(ChangeBatch) error) error {
	if err := req.check(); err != nil {
		return err
	}
	every := req.heartbeat()
	beat := time.NewTimer(every)
	defer beat.Stop()
	since, due := req.Since, true
	logID := req.LogID
	for {
		// Load the channel before reading: a commit after the read
		// closes it, and one before it is in what is read.
		wake := s.changes.waiter()
		batch, err := s.readChanges(logID, since)
		if err != nil {
			return err
		}
		// Once the follower's position is checked against its own log, the
		// stream goes on in this generation: seqs it now sends are the
		// current generation's, and asking for them under the follower's
		// older log id would take them for a generation that never reached
		// them (a false gap after every restart that came with new writes).
		logID = batch.LogID
		if len(batch.Changes) > 0 || due {
			if err := fn(batch); err != nil {
				return err
			}
			due = false
			beat.Reset(every)
		}
		if n := len(batch.Changes); n > 0 {
			since = batch.Changes[n-1].Seq
			if since < batch.Head {
				continue // more to replay
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-beat.C:
			due = true
		}
	}
}

// readChanges reads up to maxChangeBatch changes after since, or the gap
// that keeps it from.
func (s *Store) readChanges(logID string, since uint64) (ChangeBatch, error) {
	batch := ChangeBatch{LogID: s.changes.id}
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(changesBucket))
		pos := logPosition(b, s.changes.id)
		batch.Head = pos.Head
		unknown, beyond := s.changes.continues(logID, since)
		if unknown || beyond || since > pos.Head || since+1 < pos.Oldest {
			return &ChangesGapError{Since: since, LogID: logID, Log: pos, Unknown: unknown, Beyond: beyond}
		}
		if since == pos.Head {
			return nil
		}
		var keys []byte // one allocation for the keys of the batch
		var bucket string
		c := b.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, since+1)); k != nil && len(batch.Changes) < maxChangeBatch; k, v = c.Next() {
			ch, name, key, err := parseChange(k, v)
			if err != nil {
				return err
			}
			// Consecutive changes of one bucket share its name.
			if string(name) != bucket {
				bucket = string(name)
			}
			ch.Bucket = bucket
			start := len(keys)
			keys = append(keys, key...)
			ch.Key = keys[start:len(keys):len(keys)]
			batch.Changes = append(batch.Changes, ch)
		}
		return nil
	})
	return batch, err
}

// parseChange decodes a log entry; name and key alias v.
func parseChange(k, v []byte) (ch Change, name, key []byte, err error) {
	if len(k) != 8 {
		return ch, nil, nil, fmt.Errorf("change log key %x: %w", k, errBadChange)
	}
	ch.Seq = binary.BigEndian.Uint64(k)
	r := wireReader{b: v}
	ch.Time = time.Unix(0, int64(r.uint64("change time")))
	ch.Version = r.uint64("change version")
	ch.Tombstone = r.byte("change flags")&flagTombstone != 0
	name = r.bytes("change bucket", 32)
	if r.err != nil || len(r.b) == 0 {
		return ch, nil, nil, fmt.Errorf("change %d: %w", ch.Seq, errBadChange)
	}
	return ch, name, r.b, nil
}

// errBadChange is a log entry that does not decode: a damaged file.
var errBadChange = errors.New("malformed change log entry")
