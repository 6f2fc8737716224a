package docstore

import (
	"bytes"
	"context"
	"slices"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// ListTopics renders one page of topics whose names start with prefix,
// after the name after (""), as {"topics":[…],"next_cursor":"…"}. keep,
// when set, filters the topics (a key's topic patterns) while the page is
// merged, so pages stay full and cursors stay right.
func (s *Store) ListTopics(ctx context.Context, prefix, after string, limit int, keep func(storage.Record) bool) ([]byte, error) {
	q := coord.PageQuery{Bucket: schema.BucketTopics, Prefix: []byte(prefix), Limit: limit, Keep: keep}
	if after != "" {
		q.After = []byte(after)
	}
	recs, next, err := s.coord.Page(ctx, q)
	if err != nil {
		return nil, err
	}
	out := append(make([]byte, 0, 64*len(recs)+64), `{"topics":[`...)
	for i, rec := range recs {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, rec.Value...)
	}
	return appendNextCursor(out, next, nil), nil
}

// ContextFilter selects the contexts of a list: each of Tags, and Model
// when set.
type ContextFilter struct {
	Tags  []string
	Model string
}

// ListContexts renders one page of a topic's live contexts after the id
// after (""), as {"contexts":[…],"next_cursor":"…"}: their metadata, and
// their content too with withContent. A missing topic is not_found.
func (s *Store) ListContexts(ctx context.Context, topic, after string, limit int, withContent bool, f ContextFilter) ([]byte, error) {
	prefix := []byte(topic + schema.KeySep)
	q := coord.PageQuery{Bucket: schema.BucketContexts, Prefix: prefix, Limit: limit, MetaOnly: !withContent}
	if after != "" {
		q.After = append(bytes.Clone(prefix), after...)
	}
	if len(f.Tags) > 0 || f.Model != "" {
		q.Keep = func(rec storage.Record) bool {
			m, _, err := codec.DecodeMetadata(rec.Value)
			if err != nil {
				return false
			}
			if f.Model != "" && m.Model != f.Model {
				return false
			}
			for _, t := range f.Tags {
				if !slices.Contains(m.Tags, t) {
					return false
				}
			}
			return true
		}
	}
	q.Keep = codec.KeepUnexpired(q.Keep)
	if _, _, err := s.Topic(ctx, topic); err != nil {
		return nil, err
	}
	recs, next, err := s.coord.Page(ctx, q)
	if err != nil {
		return nil, err
	}
	out := append(make([]byte, 0, 256*len(recs)+64), `{"contexts":[`...)
	for i, rec := range recs {
		if i > 0 {
			out = append(out, ',')
		}
		if out, err = s.codec.AppendDocumentJSON(out, rec.Value, withContent); err != nil {
			return nil, &apierr.Error{Code: apierr.CodeInternal, Message: "a stored context cannot be decoded", Err: err}
		}
	}
	return appendNextCursor(out, next, prefix), nil
}

func appendNextCursor(dst []byte, next, prefix []byte) []byte {
	dst = append(dst, `],"next_cursor":"`...)
	if next != nil {
		dst = append(dst, schema.EncodeCursor(string(bytes.TrimPrefix(next, prefix)))...)
	}
	return append(dst, `"}`...)
}
