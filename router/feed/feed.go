package feed

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Source is what the feed needs of a shard: storage.Store and
// storage.Client have it.
type Source interface {
	ChangesHead(ctx context.Context) (storage.ChangeLog, error)
	Changes(ctx context.Context, req storage.ChangesRequest, fn func(storage.ChangeBatch) error) error
}

// Errors of Subscribe.
var (
	// ErrGone: the token's position is older than a shard keeps (see
	// GoneError for the heads to resume from).
	ErrGone = errors.New("resume point no longer held")
	// ErrBadToken: the token is not one this feed gives out.
	ErrBadToken = errors.New("malformed resume token")
	// ErrUnavailable: a shard's head could not be read to start a feed.
	ErrUnavailable = errors.New("shard unavailable")
)

// GoneError is ErrGone with the current heads' token.
type GoneError struct {
	Heads string // the token of every shard's head ("" if one was unreachable)
	Err   error  // the shard's gap
}

func (e *GoneError) Error() string        { return fmt.Sprintf("%v: %v", ErrGone, e.Err) }
func (e *GoneError) Is(target error) bool { return target == ErrGone }

// Kinds of Event.
const (
	Put    = "put"
	Delete = "delete"
	Reset  = "reset" // a shard's log had a gap mid-stream: changes may be missed
)

// Event is what a subscriber is handed. ID is empty for a bare position
// (Kind ""): the token moved past copies that were dropped.
type Event struct {
	Kind    string
	ID      string // the context
	Version uint64
	Token   string // resume after this event
	// FirstSeq..LastSeq are the messages a put appended to the context's
	// conversation (records written in its transaction); 0 when none.
	FirstSeq, LastSeq uint64
}

// Config wires a Feed.
type Config struct {
	Topology func() *placement.Topology
	// Ready bounds how long Subscribe waits for every shard's stream before
	// it starts (a shard down is retried meanwhile; 0: 2 s).
	Ready time.Duration
	// Prefill is how many changes before a resume point each shard is
	// read from to learn what was sent (0: DefaultPrefill).
	Prefill uint64
}

// DefaultPrefill is Config.Prefill's default: a replica that lags another
// by more changes than this may send a change again after a resume.
const DefaultPrefill = 1000

// maxSeen bounds the contexts a subscriber remembers (see Caveats).
const maxSeen = 1 << 16

// Feed opens subscriptions.
type Feed struct{ cfg Config }

// New builds a Feed.
func New(cfg Config) *Feed {
	if cfg.Ready <= 0 {
		cfg.Ready = 2 * time.Second
	}
	if cfg.Prefill == 0 {
		cfg.Prefill = DefaultPrefill
	}
	return &Feed{cfg: cfg}
}

// pos is one shard's position in a token.
type pos struct {
	logID string
	seq   uint64
}

// EncodeToken is the token of positions by shard name.
func encodeToken(names []string, at []pos) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(n)
		b.WriteByte(':')
		b.WriteString(at[i].logID)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(at[i].seq, 10))
	}
	return base64.RawURLEncoding.EncodeToString([]byte(b.String()))
}

func decodeToken(tok string) (map[string]pos, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(tok, "="))
	if err != nil || len(raw) == 0 {
		return nil, ErrBadToken
	}
	out := map[string]pos{}
	for _, e := range strings.Split(string(raw), ";") {
		parts := strings.Split(e, ":")
		if len(parts) != 3 || parts[0] == "" {
			return nil, ErrBadToken
		}
		seq, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil {
			return nil, ErrBadToken
		}
		out[parts[0]] = pos{parts[1], seq}
	}
	return out, nil
}

// shardMsg is what a shard's goroutine hands the merger.
type shardMsg struct {
	idx   int
	batch *storage.ChangeBatch
	gap   *storage.ChangesGapError
	down  bool // a connection failed; it is retried
	done  chan struct{}
}

// Heads is the token of every shard's current head.
func (f *Feed) Heads(ctx context.Context) (string, error) {
	nodes := f.nodes()
	names, at := make([]string, len(nodes)), make([]pos, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
		h, err := n.src.ChangesHead(ctx)
		if err != nil {
			return "", fmt.Errorf("change log head of shard %s: %w: %w", n.Name, ErrUnavailable, err)
		}
		at[i] = pos{h.ID, h.Head}
	}
	return encodeToken(names, at), nil
}

