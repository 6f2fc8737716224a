package docstore

import (
	"context"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

// preconditionFailed explains why a conditional write did not apply.
func preconditionFailed(topic, id string, cond storage.Cond, match uint64, res storage.Result) error {
	switch {
	case cond == storage.CondAbsent:
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q already exists in topic %q", id, topic)
	case !res.PrevLive():
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q does not exist in topic %q", id, topic)
	default:
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q is at version %s, not %s", id, schema.ETag(res.PrevVersion), schema.ETag(match))
	}
}

// Context returns a context's rendered JSON and version, and whether the
// hot cache answered. A missing, deleted or expired context is not_found.
func (s *Store) Context(ctx context.Context, topic, id string) (body []byte, version uint64, hit bool, err error) {
	key := schema.ContextKey(topic, id)
	ck := contextCacheKey(key)
	pk := schema.Placement(topic, id)
	// Decided before the read: a read that began while the router was not
	// caught up may have missed a change it will not be told of again.
	cached := s.useCache(ctx, pk)
	if v, tomb, body, ok := s.cache.Get(ck); cached && ok && !s.maskedByTopicDelete(topic, v) {
		s.m.CacheHits.Inc()
		if tomb || codec.RenderedExpired(body) {
			return nil, 0, true, notFound(topic, id)
		}
		return body, v, true, nil
	}
	s.m.CacheMisses.Inc()
	rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, []byte(key))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, false, notFound(topic, id)
	}
	if err != nil {
		return nil, 0, false, err
	}
	if rec.Tombstone || codec.StoredExpired(rec.Value, time.Now()) {
		// Deleted, or expired for good at this version: cached as deleted.
		if cached {
			s.cache.Put(ck, rec.Version, true, nil)
		}
		return nil, 0, false, notFound(topic, id)
	}
	body, err = s.render(ctx, topic, id, pk, rec.Value)
	if err != nil {
		return nil, 0, false, err
	}
	if cached {
		s.cache.Put(ck, rec.Version, false, body)
	}
	return body, rec.Version, false, nil
}

// render renders a stored context with all its messages: a
// records-format conversation's are read from their records.
func (s *Store) render(ctx context.Context, topic, id, pk string, stored []byte) ([]byte, error) {
	conv, err := s.codec.ConversationOf(stored)
	if err != nil {
		return nil, undecodable(topic, id, err)
	}
	if conv == nil {
		body, err := s.codec.AppendDocumentJSON(nil, stored, true)
		if err != nil {
			return nil, undecodable(topic, id, err)
		}
		return body, nil
	}
	msgs, err := s.messageRange(ctx, topic, id, pk, 1, conv.Last)
	if err != nil {
		return nil, err
	}
	body, err := s.codec.AppendDocumentWithMessages(nil, stored, msgs)
	if err != nil {
		return nil, undecodable(topic, id, err)
	}
	return body, nil
}

func notFound(topic, id string) error {
	return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
}

// Written is what Put stored.
type Written struct {
	Version uint64
	Created bool   // no live context was replaced
	Body    []byte // the rendered document
}

// Put writes a validated document of an existing topic under cond (with
// match for CondVersion). A failed condition answers what onConflict
// returns for the shard's result.
func (s *Store) Put(ctx context.Context, topic string, doc *schema.Document, cond storage.Cond, match uint64, onConflict func(storage.Result) error) (Written, error) {
	tbody, _, err := s.Topic(ctx, topic)
	if err != nil {
		return Written{}, err
	}
	return s.put(ctx, topic, tbody, doc, cond, match, onConflict, true)
}

// put is Put in a topic whose body is tbody; render: answer the document
// rendered (Written.Body) and cache it, else only drop what the cache held.
func (s *Store) put(ctx context.Context, topic string, tbody []byte, doc *schema.Document, cond storage.Cond, match uint64, onConflict func(storage.Result) error, render bool) (Written, error) {
	schema.ApplyTopicTTL(doc, tbody, time.Now())
	s.cfg.Hooks.Prepare(ctx, doc)
	value, body, err := s.codec.Encode(doc, render)
	if err != nil {
		return Written{}, &apierr.Error{Code: apierr.CodeInternal, Message: "encode context", Err: err}
	}
	id := doc.Metadata.ID
	key := schema.ContextKey(topic, id)
	res, v, err := s.coord.WriteTxn(ctx, schema.Placement(topic, id), schema.BucketContexts, []byte(key), value, cond, match, s.beside([]byte(key), doc))
	withBeside := true
	if err == nil && res.Outcome == storage.Conflict && cond == storage.CondAbsent {
		res, v, err = s.replaceExpired(ctx, topic, id, value, res)
		withBeside = false
	}
	if err != nil {
		return Written{}, err
	}
	if res.Outcome == storage.Conflict {
		if onConflict == nil { // only a condition can fail
			return Written{}, &apierr.Error{Code: apierr.CodeInternal, Message: "an unconditional write conflicted", Err: errors.New(res.Outcome.String())}
		}
		return Written{}, onConflict(res)
	}
	s.afterWrite(ctx, topic, doc, v, withBeside)
	if render {
		s.cache.Put(contextCacheKey(key), v, false, body)
	} else {
		s.cache.Invalidate(contextCacheKey(key), v)
	}
	if res.PrevLive() {
		s.purgeMessages(topic, id, v) // the conversation replaced, if it had records
	}
	return Written{Version: v, Created: !res.PrevLive(), Body: body}, nil
}

