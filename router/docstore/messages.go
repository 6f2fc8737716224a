package docstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// A conversation is stored in one of two formats (see schema.Conversation):
//
//   - inline: the messages inside the context document, as PUT writes it
//     and as every context was stored before message records;
//   - records: the context holds a header (the last seq, the idempotency
//     memory) and each message is a record of its own in
//     schema.BucketMessages, placed with the context.
//
// The first append to an inline context converts it: its messages become
// records 1..n (written ahead in chunks, invisible until the header names
// them), so a context is converted on its next append and reads back the
// same either way. An append then costs its own messages and the header, whatever the
// conversation's length.

// maxAttempts bounds the optimistic-concurrency loop of an append: each
// attempt reads the header, and writes only if nobody wrote in between.
// Under contention every round lets at least one writer through, so this
// bounds the waiting of a burst of that many appenders.
const maxAppendAttempts = 64

// Limits of the message-record transactions.
const (
	// txnRecords is the most message records one transaction carries
	// (the storage limit is storage.MaxBatch); txnBytes bounds their
	// values, well under the storage request limit.
	txnRecords = 2000
	txnBytes   = 16 << 20
	// rangePage is the page size of reading a conversation whole.
	rangePage = 1000
	// tailPage is the page size of reading a conversation backwards.
	tailPage = 64
)

// Appended is what an append stored.
type Appended struct {
	Version uint64
	// Doc is the context as stored, its Messages holding only the new
	// ones (with their seqs).
	Doc *schema.Document
	// First and Last are the seqs of the new messages; Count is the
	// length of the conversation after the append.
	First, Last, Count uint64
	// Replayed: a retry of an append already stored (same Idempotency-Key):
	// nothing was written, the seqs are those of the first.
	Replayed bool
}

// Append appends msgs to the context topic/id, creating it when it does
// not exist. With match non-zero the context must be at that version
// (If-Match), else 412. mutate, when set, changes the document further in
// the same write (a chat updates the running summary). The write is
// atomic: concurrent appends all land, in some order, each with its own
// seqs, and a failed one stores nothing.
func (s *Store) Append(ctx context.Context, topic, id string, msgs []schema.Message, match uint64, mutate func(*schema.Document)) (Appended, error) {
	return s.AppendKeyed(ctx, topic, id, msgs, match, "", mutate)
}

// AppendKeyed is Append with an idempotency key (none when ""): an append
// with the key of one the conversation remembers (the newest
// schema.MaxIdemKeys of the last day) stores nothing and answers what the
// first stored.
func (s *Store) AppendKeyed(ctx context.Context, topic, id string, msgs []schema.Message, match uint64, idemKey string, mutate func(*schema.Document)) (Appended, error) {
	if len(msgs) > schema.MaxAppendMessages {
		return Appended{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": %d messages in one append, at most %d allowed", len(msgs), schema.MaxAppendMessages)
	}
	start := time.Now()
	pk := schema.Placement(topic, id)
	key := []byte(schema.ContextKey(topic, id))
	var vecs [][]byte // the messages' vectors, embedded once for every attempt
	embedded := false
	vectors := func() [][]byte {
		if !embedded {
			vecs, embedded = s.cfg.Hooks.MessageVectors(ctx, msgs), true
		}
		return vecs
	}
	for attempt := range maxAppendAttempts {
		if attempt > 0 {
			// Jitter, so appenders that collided do not collide again.
			d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond)))
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return Appended{}, ctx.Err()
			}
		}
		res, err := s.appendOnce(ctx, topic, id, pk, key, msgs, match, idemKey, mutate, vectors)
		if errors.Is(err, errCollided) {
			continue
		}
		if err == nil && !res.Replayed {
			s.m.MessageAppends.Inc()
			s.m.AppendDuration.Observe(time.Since(start).Seconds())
			s.m.ConversationMessages.Observe(float64(res.Count))
		}
		return res, err
	}
	return Appended{}, apierr.Errorf(apierr.CodeUnavailable, "context %q in topic %q: %d concurrent writers kept colliding; retry", id, topic, maxAppendAttempts)
}

// errCollided: another write landed between an append's read and write.
var errCollided = errors.New("append collided")

