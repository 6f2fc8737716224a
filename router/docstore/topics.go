package docstore

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// Cache keys: one letter for the kind, then the storage key.
func topicCacheKey(topic string) string { return "t" + topic }

func contextCacheKey(storageKey string) string { return "c" + storageKey }

// CreateTopic stores a new topic and returns its JSON; a topic of that
// name is already_exists.
func (s *Store) CreateTopic(ctx context.Context, t schema.Topic) ([]byte, error) {
	body, created, err := s.createTopic(ctx, t)
	if err != nil {
		return nil, err
	}
	if !created {
		return nil, apierr.Errorf(apierr.CodeAlreadyExists, "topic %q already exists", t.Name)
	}
	return body, nil
}

// EnsureTopic creates the topic name on first use (the drop-in endpoints
// do), with description; a topic that exists is left as it is.
func (s *Store) EnsureTopic(ctx context.Context, name, description string) error {
	_, _, err := s.Topic(ctx, name)
	var apiErr *apierr.Error
	if !errors.As(err, &apiErr) || apiErr.Code != apierr.CodeNotFound {
		return err
	}
	_, _, err = s.createTopic(ctx, schema.Topic{Name: name, Description: description})
	return err
}

// createTopic writes t create-only, stamped with its creation time, and
// reports whether it was created (false: the name was taken).
func (s *Store) createTopic(ctx context.Context, t schema.Topic) (body []byte, created bool, err error) {
	t.CreatedAt = time.Now().UTC().Format(time.RFC3339Nano)
	body = schema.TopicJSON(&t)
	res, v, err := s.coord.Write(ctx, t.Name, schema.BucketTopics, []byte(t.Name), false, body, storage.CondAbsent, 0)
	if err != nil {
		return nil, false, err
	}
	if res.Outcome == storage.Conflict {
		return nil, false, nil
	}
	s.cache.Put(topicCacheKey(t.Name), v, false, body)
	return body, true, nil
}

// Topic returns a topic's stored JSON and version, from the cache when it
// holds it. A missing or deleted topic is a not_found error.
func (s *Store) Topic(ctx context.Context, name string) ([]byte, uint64, error) {
	ck := topicCacheKey(name)
	cached := s.useCache(ctx, name) // before the read: see Context
	if v, tomb, body, ok := s.cache.Get(ck); cached && ok {
		if tomb {
			return nil, v, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
		}
		return body, v, nil
	}
	rec, err := s.coord.Get(ctx, name, schema.BucketTopics, []byte(name))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	if err != nil {
		return nil, 0, err
	}
	if cached {
		s.cache.Put(ck, rec.Version, rec.Tombstone, rec.Value)
	}
	if rec.Tombstone {
		return nil, rec.Version, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	return rec.Value, rec.Version, nil
}

// TopicMaxTokens is a topic's max_tokens, 0 when it has none or cannot be
// read.
func (s *Store) TopicMaxTokens(ctx context.Context, topic string) int {
	body, _, err := s.Topic(ctx, topic)
	var t schema.Topic
	if err != nil || json.Unmarshal(body, &t) != nil {
		return 0
	}
	return t.MaxTokens
}

// DeleteTopic tombstones the topic's contexts on every shard, then the
// topic. If a shard is down nothing is reported as done: the client gets
// 503 and may retry, which finishes the job (every step is idempotent).
func (s *Store) DeleteTopic(ctx context.Context, name string) error {
	rec, err := s.coord.Get(ctx, name, schema.BucketTopics, []byte(name))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Tombstone) {
		return apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	if err != nil {
		return err
	}
	v := s.cfg.Clock.Next()
	prefix := []byte(name + schema.KeySep)
	if err := s.coord.FanOutAll(ctx, 10*s.cfg.ShardTimeout, func(ctx context.Context, n *placement.Node) error {
		// A topic's contexts, their messages, vectors, words and pending embeddings.
		for _, bucket := range []string{schema.BucketContexts, schema.BucketMessages, schema.BucketMessageVectors, schema.BucketVectors, schema.BucketText, schema.BucketMessageText, schema.BucketEmbedPending} {
			if _, err := n.Shard.DeletePrefix(ctx, bucket, prefix, v); err != nil {
				return apierr.FromStorage("delete "+bucket+" on shard "+n.Name, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	s.deletedTopics.Store(name, v)
	res, tv, err := s.coord.Write(ctx, name, schema.BucketTopics, []byte(name), true, nil, storage.CondExists, 0)
	if err != nil {
		return err
	}
	s.cache.Put(topicCacheKey(name), tv, true, nil)
	s.pruneDeletedTopics()
	if res.Outcome == storage.Conflict {
		return apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	return nil
}

// pruneDeletedTopics forgets deletions the cache can no longer hold entries
// from.
func (s *Store) pruneDeletedTopics() {
	horizon := time.Now().Add(-2 * s.cfg.CacheTTL)
	s.deletedTopics.Range(func(k, v any) bool {
		if hlc.Time(v.(uint64)).Before(horizon) {
			s.deletedTopics.Delete(k)
		}
		return true
	})
}

// maskedByTopicDelete reports whether a cached context of topic at version
// predates the topic's deletion.
func (s *Store) maskedByTopicDelete(topic string, version uint64) bool {
	v, ok := s.deletedTopics.Load(topic)
	return ok && version < v.(uint64)
}
