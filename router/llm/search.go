package llm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"golang.org/x/sync/errgroup"
)

const (
	defaultSearchK = 10
	maxSearchK     = 100
	// searchSlack is how many more matches than k each shard is asked
	// for, so results whose context changed since its vector was written
	// (skipped) do not leave the answer short.
	searchSlack = 8
)

// SearchRequest is the body of POST …/search.
type SearchRequest struct {
	Query     string    `json:"query"`
	Embedding []float32 `json:"embedding"`
	K         int       `json:"k"`
	Tags      []string  `json:"tags"`
	Model     string    `json:"model"`
	// Exact asks every shard for the exact scan instead of its index.
	Exact bool `json:"exact"`
	// Scope is what is searched: "contexts" (the default) or "messages"
	// (each message of the topic's conversations, embedded as appended).
	Scope string `json:"scope"`
	// Context narrows a message search to one conversation.
	Context string `json:"context"`
}

// Search scopes.
const (
	ScopeContexts = "contexts"
	ScopeMessages = "messages"
)

// Validate checks a search request as decoded, filling in k.
func (s *SearchRequest) Validate() error {
	switch {
	case s.Query == "" && len(s.Embedding) == 0:
		return apierr.Errorf(apierr.CodeInvalidArgument, "one of \"query\" and \"embedding\" is required")
	case s.Query != "" && len(s.Embedding) > 0:
		return apierr.Errorf(apierr.CodeInvalidArgument, "\"query\" and \"embedding\" exclude each other")
	case len(s.Embedding) > schema.MaxEmbeddings:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"embedding\": %d values, at most %d allowed", len(s.Embedding), schema.MaxEmbeddings)
	case s.K < 0 || s.K > maxSearchK:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"k\": %d is not in 1..%d", s.K, maxSearchK)
	case len(s.Tags) > schema.MaxTags:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"tags\": %d tags, at most %d allowed", len(s.Tags), schema.MaxTags)
	case len(s.Model) > schema.MaxModelLen:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"model\": longer than %d bytes", schema.MaxModelLen)
	case s.Scope != "" && s.Scope != ScopeContexts && s.Scope != ScopeMessages:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"scope\": %q is not one of \"contexts\", \"messages\"", schema.Truncate(s.Scope))
	case s.Context != "" && s.Scope != ScopeMessages:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"context\": narrows a search of scope \"messages\" only")
	}
	if s.Context != "" {
		if err := schema.CheckID(s.Context); err != nil {
			return err
		}
	}
	for i, t := range s.Tags {
		if t == "" || len(t) > schema.MaxTagLen {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"tags[%d]\": a tag has 1 to %d bytes", i, schema.MaxTagLen)
		}
	}
	if s.K == 0 {
		s.K = defaultSearchK
	}
	return nil
}

