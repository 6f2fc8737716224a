package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
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

// searchRequest is the body of POST …/search.
type searchRequest struct {
	Query     string    `json:"query"`
	Embedding []float32 `json:"embedding"`
	K         int       `json:"k"`
	Tags      []string  `json:"tags"`
	Model     string    `json:"model"`
}

func (s *searchRequest) validate() error {
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

// search serves POST /api/v1/topics/{t}/search: the k contexts whose
// vectors are most similar (cosine) to the query's, best first.
//
// Only vectors of one model are compared: the request's "model", else for
// a "query" the router's embedding model. An "embedding" without "model"
// is compared with vectors stored without a model name (a client's own).
// Vectors of that model but another dimension are never compared; if they
// are all there is, the answer is 400 saying so.
func (r *Router) search(c echo.Context) error {
	start := time.Now()
	defer func() { r.llm.m.SearchDuration.Observe(time.Since(start).Seconds()) }()
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	withContent, err := includeContent(c)
	if err != nil {
		return err
	}
	req, err := withBody(r, c, func(b []byte) (searchRequest, error) {
		var s searchRequest
		if err := schema.DecodeJSON(b, &s); err != nil {
			return s, err
		}
		return s, s.validate()
	})
	if err != nil {
		return err
	}
	if _, _, err := r.docs.Topic(c.Request().Context(), topic); err != nil {
		return err
	}
	ctx := c.Request().Context()
	query, model := req.Embedding, req.Model
	if req.Query != "" {
		if model == "" {
			model = r.llm.cfg.EmbedModel
		}
		if model == "" {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"model\": no embedding model is configured on this router, so a \"query\" must name one")
		}
		if err := r.needLLM(); err != nil {
			return err
		}
		ectx, cancel := context.WithTimeout(ctx, r.llm.cfg.EmbedTimeout)
		vecs, err := r.embed(ectx, "embed_query", model, []string{req.Query})
		cancel()
		if err != nil {
			return r.llmError("embed the query with "+model, err)
		}
		query = vecs[0]
	}
	q := storage.TopKQuery{Prefix: []byte(topic + schema.KeySep), Query: query, K: req.K + searchSlack, Model: model, Tags: req.Tags}
	matches, otherDim, err := r.coord.TopK(ctx, q)
	if err != nil {
		return err
	}
	out := append(make([]byte, 0, 256*req.K+32), `{"results":[`...)
	n, err := r.appendResults(ctx, &out, topic, matches, req.K, withContent)
	if err != nil {
		return err
	}
	if n == 0 && otherDim > 0 {
		return apierr.Errorf(apierr.CodeInvalidArgument, "the query has %d dimensions but the %d contexts embedded by model %q in topic %q have another: vectors of different dimensions are never compared", len(query), otherDim, model, topic)
	}
	out = append(out, "]}"...)
	return c.JSONBlob(http.StatusOK, out)
}

// appendResults reads the contexts of matches, best first, and renders up
// to k of them; a match whose context changed or vanished since its vector
// was written is skipped. It returns how many it rendered.
func (r *Router) appendResults(ctx context.Context, out *[]byte, topic string, matches []storage.Match, k int, withContent bool) (int, error) {
	recs := make([]storage.Record, len(matches))
	g, gctx := errgroup.WithContext(ctx)
	for i, m := range matches {
		g.Go(func() error {
			_, id, _ := schema.SplitContextKey(m.Key)
			rec, err := r.coord.Get(gctx, schema.Placement(topic, id), schema.BucketContexts, m.Key)
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
				r.purgeStaleVector(topic, m.Key, m.Version)
			}
			continue
		}
		doc, err := r.codec.AppendDocumentJSON(nil, rec.Value, withContent)
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
func (r *Router) purgeStaleVector(topic string, key []byte, version uint64) {
	_, id, _ := schema.SplitContextKey(key)
	t := r.topo.Load()
	owners := t.Owners(schema.Placement(topic, id)).Union
	key = bytes.Clone(key)
	r.background(func(ctx context.Context) {
		for _, n := range owners {
			pctx, cancel := r.coord.ShardCtx(ctx)
			_, err := n.Shard.Purge(pctx, schema.BucketVectors, []storage.Record{{Key: key, Version: version}})
			cancel()
			if err != nil {
				r.log.Debug("stale vector not purged", "shard", n.Name, "err", err)
			}
		}
	})
}