// BulkItem is one context of a bulk write and what became of it.
type BulkItem struct {
	Doc     *schema.Document
	Version uint64 // once stored
	Created bool   // no live version was replaced
	Err     error  // why it was not stored
}

// bulkParallel is how many contexts of a bulk write are in flight at once:
// enough to fill the shards' commits, as that many clients would.
const bulkParallel = 64

// PutBulk writes validated documents of an existing topic, each as a PUT
// without a condition does: in its own transaction, so each context lands
// whole (with its words and vector) or not at all. The bulk is not one
// transaction: each item says whether it was stored, and writing the same
// items again is safe. Nothing is rendered: a bulk write answers no bodies.
func (s *Store) PutBulk(ctx context.Context, topic string, items []BulkItem) error {
	tbody, _, err := s.Topic(ctx, topic)
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(bulkParallel)
	for i := range items {
		it := &items[i]
		g.Go(func() error {
			w, err := s.put(ctx, topic, tbody, it.Doc, storage.CondNone, 0, nil, false)
			it.Version, it.Created, it.Err = w.Version, w.Created, err
			return nil
		})
	}
	return g.Wait()
}

// beside is what a context's own transaction writes with it, at its
// version: the record of its words for keyword search (bucket text,
// schema.IndexText; written even when empty, so that no replaced context
// keeps its old words in the shards' index) and the hooks' records (its
// vector, its pending mark). One transaction on every owner means an
// acknowledged write is searchable at once, and that no crash leaves a
// context without its vector.
func (s *Store) beside(key []byte, d *schema.Document) []storage.TxnWrite {
	val := storage.EncodeText(storage.Text{Tags: d.Metadata.Tags, Body: schema.IndexText(d)})
	return append([]storage.TxnWrite{{Bucket: schema.BucketText, Write: storage.Write{Record: storage.Record{Key: key, Value: val}}}},
		s.cfg.Hooks.Beside(key, d)...)
}

// afterWrite runs what follows every write of a context at version v: the
// records beside it (see beside), when its transaction could not carry
// them (withBeside false), and its expiry index entry. The context is
// stored: this finishes even if its client has gone, and never fails the
// write.
func (s *Store) afterWrite(ctx context.Context, topic string, d *schema.Document, v uint64, withBeside bool) {
	ctx = context.WithoutCancel(ctx)
	if !withBeside {
		key := []byte(schema.ContextKey(topic, d.Metadata.ID))
		if err := s.coord.WriteTxnAt(ctx, schema.Placement(topic, d.Metadata.ID), v, s.beside(key, d)); err != nil {
			s.cfg.Log.Warn("words and vector of a context not stored", "topic", topic, "id", d.Metadata.ID, "err", err)
		}
	}
	s.indexExpiry(ctx, topic, d, v)
}

// Delete tombstones a context under cond (CondExists, or CondVersion with
// match). A context that is not there is not_found.
func (s *Store) Delete(ctx context.Context, topic, id string, cond storage.Cond, match uint64) error {
	key := schema.ContextKey(topic, id)
	pk := schema.Placement(topic, id)
	if cond == storage.CondExists {
		// A plain DELETE decides nothing: it needs no primary (see
		// coord's primaryDown), only a Quorum, so it stays available while
		// an owner is down. It is a tombstone written over what a Quorum
		// read found; a write racing it is ordered by version.
		rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, []byte(key))
		if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Tombstone) {
			return notFound(topic, id)
		}
		if err != nil {
			return err
		}
		cond = storage.CondNone
	}
	res, v, err := s.coord.Write(ctx, pk, schema.BucketContexts, []byte(key), true, nil, cond, match)
	if err != nil {
		return err
	}
	if res.Outcome == storage.Conflict {
		if !res.PrevLive() {
			return notFound(topic, id)
		}
		return preconditionFailed(topic, id, cond, match, res)
	}
	s.cache.Put(contextCacheKey(key), v, true, nil)
	s.cfg.Hooks.Deleted(ctx, topic, id, v)
	s.purgeMessages(topic, id, v)
	return nil
}

// PreconditionFailed explains why a conditional write did not apply.
func PreconditionFailed(topic, id string, cond storage.Cond, match uint64, res storage.Result) error {
	return preconditionFailed(topic, id, cond, match, res)
}

// Replace writes doc over the live context version (the embedding retry
// fills in what a write left pending) and reports whether it did: false
// when the context was written meanwhile, which wins.
func (s *Store) Replace(ctx context.Context, topic string, doc *schema.Document, version uint64) (bool, error) {
	value, body, err := s.codec.EncodeRendered(doc)
	if err != nil {
		return false, err
	}
	key := schema.ContextKey(topic, doc.Metadata.ID)
	res, v, err := s.coord.WriteTxn(ctx, schema.Placement(topic, doc.Metadata.ID), schema.BucketContexts, []byte(key), value, storage.CondVersion, version, s.beside([]byte(key), doc))
	if err != nil || res.Outcome == storage.Conflict {
		return false, err
	}
	s.cache.Put(contextCacheKey(key), v, false, body)
	s.afterWrite(ctx, topic, doc, v, true)
	return true, nil
}

// Superseded drops what the hot cache holds of a topic or context record
// older than version: a restore wrote a newer one underneath.
func (s *Store) Superseded(bucket string, key []byte, version uint64) {
	switch bucket {
	case schema.BucketTopics:
		s.cache.Drop(topicCacheKey(string(key)), version)
	case schema.BucketContexts:
		s.cache.Drop(contextCacheKey(string(key)), version)
	}
}