// appendResults reads the contexts of matches, best first, and renders up
// to k of them; a match whose context changed or vanished since its vector
// was written is skipped. It returns how many it rendered.
func (l *Service) appendResults(ctx context.Context, out *[]byte, topic string, matches []storage.Match, k int, withContent bool) (int, error) {
	recs := make([]storage.Record, len(matches))
	g, gctx := errgroup.WithContext(ctx)
	for i, m := range matches {
		g.Go(func() error {
			_, id, _ := schema.SplitContextKey(m.Key)
			rec, err := l.coord.Get(gctx, schema.Placement(topic, id), schema.BucketContexts, m.Key)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			recs[i] = rec
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	n := 0
	now := time.Now()
	for i, m := range matches {
		rec := recs[i]
		if n == k {
			break
		}
		if rec.Version != m.Version || rec.Tombstone || rec.Value == nil || codec.StoredExpired(rec.Value, now) {
			if rec.Version != m.Version {
				l.purgeStaleVector(topic, m.Key, m.Version)
			}
			continue
		}
		doc, err := l.codec.AppendDocumentJSON(nil, rec.Value, withContent)
		if err != nil || !bytes.HasSuffix(doc, []byte("}")) {
			return 0, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q cannot be decoded", schema.Truncate(string(m.Key))), Err: err}
		}
		if n > 0 {
			*out = append(*out, ',')
		}
		*out = append(*out, doc[:len(doc)-1]...)
		*out = append(*out, `,"score":`...)
		*out = strconv.AppendFloat(*out, m.Score, 'g', 8, 64)
		*out = append(*out, '}')
		n++
	}
	return n, nil
}

// purgeStaleVector removes, in the background, a vector older than its
// context (the context was replaced or deleted). Purge removes only that
// version or older, so a newer vector being written meanwhile is kept.
func (l *Service) purgeStaleVector(topic string, key []byte, version uint64) {
	_, id, _ := schema.SplitContextKey(key)
	t := l.topo()
	owners := t.Owners(schema.Placement(topic, id)).Union
	key = bytes.Clone(key)
	l.spawn(func(ctx context.Context) {
		for _, n := range owners {
			pctx, cancel := l.coord.ShardCtx(ctx)
			_, err := n.Shard.Purge(pctx, schema.BucketVectors, []storage.Record{{Key: key, Version: version}})
			cancel()
			if err != nil {
				l.log.Debug("stale vector not purged", "shard", n.Name, "err", err)
			}
		}
	})
}

// Search answers POST /api/v1/topics/{t}/search: the rendered
// {"results":[…]}, the k contexts whose vectors are most similar (cosine)
// to the query's, best first.
//
// Only vectors of one model are compared: the request's "model", else for
// a "query" the router's embedding model. An "embedding" without "model"
// is compared with vectors stored without a model name (a client's own).
// Vectors of that model but another dimension are never compared; if they
// are all there is, the answer is 400 saying so.
func (l *Service) Search(ctx context.Context, topic string, req SearchRequest, withContent bool) ([]byte, error) {
	start := time.Now()
	defer func() { l.m.SearchDuration.Observe(time.Since(start).Seconds()) }()
	if _, _, err := l.docs.Topic(ctx, topic); err != nil {
		return nil, err
	}
	query, model := req.Embedding, req.Model
	if req.Query != "" {
		if model == "" {
			model = l.cfg.EmbedModel
		}
		if model == "" {
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "field \"model\": no embedding model is configured on this router, so a \"query\" must name one")
		}
		if err := l.Need(); err != nil {
			return nil, err
		}
		ectx, cancel := context.WithTimeout(ctx, l.cfg.EmbedTimeout)
		vecs, err := l.embed(ectx, "embed_query", model, []string{req.Query})
		cancel()
		if err != nil {
			return nil, l.Error("embed the query with "+model, err)
		}
		query = vecs[0]
	}
	if req.Scope == ScopeMessages {
		return l.searchMessages(ctx, topic, req.Context, query, model, req)
	}
	q := storage.TopKQuery{Prefix: []byte(topic + schema.KeySep), Query: query, K: req.K + searchSlack, Model: model, Tags: req.Tags, Exact: req.Exact}
	found, err := l.coord.TopK(ctx, q)
	if err != nil {
		return nil, err
	}
	matches, otherDim := found.Matches, found.OtherDim
	out := append(make([]byte, 0, 256*req.K+32), `{"results":[`...)
	n, err := l.appendResults(ctx, &out, topic, matches, req.K, withContent)
	if err != nil {
		return nil, err
	}
	if n == 0 && otherDim > 0 {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "the query has %d dimensions but the %d contexts embedded by model %q in topic %q have another: vectors of different dimensions are never compared", len(query), otherDim, model, topic)
	}
	// "exact" says whether every shard answered from its index (false) or
	// one scanned (its index was not ready, the filter was too selective,
	// the request asked, or the vectors are sealed and the router ranked).
	out = append(out, `],"exact":`...)
	out = strconv.AppendBool(out, found.Exact)
	out = append(out, '}')
	return out, nil
}
