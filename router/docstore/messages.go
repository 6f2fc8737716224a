package docstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// maxAppendAttempts bounds the optimistic-concurrency loop of an append:
// each attempt reads the context, appends, and writes only if nobody wrote
// in between. Under contention every round lets at least one writer
// through, so this bounds the waiting of a burst of that many appenders.
const maxAppendAttempts = 64

// Appended is what an append stored.
type Appended struct {
	Version uint64
	Doc     *schema.Document
}

// Append appends msgs to the context topic/id, creating it when it
// does not exist, and returns the stored document and its version. With
// match non-zero the context must be at that version (If-Match), else 412.
// mutate, when set, changes the document further in the same write (a chat
// updates the running summary). The write is atomic: concurrent appends
// all land, in some order, and a failed one stores nothing.
func (s *Store) Append(ctx context.Context, topic, id string, msgs []schema.Message, match uint64, mutate func(*schema.Document)) (Appended, error) {
	pk := schema.Placement(topic, id)
	key := []byte(schema.ContextKey(topic, id))
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
		rec, err := s.coord.Get(ctx, pk, schema.BucketContexts, key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return Appended{}, err
		}
		now := time.Now().UTC()
		var doc *schema.Document
		cond, want := storage.CondAbsent, uint64(0)
		if err == nil && codec.LiveRecord(rec, now) {
			if match != 0 && rec.Version != match {
				return Appended{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q is at version %s, not %s", id, schema.ETag(rec.Version), schema.ETag(match))
			}
			if doc, err = s.codec.DecodeDocument(rec.Value); err != nil {
				return Appended{}, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
			}
			cond, want = storage.CondVersion, rec.Version
		} else {
			if match != 0 {
				return Appended{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q does not exist in topic %q", id, topic)
			}
			doc = &schema.Document{Metadata: schema.Metadata{ID: id}}
			if ttl := s.topicTTL(ctx, topic); ttl > 0 {
				doc.Metadata.ExpiresAt = now.Add(time.Duration(ttl) * time.Second).Format(time.RFC3339Nano)
			}
			if err == nil && !rec.Tombstone {
				cond, want = storage.CondVersion, rec.Version // an expired context is replaced
			}
		}
		doc.Content.Messages = append(doc.Content.Messages, msgs...)
		if mutate != nil {
			mutate(doc)
		}
		if s.cfg.Hooks.Derived(doc) {
			doc.Content.Embeddings = nil // the content changed: embed it again
		}
		if err := doc.Normalize(now); err != nil {
			return Appended{}, err
		}
		s.cfg.Hooks.Prepare(ctx, doc)
		value, body, err := s.codec.EncodeRendered(doc)
		if err != nil {
			return Appended{}, &apierr.Error{Code: apierr.CodeInternal, Message: "encode context", Err: err}
		}
		res, v, err := s.coord.Write(ctx, pk, schema.BucketContexts, key, false, value, cond, want)
		if err != nil {
			return Appended{}, err
		}
		if res.Outcome == storage.Conflict {
			if match != 0 {
				return Appended{}, preconditionFailed(topic, id, storage.CondVersion, match, res)
			}
			continue // someone wrote in between: read again
		}
		s.cache.Put(contextCacheKey(string(key)), v, false, body)
		s.AfterWrite(ctx, topic, doc, v, res.PrevLive())
		return Appended{Version: v, Doc: doc}, nil
	}
	return Appended{}, apierr.Errorf(apierr.CodeUnavailable, "context %q in topic %q: %d concurrent writers kept colliding; retry", id, topic, maxAppendAttempts)
}

// ReadContext reads and decodes a context from its shard (not the cache:
// callers go on to write it, and need its newest version).
func (s *Store) ReadContext(ctx context.Context, topic, id string) (*schema.Document, uint64, error) {
	rec, err := s.coord.Get(ctx, schema.Placement(topic, id), schema.BucketContexts, []byte(schema.ContextKey(topic, id)))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !codec.LiveRecord(rec, time.Now())) {
		return nil, 0, apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
	}
	if err != nil {
		return nil, 0, err
	}
	doc, err := s.codec.DecodeDocument(rec.Value)
	if err != nil {
		return nil, 0, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
	}
	return doc, rec.Version, nil
}