type node struct {
	Name string
	src  Source
}

func (f *Feed) nodes() []node {
	var out []node
	for _, n := range f.cfg.Topology().All {
		if src, ok := placement.As[Source](n.Shard); ok {
			out = append(out, node{n.Name, src})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Subscribe follows topic's changes from since (a token; "" starts at the
// heads) and hands each to emit, until ctx ends or emit fails. started
// runs once every shard's stream answered (or Config.Ready passed): an
// error before it (ErrGone, ErrBadToken, ErrUnavailable) means nothing was
// emitted.
func (f *Feed) Subscribe(ctx context.Context, topic, since string, started func(), emit func(Event) error) error {
	nodes := f.nodes()
	names, at := make([]string, len(nodes)), make([]pos, len(nodes))
	var from map[string]pos
	if since != "" {
		var err error
		if from, err = decodeToken(since); err != nil {
			return err
		}
	}
	// A shard resumed from the token is read from up to Prefill changes
	// before its position: what they hold was sent (seen, not sent
	// again), so the copy another replica gets later is dropped.
	starts := make([]pos, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
		p, ok := from[n.Name]
		h, err := n.src.ChangesHead(ctx)
		switch {
		case !ok && err != nil:
			return fmt.Errorf("change log head of shard %s: %w: %w", n.Name, ErrUnavailable, err)
		case !ok:
			p = pos{h.ID, h.Head}
		}
		at[i], starts[i] = p, p
		if ok && err == nil && h.Oldest > 0 {
			floor := h.Oldest - 1
			if p.seq > floor {
				starts[i].seq = max(floor, p.seq-min(p.seq, f.cfg.Prefill))
			}
		}
	}
	target := make([]uint64, len(nodes)) // seqs up to these were sent before
	for i := range at {
		target[i] = at[i].seq
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan shardMsg)
	for i, n := range nodes {
		go follow(ctx, i, n.src, starts[i], msgs)
	}

	prefix := []byte(schema.ContextKey(topic, ""))
	seen := map[string]uint64{} // context key → newest version sent
	markSeen := func(ch *storage.Change) {
		if ch.Bucket == schema.BucketContexts && bytes.HasPrefix(ch.Key, prefix) {
			seen[string(ch.Key)] = max(seen[string(ch.Key)], ch.Version)
		}
	}
	sent := encodeToken(names, at)
	handle := func(m shardMsg) error {
		defer close(m.done)
		if m.gap != nil {
			at[m.idx] = pos{m.gap.Log.ID, m.gap.Log.Head}
			target[m.idx] = 0 // a new log: nothing of it was sent
			sent = encodeToken(names, at)
			return emit(Event{Kind: Reset, Token: sent})
		}
		if m.batch == nil {
			return nil
		}
		appended := appendedSeqs(m.batch.Changes, prefix)
		for _, ch := range m.batch.Changes {
			if ch.Seq <= target[m.idx] {
				markSeen(&ch)
				continue
			}
			at[m.idx] = pos{m.batch.LogID, ch.Seq}
			if ch.Bucket != schema.BucketContexts || !bytes.HasPrefix(ch.Key, prefix) {
				continue
			}
			k := string(ch.Key)
			if seen[k] >= ch.Version {
				continue
			}
			if len(seen) >= maxSeen {
				clear(seen)
			}
			seen[k] = ch.Version
			kind := Put
			if ch.Tombstone {
				kind = Delete
			}
			sent = encodeToken(names, at)
			ev := Event{Kind: kind, ID: k[len(prefix):], Version: ch.Version, Token: sent}
			if r, ok := appended[seqKey{k, ch.Version}]; ok && !ch.Tombstone {
				ev.FirstSeq, ev.LastSeq = r[0], r[1]
			}
			if err := emit(ev); err != nil {
				return err
			}
		}
		at[m.idx].logID = m.batch.LogID
		if tok := encodeToken(names, at); tok != sent {
			sent = tok
			return emit(Event{Token: tok})
		}
		return nil
	}

	// Until started: every shard answers once; a gap is ErrGone.
	var early []shardMsg
	answered := make([]bool, len(nodes))
	left := len(nodes)
	timer := time.NewTimer(f.cfg.Ready)
	defer timer.Stop()
	for left > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			left = 0
		case m := <-msgs:
			if m.gap != nil {
				close(m.done)
				heads, _ := f.Heads(ctx)
				return &GoneError{Heads: heads, Err: m.gap}
			}
			// A shard has answered once it is down (retried later), or
			// its stream reached its target (the end of the prefill).
			if !answered[m.idx] && (m.batch == nil || caughtUp(m.batch, target[m.idx])) {
				answered[m.idx] = true
				left--
			}
			if m.batch != nil {
				// Kept: the goroutine waits on done, so the batch stays valid.
				early = append(early, m)
				continue
			}
			close(m.done)
		}
	}
	started()
	for _, m := range early { // every prefill first, whichever shard sent it
		for i := range m.batch.Changes {
			if ch := &m.batch.Changes[i]; ch.Seq <= target[m.idx] {
				markSeen(ch)
			}
		}
	}
	for _, m := range early {
		if err := handle(m); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-msgs:
			if err := handle(m); err != nil {
				return err
			}
		}
	}
}

