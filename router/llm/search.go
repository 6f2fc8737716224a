package llm

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/go-kvdb/go-kvdb/storage/kwindex"
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

// Search modes (SearchRequest.Mode).
const (
	ModeVector  = "vector"  // cosine similarity of embeddings
	ModeKeyword = "keyword" // BM25 over the contexts' words
	ModeHybrid  = "hybrid"  // both, fused by reciprocal rank
)

// rrfK is the constant of reciprocal rank fusion: a result's fused score
// is the sum over the legs that found it of 1 / (rrfK + rank). 60 is the
// value of Cormack et al. (2009), which most hybrid search uses.
const rrfK = 60

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
	// Mode is vector, keyword or hybrid; empty chooses (see Search).
	Mode string `json:"mode"`
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
	case s.Query != "" && len(s.Embedding) > 0 && s.Mode != ModeHybrid:
		// Only a hybrid search uses both: the words for its keyword leg,
		// the client's embedding of them for its vector leg.
		return apierr.Errorf(apierr.CodeInvalidArgument, "\"query\" and \"embedding\" exclude each other, but in \"mode\":\"hybrid\"")
	case len(s.Embedding) > schema.MaxEmbeddings:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"embedding\": %d values, at most %d allowed", len(s.Embedding), schema.MaxEmbeddings)
	case s.K < 0 || s.K > maxSearchK:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"k\": %d is not in 1..%d", s.K, maxSearchK)
	case len(s.Tags) > schema.MaxTags:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"tags\": %d tags, at most %d allowed", len(s.Tags), schema.MaxTags)
	case len(s.Model) > schema.MaxModelLen:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"model\": longer than %d bytes", schema.MaxModelLen)
	case s.Mode != "" && s.Mode != ModeVector && s.Mode != ModeKeyword && s.Mode != ModeHybrid:
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"mode\": %q is not one of vector, keyword, hybrid", schema.Truncate(s.Mode))
	case (s.Mode == ModeKeyword || s.Mode == ModeHybrid) && s.Query == "":
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"mode\": %s search needs a \"query\" in words, not an \"embedding\"", s.Mode)
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

// mode is the request's mode, or the default: vector for an embedding,
// hybrid for words when an embedding model is at hand (the router's, or
// the request's "model"), keyword when none is.
func (l *Service) mode(req *SearchRequest) string {
	switch {
	case req.Mode != "":
		return req.Mode
	case len(req.Embedding) > 0:
		return ModeVector
	case req.Model != "" || l.cfg.EmbedModel != "":
		return ModeHybrid
	}
	return ModeKeyword
}

// legHit is one leg's view of a result: its rank there (1 for the best)
// and its score (cosine, or BM25); rank 0 means the leg did not find it.
type legHit struct {
	rank    int
	score   float64
	version uint64
}

// hit is a result of a search: its key, its fused score and each leg's
// view, by leg (0 vector, 1 keyword).
type hit struct {
	key   []byte
	score float64
	legs  [2]legHit
}

var legNames = [2]string{ModeVector, ModeKeyword}

// fuse reads the contexts of the legs' matches (best first in each) and
// returns the live ones, ranked within each leg among the live: a match
// whose context changed or vanished since its vector or words were
// written is dropped (and its stale record purged). With one leg the
// result's score is the leg's; with two, the sum of 1 / (rrfK + rank)
// over the legs that found it.
func (l *Service) fuse(ctx context.Context, topic string, legs [2][]storage.Match) ([]hit, map[string]storage.Record, error) {
	var keys [][]byte
	seen := map[string]bool{}
	for _, ms := range legs {
		for _, m := range ms {
			if !seen[string(m.Key)] {
				seen[string(m.Key)] = true
				keys = append(keys, m.Key)
			}
		}
	}
	pks := make([]string, len(keys))
	for i, key := range keys {
		_, id, _ := schema.SplitContextKey(key)
		pks[i] = schema.Placement(topic, id)
	}
	var recs []storage.Record
	if len(keys) > 0 {
		var err error
		if recs, err = l.coord.GetMany(ctx, schema.BucketContexts, keys, pks); err != nil {
			return nil, nil, err
		}
	}
	byKey := make(map[string]storage.Record, len(keys))
	for i, key := range keys {
		byKey[string(key)] = recs[i]
	}
	now := time.Now()
	hits := fuseHits(legs, func(leg int, m storage.Match) bool {
		rec := byKey[string(m.Key)]
		if rec.Version != m.Version || rec.Tombstone || rec.Value == nil || codec.StoredExpired(rec.Value, now) {
			if rec.Version != m.Version {
				l.purgeStale(topic, []string{schema.BucketVectors, schema.BucketText}[leg], m.Key, m.Version)
			}
			return false
		}
		return true
	})
	return hits, byKey, nil
}