func (s *Store) appendOnce(ctx context.Context, topic, id, pk string, key []byte, msgs []schema.Message, match uint64, idemKey string, mutate func(*schema.Document), vectors func() [][]byte) (Appended, error) {
	rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return Appended{}, err
	}
	now := time.Now().UTC()
	var doc *schema.Document
	var inline []schema.Message // an inline conversation's messages, to convert
	cond, want := storage.CondAbsent, uint64(0)
	expired := false // an expired context is replaced
	if err == nil && codec.LiveRecord(rec, now) {
		if match != 0 && rec.Version != match {
			return Appended{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q is at version %s, not %s", id, schema.ETag(rec.Version), schema.ETag(match))
		}
		if doc, err = s.codec.DecodeDocument(rec.Value); err != nil {
			return Appended{}, undecodable(topic, id, err)
		}
		cond, want = storage.CondVersion, rec.Version
		if doc.Content.Conversation == nil {
			inline, doc.Content.Messages = doc.Content.Messages, nil
			doc.Content.Conversation = &schema.Conversation{}
		}
	} else {
		if match != 0 {
			return Appended{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q does not exist in topic %q", id, topic)
		}
		doc = &schema.Document{Metadata: schema.Metadata{ID: id}, Content: schema.Content{Conversation: &schema.Conversation{}}}
		if ttl := s.topicTTL(ctx, topic); ttl > 0 {
			doc.Metadata.ExpiresAt = now.Add(time.Duration(ttl) * time.Second).Format(time.RFC3339Nano)
		}
		if err == nil && !rec.Tombstone {
			cond, want, expired = storage.CondVersion, rec.Version, true
		}
	}
	conv := doc.Content.Conversation
	if idemKey != "" {
		if e, ok := conv.Remembered(idemKey, now); ok {
			if e.Last-e.First+1 != uint64(len(msgs)) {
				return Appended{}, apierr.Errorf(apierr.CodeFailedPrecondition, "Idempotency-Key %q was used by an append of %d messages to context %q; this one has %d: use a new key for a new append", schema.Truncate(idemKey), e.Last-e.First+1, id, len(msgs))
			}
			doc.Content.Messages = nil
			return Appended{Version: rec.Version, Doc: doc, First: e.First, Last: e.Last, Count: conv.Last, Replayed: true}, nil
		}
	}

	// The message records: the inline messages being converted (written
	// ahead), then the new ones.
	first := conv.Last + uint64(len(inline)) + 1
	var with []storage.TxnWrite
	if len(inline) > 0 {
		old, err := s.messageWrites(topic, id, 1, inline)
		if err != nil {
			return Appended{}, err
		}
		// Ahead of the header, so its transaction holds only what this
		// append adds (the change feed names those seqs).
		if err := s.writeAhead(ctx, pk, rec.Version+1, old); err != nil {
			return Appended{}, err
		}
	}
	fresh, err := s.messageWrites(topic, id, first, msgs)
	if err != nil {
		return Appended{}, err
	}
	with = append(with, fresh...)
	// Their words and vectors (auto-embedding), in the same transaction: a
	// message is searchable as soon as it is stored, at its version.
	for i, m := range msgs {
		if text := strings.TrimSpace(m.Content); text != "" && m.Role != "tool" {
			if len(text) > schema.MaxIndexText {
				text = strings.ToValidUTF8(text[:schema.MaxIndexText], "")
			}
			with = append(with, storage.TxnWrite{Bucket: schema.BucketMessageText, Write: storage.Write{Record: storage.Record{Key: schema.MessageKey(topic, id, first+uint64(i)), Value: storage.EncodeText(storage.Text{Tags: []string{m.Role}, Body: text})}}})
		}
	}
	for i, v := range vectors() {
		if v != nil && i < len(msgs) {
			with = append(with, storage.TxnWrite{Bucket: schema.BucketMessageVectors, Write: storage.Write{Record: storage.Record{Key: schema.MessageKey(topic, id, first+uint64(i)), Value: v}}})
		}
	}
	conv.Last = first + uint64(len(msgs)) - 1
	if idemKey != "" {
		conv.Remember(idemKey, first, conv.Last, now)
	}

	// What the hooks see of the conversation: the new messages, after the
	// most recent ones when the router embeds the context (see embedWindow).
	doc.Content.Messages = msgs
	if mutate != nil {
		mutate(doc)
	}
	if s.cfg.Hooks.Derived(doc) {
		doc.Content.Embeddings = nil // the content changed: embed it again
		window, err := s.embedWindow(ctx, topic, id, pk, first, inline)
		if err != nil {
			return Appended{}, err
		}
		doc.Content.Messages = append(window, msgs...)
	}
	if err := doc.Normalize(now); err != nil {
		return Appended{}, err
	}
	s.cfg.Hooks.Prepare(ctx, doc)
	value, err := s.codec.EncodeDocument(doc)
	if err != nil {
		return Appended{}, &apierr.Error{Code: apierr.CodeInternal, Message: "encode context", Err: err}
	}
	with = append(with, s.beside(key, doc)...)
	res, v, err := s.coord.WriteTxn(ctx, pk, schema.BucketContexts, key, value, cond, want, with)
	if err != nil {
		return Appended{}, err
	}
	if res.Outcome == storage.Conflict {
		if match != 0 {
			return Appended{}, preconditionFailed(topic, id, storage.CondVersion, match, res)
		}
		return Appended{}, errCollided
	}
	// The cache holds documents with their messages: the next read
	// assembles it again.
	s.cache.Invalidate(contextCacheKey(string(key)), v)
	s.afterWrite(ctx, topic, doc, v, true)
	if expired {
		s.purgeMessages(topic, id, v) // the expired conversation's records
	}
	doc.Content.Messages = msgs
	for i := range msgs {
		msgs[i].Seq = first + uint64(i)
	}
	return Appended{Version: v, Doc: doc, First: first, Last: conv.Last, Count: conv.Last}, nil
}

// embedWindowMessages is how many of the messages before an append the
// router embeds with it: auto-embedding a conversation embeds its text and
// its most recent turns (up to maxEmbedText, see package llm), never the
// whole history, so an append costs the same at any length.
const embedWindowMessages = 16

// embedWindow returns the messages before seq first that an auto-embedded
// append embeds with its own: the last embedWindowMessages of them.
func (s *Store) embedWindow(ctx context.Context, topic, id, pk string, first uint64, inline []schema.Message) ([]schema.Message, error) {
	if len(inline) > 0 {
		return inline[max(0, len(inline)-embedWindowMessages):], nil
	}
	if first <= 1 {
		return nil, nil
	}
	from := max(1, int64(first)-embedWindowMessages)
	return s.messageRange(ctx, topic, id, pk, uint64(from), first-1)
}

// messageWrites encodes msgs as the records of seqs first, first+1, ….
func (s *Store) messageWrites(topic, id string, first uint64, msgs []schema.Message) ([]storage.TxnWrite, error) {
	ws := make([]storage.TxnWrite, len(msgs))
	for i, m := range msgs {
		v, err := s.codec.EncodeMessage(m)
		if err != nil {
			return nil, &apierr.Error{Code: apierr.CodeInternal, Message: "encode message", Err: err}
		}
		ws[i] = storage.TxnWrite{Bucket: schema.BucketMessages, Write: storage.Write{Record: storage.Record{Key: schema.MessageKey(topic, id, first+uint64(i)), Value: v}}}
	}
	return ws, nil
}

// writeAhead writes the records of an inline conversation being converted
// before the header that names them, at version v, just above the inline
// context's own, in transactions of at most txnRecords records and
// txnBytes. Until the header is written no reader sees them (the inline
// context has its messages in itself). If the conversion loses its race,
// they stay invisible, and never overwrite what the winner wrote: every
// write after the inline context's version is at v or newer, and a
// record at v or newer is kept over them (put-if-newer); a winner that
// converted the same context wrote the same messages.
func (s *Store) writeAhead(ctx context.Context, pk string, v uint64, ws []storage.TxnWrite) error {
	for len(ws) > 0 {
		n, size := 0, 0
		for n < len(ws) && n < txnRecords && (n == 0 || size+len(ws[n].Value) <= txnBytes) {
			size += len(ws[n].Key) + len(ws[n].Value)
			n++
		}
		if err := s.coord.WriteTxnAt(ctx, pk, v, ws[:n]); err != nil {
			return err
		}
		ws = ws[n:]
	}
	return nil
}

func undecodable(topic, id string, err error) error {
	return &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
}

// ---- reads ----

// messageRange reads the messages from seq from to seq to (inclusive) of
// a records-format conversation, oldest first, with their seqs. Every seq
// of the range must be there: the header that named them was written
// with them (or after them) on a Quorum, which any Quorum read meets. A
// read that races an append whose header a Quorum does not hold yet may
// miss its newest records: it is read again, and answers 503 if they
// still lack.
func (s *Store) messageRange(ctx context.Context, topic, id, pk string, from, to uint64) ([]schema.Message, error) {
	if from > to {
		return nil, nil
	}
	prefix := schema.MessagePrefix(topic, id)
	out := make([]schema.Message, 0, min(to-from+1, 4*rangePage))
	next := from
	for attempt := 0; ; attempt++ {
		for next <= to {
			limit := int(min(to-next+1, rangePage))
			recs, _, err := s.coord.Range(ctx, coord.RangeQuery{PK: pk, Bucket: schema.BucketMessages, Prefix: prefix, After: schema.MessageKey(topic, id, next-1), Limit: limit})
			if err != nil {
				return nil, err
			}
			got := 0
			for _, r := range recs {
				if seq, ok := schema.MessageSeq(prefix, r.Key); !ok || seq != next {
					break // a hole: read again below
				}
				m, err := s.codec.DecodeMessage(r.Value)
				if err != nil {
					return nil, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("message %d of context %q in topic %q cannot be decoded", next, id, topic), Err: err}
				}
				m.Seq = next
				out = append(out, m)
				next++
				got++
			}
			if got < limit {
				break
			}
		}
		if next > to {
			return out, nil
		}
		if attempt == 2 {
			return nil, apierr.Errorf(apierr.CodeUnavailable, "message %d of context %q in topic %q is not on a quorum of its replicas yet; retry", next, id, topic)
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// readHeader reads a context from a Quorum: its document without the
// messages of a records-format conversation, and its version.
func (s *Store) readHeader(ctx context.Context, topic, id string) (*schema.Document, uint64, error) {
	rec, err := s.coord.Get(ctx, schema.Placement(topic, id), schema.BucketContexts, []byte(schema.ContextKey(topic, id)))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !codec.LiveRecord(rec, time.Now())) {
		return nil, 0, notFound(topic, id)
	}
	if err != nil {
		return nil, 0, err
	}
	doc, err := s.codec.DecodeDocument(rec.Value)
	if err != nil {
		return nil, 0, undecodable(topic, id, err)
	}
	numberInline(doc)
	return doc, rec.Version, nil
}

// numberInline gives an inline conversation's messages their seqs (1 for
// the first): stored before seqs existed, they carry none.
func numberInline(doc *schema.Document) {
	if doc.Content.Conversation != nil {
		return
	}
	for i := range doc.Content.Messages {
		doc.Content.Messages[i].Seq = uint64(i + 1)
	}
}

// Count is the number of messages of a conversation read by readHeader.
func Count(doc *schema.Document) uint64 {
	if c := doc.Content.Conversation; c != nil {
		return c.Last
	}
	return uint64(len(doc.Content.Messages))
}

// ReadContext reads a context from its shards (not the cache: callers go
// on to write it, and need its newest version) with all its messages.
func (s *Store) ReadContext(ctx context.Context, topic, id string) (*schema.Document, uint64, error) {
	doc, v, err := s.readHeader(ctx, topic, id)
	if err != nil {
		return nil, 0, err
	}
	if c := doc.Content.Conversation; c != nil {
		if doc.Content.Messages, err = s.messageRange(ctx, topic, id, schema.Placement(topic, id), 1, c.Last); err != nil {
			return nil, 0, err
		}
	}
	return doc, v, nil
}

// ReadTail reads a context and the end of its conversation: pages of
// messages backwards from the newest until enough(doc, offset, tail)
// holds or the conversation begins. doc.Content.Messages is the tail
// read, oldest first; offset is the number of messages before it (the seq
// of its first is offset+1). An inline conversation is read whole.
func (s *Store) ReadTail(ctx context.Context, topic, id string, enough func(doc *schema.Document, offset uint64, tail []schema.Message) bool) (doc *schema.Document, offset, version uint64, err error) {
	doc, version, err = s.readHeader(ctx, topic, id)
	if err != nil {
		return nil, 0, 0, err
	}
	c := doc.Content.Conversation
	if c == nil {
		return doc, 0, version, nil // inline: all of it is in hand already
	}
	pk := schema.Placement(topic, id)
	end := c.Last
	var tail []schema.Message
	for end > 0 && (tail == nil || !enough(doc, end, tail)) {
		from := max(1, int64(end)-tailPage+1)
		page, err := s.messageRange(ctx, topic, id, pk, uint64(from), end)
		if err != nil {
			return nil, 0, 0, err
		}
		tail = append(page, tail...)
		end = uint64(from) - 1
	}
	doc.Content.Messages = tail
	return doc, end, version, nil
}

// MessagePage is a page of a conversation's messages, oldest first.
type MessagePage struct {
	Messages []schema.Message
	// Next is the seq the page ends at when more follow, 0 at the end.
	Next    uint64
	Count   uint64 // the conversation's length
	Version uint64 // the context's
}

// Messages reads a page of the conversation topic/id: at most limit
// messages after seq after, oldest first. A page costs its own size.
func (s *Store) Messages(ctx context.Context, topic, id string, after uint64, limit int) (MessagePage, error) {
	doc, v, err := s.readHeader(ctx, topic, id)
	if err != nil {
		return MessagePage{}, err
	}
	p := MessagePage{Count: Count(doc), Version: v}
	if after >= p.Count || limit <= 0 {
		p.Messages = []schema.Message{}
		return p, nil
	}
	to := min(p.Count, after+uint64(limit))
	if to < p.Count {
		p.Next = to
	}
	p.Messages, err = s.pageOf(ctx, topic, id, doc, after+1, to)
	return p, err
}

// LastMessages reads the newest n messages of the conversation topic/id,
// oldest first.
func (s *Store) LastMessages(ctx context.Context, topic, id string, n int) (MessagePage, error) {
	doc, v, err := s.readHeader(ctx, topic, id)
	if err != nil {
		return MessagePage{}, err
	}
	p := MessagePage{Count: Count(doc), Version: v}
	from := uint64(1)
	if uint64(n) < p.Count {
		from = p.Count - uint64(n) + 1
	}
	p.Messages, err = s.pageOf(ctx, topic, id, doc, from, p.Count)
	if p.Messages == nil && err == nil {
		p.Messages = []schema.Message{}
	}
	return p, err
}

// pageOf is the messages from..to of doc's conversation, in either format.
func (s *Store) pageOf(ctx context.Context, topic, id string, doc *schema.Document, from, to uint64) ([]schema.Message, error) {
	if doc.Content.Conversation == nil {
		if from > to {
			return []schema.Message{}, nil
		}
		return doc.Content.Messages[from-1 : to], nil
	}
	return s.messageRange(ctx, topic, id, schema.Placement(topic, id), from, to)
}

// ---- the purge of replaced conversations ----

// purgeMessages removes, in the background, the message records of the
// context topic/id older than version v: the conversation a delete, an
// expiry or a replacing PUT at v ended. The records are out of the
// conversation from v on already (the header at v names none of them);
// this only frees their space, and an interrupted purge leaves records
// that no read sees, purged by the next one. Records written after v (a
// conversation begun again) are newer and stay.
func (s *Store) purgeMessages(topic, id string, v uint64) {
	s.cfg.Go(func(bg context.Context) {
		if err := s.PurgeMessages(bg, topic, id, v); err != nil && bg.Err() == nil {
			s.log.Warn("message records of a replaced conversation not purged; they stay invisible", "topic", topic, "id", id, "err", err)
		}
	})
}

// PurgeMessages tombstones at version v every message record (and its
// vector and words) of the context topic/id older than v (see purgeMessages).
func (s *Store) PurgeMessages(ctx context.Context, topic, id string, v uint64) error {
	pk := schema.Placement(topic, id)
	prefix := schema.MessagePrefix(topic, id)
	for _, bucket := range []string{schema.BucketMessages, schema.BucketMessageVectors, schema.BucketMessageText} {
		var after []byte
		for {
			recs, next, err := s.coord.Range(ctx, coord.RangeQuery{PK: pk, Bucket: bucket, Prefix: prefix, After: after, Limit: txnRecords})
			if err != nil {
				return err
			}
			var ws []storage.TxnWrite
			for _, r := range recs {
				if r.Version < v {
					ws = append(ws, storage.TxnWrite{Bucket: bucket, Write: storage.Write{Record: storage.Record{Key: r.Key, Tombstone: true}}})
				}
			}
			if err := s.coord.WriteTxnAt(ctx, pk, v, ws); err != nil {
				return err
			}
			if next == nil {
				break
			}
			after = next
		}
	}
	return nil
}