// caughtUp reports whether b brings its stream up to target.
func caughtUp(b *storage.ChangeBatch, target uint64) bool {
	n := len(b.Changes)
	return n == 0 || b.Changes[n-1].Seq >= target || b.Head <= target
}

// follow streams one shard's changes from p to msgs until ctx ends,
// reconnecting from the last change handed over; a gap is reported, then
// followed from the shard's head.
func follow(ctx context.Context, idx int, src Source, p pos, msgs chan<- shardMsg) {
	backoff := 50 * time.Millisecond
	send := func(m shardMsg) bool {
		m.idx, m.done = idx, make(chan struct{})
		select {
		case msgs <- m:
		case <-ctx.Done():
			return false
		}
		select {
		case <-m.done:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		err := src.Changes(ctx, storage.ChangesRequest{Since: p.seq, LogID: p.logID}, func(b storage.ChangeBatch) error {
			if !send(shardMsg{batch: &b}) {
				return ctx.Err()
			}
			if n := len(b.Changes); n > 0 {
				p.seq = b.Changes[n-1].Seq
			}
			p.logID = b.LogID
			backoff = 50 * time.Millisecond
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if gap, ok := errors.AsType[*storage.ChangesGapError](err); ok {
			if !send(shardMsg{gap: gap}) {
				return
			}
			p = pos{gap.Log.ID, gap.Log.Head}
			continue
		}
		if !send(shardMsg{down: true}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// seqKey names a context's write: its key and version.
type seqKey struct {
	key     string
	version uint64
}

// appendedSeqs finds, in a batch of changes, the message records written
// with a context of the topic (prefix) at its version: an append's
// transaction, whose records follow its header in the log. It returns
// their seq range by context write. A transaction a batch splits loses
// the range of the part it misses: the event then names fewer seqs, or
// none.
func appendedSeqs(changes []storage.Change, prefix []byte) map[seqKey][2]uint64 {
	var out map[seqKey][2]uint64
	for i := range changes {
		ch := &changes[i]
		if ch.Bucket != schema.BucketMessages || ch.Tombstone || !bytes.HasPrefix(ch.Key, prefix) {
			continue
		}
		n := len(ch.Key) - 9 // topic 0 id | 0 | seq (8)
		if n <= len(prefix) || ch.Key[n] != schema.KeySep[0] {
			continue
		}
		seq, ok := schema.MessageSeq(ch.Key[:n+1], ch.Key)
		if !ok {
			continue
		}
		if out == nil {
			out = map[seqKey][2]uint64{}
		}
		k := seqKey{string(ch.Key[:n]), ch.Version}
		r, had := out[k]
		if !had {
			r = [2]uint64{seq, seq}
		}
		out[k] = [2]uint64{min(r[0], seq), max(r[1], seq)}
	}
	return out
}