// fuseHits ranks the matches of the legs (0 vector, 1 keyword) that valid
// keeps: by the one leg's score when only one found anything, else by
// reciprocal rank fusion. Ties go by key.
func fuseHits(legs [2][]storage.Match, valid func(leg int, m storage.Match) bool) []hit {
	both := len(legs[0]) > 0 && len(legs[1]) > 0
	var hits []hit
	at := map[string]int{}
	for leg, ms := range legs {
		rank := 0
		for _, m := range ms {
			if !valid(leg, m) {
				continue
			}
			rank++
			i, ok := at[string(m.Key)]
			if !ok {
				i = len(hits)
				at[string(m.Key)] = i
				hits = append(hits, hit{key: m.Key})
			}
			h := &hits[i]
			h.legs[leg] = legHit{rank: rank, score: m.Score, version: m.Version}
			if both {
				h.score += 1 / float64(rrfK+rank)
			} else {
				h.score = m.Score
			}
		}
	}
	slices.SortStableFunc(hits, func(a, b hit) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return bytes.Compare(a.key, b.key)
	})
	return hits
}

// appendResults renders up to k hits, best first, and returns how many it
// rendered: each context, its score and what each leg said of it.
func (l *Service) appendResults(out *[]byte, hits []hit, recs map[string]storage.Record, k int, withContent bool) (int, error) {
	n := 0
	for _, h := range hits {
		if n == k {
			break
		}
		doc, err := l.codec.AppendDocumentJSON(nil, recs[string(h.key)].Value, withContent)
		if err != nil || !bytes.HasSuffix(doc, []byte("}")) {
			return 0, &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q cannot be decoded", schema.Truncate(string(h.key))), Err: err}
		}
		if n > 0 {
			*out = append(*out, ',')
		}
		*out = append(*out, doc[:len(doc)-1]...)
		*out = appendScoreAndLegs(*out, h)
		*out = append(*out, '}')
		n++
	}
	return n, nil
}

// appendScoreAndLegs renders a hit's fused score and what each leg said
// of it: ,"score":…,"legs":{…}.
func appendScoreAndLegs(out []byte, h hit) []byte {
	out = append(out, `,"score":`...)
	out = strconv.AppendFloat(out, h.score, 'g', 8, 64)
	out = append(out, `,"legs":{`...)
	first := true
	for leg, lh := range h.legs {
		if lh.rank == 0 {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, `"`+legNames[leg]+`":{"rank":`...)
		out = strconv.AppendInt(out, int64(lh.rank), 10)
		out = append(out, `,"score":`...)
		out = strconv.AppendFloat(out, lh.score, 'g', 8, 64)
		out = append(out, '}')
	}
	return append(out, '}')
}

// purgeStale removes, in the background, a vector or words (bucket)
// older than their context (the context was replaced or deleted). Purge
// removes only that version or older, so a newer record being written
// meanwhile is kept.
func (l *Service) purgeStale(topic, bucket string, key []byte, version uint64) {
	_, id, _ := schema.SplitContextKey(key)
	t := l.topo()
	owners := t.Owners(schema.Placement(topic, id)).Union
	key = bytes.Clone(key)
	l.spawn(func(ctx context.Context) {
		for _, n := range owners {
			pctx, cancel := l.coord.ShardCtx(ctx)
			_, err := n.Shard.Purge(pctx, bucket, []storage.Record{{Key: key, Version: version}})
			cancel()
			if err != nil {
				l.log.Debug("stale record not purged", "bucket", bucket, "shard", n.Name, "err", err)
			}
		}
	})
}

