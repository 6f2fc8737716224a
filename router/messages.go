package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
)

// maxAppendAttempts bounds the optimistic-concurrency loop of an append:
// each attempt reads the context, appends, and writes only if nobody wrote
// in between. Under contention every round lets at least one writer
// through, so this bounds the waiting of a burst of that many appenders.
const maxAppendAttempts = 64

// messagesRequest is the body of POST …/messages.
type messagesRequest struct {
	Messages []schema.Message `json:"messages"`
}

// appendResult is what an append stored.
type appendResult struct {
	version uint64
	doc     *schema.Document
}

// appendMessages appends msgs to the context topic/id, creating it when it
// does not exist, and returns the stored document and its version. With
// match non-zero the context must be at that version (If-Match), else 412.
// mutate, when set, changes the document further in the same write (a chat
// updates the running summary). The write is atomic: concurrent appends
// all land, in some order, and a failed one stores nothing.
func (r *Router) appendMessages(ctx context.Context, topic, id string, msgs []schema.Message, match uint64, mutate func(*schema.Document)) (appendResult, error) {
	pk := schema.Placement(topic, id)
	key := []byte(schema.ContextKey(topic, id))
	for attempt := range maxAppendAttempts {
		if attempt > 0 {
			// Jitter, so appenders that collided do not collide again.
			d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond)))
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return appendResult{}, ctx.Err()
			}
		}
		rec, err := r.coord.Get(ctx, pk, schema.BucketContexts, key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return appendResult{}, err
		}
		now := time.Now().UTC()
		var doc *schema.Document
		cond, want := storage.CondAbsent, uint64(0)
		if err == nil && codec.LiveRecord(rec, now) {
			if match != 0 && rec.Version != match {
				return appendResult{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q is at version %s, not %s", id, etag(rec.Version), etag(match))
			}
			if doc, err = r.codec.DecodeDocument(rec.Value); err != nil {
				return appendResult{}, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
			}
			cond, want = storage.CondVersion, rec.Version
		} else {
			if match != 0 {
				return appendResult{}, apierr.Errorf(apierr.CodeFailedPrecondition, "context %q does not exist in topic %q", id, topic)
			}
			doc = &schema.Document{Metadata: schema.Metadata{ID: id}}
			if ttl := r.topicTTL(ctx, topic); ttl > 0 {
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
		if r.autoEmbedded(doc) {
			doc.Content.Embeddings = nil // the content changed: embed it again
		}
		if err := doc.Normalize(now); err != nil {
			return appendResult{}, err
		}
		r.embedForWrite(ctx, doc)
		value, body, err := r.codec.EncodeRendered(doc)
		if err != nil {
			return appendResult{}, &apierr.Error{Code: apierr.CodeInternal, Message: "encode context", Err: err}
		}
		res, v, err := r.coord.Write(ctx, pk, schema.BucketContexts, key, false, value, cond, want)
		if err != nil {
			return appendResult{}, err
		}
		if res.Outcome == storage.Conflict {
			if match != 0 {
				return appendResult{}, preconditionFailed(topic, id, storage.CondVersion, match, res)
			}
			continue // someone wrote in between: read again
		}
		r.cache.Put(contextCacheKey(string(key)), v, false, body)
		r.afterContextWrite(ctx, topic, doc, v, res.PrevLive())
		return appendResult{version: v, doc: doc}, nil
	}
	return appendResult{}, apierr.Errorf(apierr.CodeUnavailable, "context %q in topic %q: %d concurrent writers kept colliding; retry", id, topic, maxAppendAttempts)
}

// appendMessagesHandler serves POST …/contexts/{id}/messages.
func (r *Router) appendMessagesHandler(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	req, err := withBody(r, c, func(b []byte) (messagesRequest, error) {
		var m messagesRequest
		if err := schema.DecodeJSON(b, &m); err != nil {
			return m, err
		}
		if len(m.Messages) == 0 {
			return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": at least one message is required")
		}
		for i, msg := range m.Messages {
			if !schema.ValidRoles[msg.Role] {
				return m, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages[%d].role\": %q is not one of system, user, assistant, tool", i, schema.Truncate(msg.Role))
			}
		}
		return m, nil
	})
	if err != nil {
		return err
	}
	var match uint64
	if m := c.Request().Header.Get("If-Match"); m != "" {
		v, ok := parseETag(m)
		if !ok {
			return apierr.Errorf(apierr.CodeInvalidArgument, "If-Match %q is not an entity tag of this API", schema.Truncate(m))
		}
		match = v
	}
	if _, _, err := r.readTopic(c, topic); err != nil {
		return err
	}
	res, err := r.appendMessages(c.Request().Context(), topic, id, req.Messages, match, nil)
	if err != nil {
		return err
	}
	c.Response().Header().Set("ETag", etag(res.version))
	return c.JSONBlob(http.StatusOK, fmt.Appendf(nil, `{"messages_count":%d}`, len(res.doc.Content.Messages)))
}

// getMessages serves GET …/contexts/{id}/messages?last=N: the last N
// messages (all without last), oldest first.
func (r *Router) getMessages(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	last := -1
	if s := c.QueryParam("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > schema.MaxMessages {
			return apierr.Errorf(apierr.CodeInvalidArgument, "last %q must be an integer from 0 to %d", schema.Truncate(s), schema.MaxMessages)
		}
		last = n
	}
	doc, v, err := r.readContext(c.Request().Context(), topic, id)
	if err != nil {
		return err
	}
	msgs := doc.Content.Messages
	if last >= 0 && last < len(msgs) {
		msgs = msgs[len(msgs)-last:]
	}
	if msgs == nil {
		msgs = []schema.Message{}
	}
	c.Response().Header().Set("ETag", etag(v))
	return c.JSONBlob(http.StatusOK, schema.MustJSON(map[string]any{"messages": msgs}))
}

// readContext reads and decodes a context from its shard (not the cache:
// callers go on to write it, and need its newest version).
func (r *Router) readContext(ctx context.Context, topic, id string) (*schema.Document, uint64, error) {
	rec, err := r.coord.Get(ctx, schema.Placement(topic, id), schema.BucketContexts, []byte(schema.ContextKey(topic, id)))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !codec.LiveRecord(rec, time.Now())) {
		return nil, 0, apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
	}
	if err != nil {
		return nil, 0, err
	}
	doc, err := r.codec.DecodeDocument(rec.Value)
	if err != nil {
		return nil, 0, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
	}
	return doc, rec.Version, nil
}