// Search answers POST /api/v1/topics/{t}/search: the rendered
// {"results":[…],"exact":…,"mode":…}, the k best contexts, best first.
//
// Mode vector ranks by the cosine similarity of vectors. Only vectors of
// one model are compared: the request's "model", else for a "query" the
// router's embedding model. An "embedding" without "model" is compared
// with vectors stored without a model name (a client's own). Vectors of
// that model but another dimension are never compared; if they are all
// there is, the answer is 400 saying so.
//
// Mode keyword ranks the query's words by BM25 over the contexts' words
// (coord.Keyword). Mode hybrid runs both at once and fuses them by
// reciprocal rank. Each result names the legs that found it, with its
// rank and score in each ("legs").
func (l *Service) Search(ctx context.Context, topic string, req SearchRequest, withContent bool) ([]byte, error) {
	start := time.Now()
	mode := l.mode(&req)
	defer func() { l.m.SearchDuration.WithLabelValues(mode).Observe(time.Since(start).Seconds()) }()
	if _, _, err := l.docs.Topic(ctx, topic); err != nil {
		return nil, err
	}
	if req.Scope == ScopeMessages {
		return l.searchMessages(ctx, topic, req, mode)
	}
	var legs [2][]storage.Match
	var found storage.TopKResult
	var dim int
	g, gctx := errgroup.WithContext(ctx)
	if mode != ModeKeyword {
		g.Go(func() error {
			var err error
			found, dim, err = l.vectorLeg(gctx, topic, &req)
			legs[0] = found.Matches
			return err
		})
	}
	if mode != ModeVector {
		g.Go(func() error {
			terms := kwindex.QueryTerms(req.Query)
			if len(terms) == 0 {
				return nil // only stop words: nothing to find
			}
			terms = terms[:min(len(terms), storage.MaxQueryTerms)]
			res, err := l.coord.Keyword(gctx, coord.KeywordQuery{Prefix: []byte(topic + schema.KeySep), Terms: terms, K: req.K + searchSlack, Tags: req.Tags})
			legs[1] = res.Matches
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	hits, recs, err := l.fuse(ctx, topic, legs)
	if err != nil {
		return nil, err
	}
	out := append(make([]byte, 0, 256*req.K+48), `{"results":[`...)
	n, err := l.appendResults(&out, hits, recs, req.K, withContent)
	if err != nil {
		return nil, err
	}
	if n == 0 && found.OtherDim > 0 {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "the query has %d dimensions but the %d contexts embedded by model %q in topic %q have another: vectors of different dimensions are never compared", dim, found.OtherDim, l.vectorModel(&req), topic)
	}
	// "exact" says whether the vector leg came from every shard's index
	// (false) or one scanned (its index was not ready, the filter was too
	// selective, the request asked, or the vectors are sealed and the
	// router ranked); a keyword search is always exact.
	out = append(out, `],"exact":`...)
	out = strconv.AppendBool(out, mode == ModeKeyword || found.Exact)
	out = append(out, `,"mode":"`+mode+`"}`...)
	return out, nil
}

// vectorModel is the model whose vectors a search compares: the
// request's, else for words the router's embedding model.
func (l *Service) vectorModel(req *SearchRequest) string {
	if req.Model == "" && len(req.Embedding) == 0 {
		return l.cfg.EmbedModel
	}
	return req.Model
}

// vectorLeg embeds the query if it is words and asks the shards for the
// closest vectors; dim is the query's dimension.
func (l *Service) vectorLeg(ctx context.Context, topic string, req *SearchRequest) (storage.TopKResult, int, error) {
	return l.vectorLegIn(ctx, schema.BucketVectors, []byte(topic+schema.KeySep), req)
}

// vectorLegIn is vectorLeg over the vectors of bucket under prefix.
func (l *Service) vectorLegIn(ctx context.Context, bucket string, prefix []byte, req *SearchRequest) (storage.TopKResult, int, error) {
	query, model := req.Embedding, l.vectorModel(req)
	if len(query) == 0 {
		if model == "" {
			return storage.TopKResult{}, 0, apierr.Errorf(apierr.CodeInvalidArgument, "field \"model\": no embedding model is configured on this router, so a vector or hybrid search of a \"query\" must name one (or use \"mode\":\"keyword\")")
		}
		if err := l.Need(); err != nil {
			return storage.TopKResult{}, 0, err
		}
		ectx, cancel := context.WithTimeout(ctx, l.cfg.EmbedTimeout)
		vecs, err := l.embed(ectx, "embed_query", model, []string{req.Query})
		cancel()
		if err != nil {
			return storage.TopKResult{}, 0, l.Error("embed the query with "+model, err)
		}
		query = vecs[0]
	}
	q := storage.TopKQuery{Prefix: prefix, Query: query, K: req.K + searchSlack, Model: model, Tags: req.Tags, Exact: req.Exact}
	found, err := l.coord.TopKIn(ctx, bucket, q)
	return found, len(query), err
}
