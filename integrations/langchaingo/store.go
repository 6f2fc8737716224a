package langchaingo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/tmc/langchaingo/embeddings"
	"github.com/tmc/langchaingo/schema"
	"github.com/tmc/langchaingo/vectorstores"
	"golang.org/x/sync/errgroup"
)

const (
	// maxK is the router's largest k of a search.
	maxK = 100
	// addParallelism is how many documents AddDocuments writes at once:
	// the API writes one context a request, and a few requests in flight
	// hide the round trips without crowding the router.
	addParallelism = 8
)

// Store is a langchaingo vectorstores.VectorStore on a Go-KVDB topic: a
// document is a context whose text is the page content and whose tags hold
// the metadata. It is safe for concurrent use.
type Store struct {
	c        *client.Client
	topic    string
	embedder embeddings.Embedder // nil: the router embeds
	model    string              // the name of embedder's vectors
}

var _ vectorstores.VectorStore = (*Store)(nil)

// StoreOption configures NewStore.
type StoreOption func(*Store)

// WithEmbedder embeds documents and queries with e instead of letting the
// router embed them with its -embed-model. vectorstores.WithEmbedder
// overrides it for one call.
func WithEmbedder(e embeddings.Embedder) StoreOption { return func(s *Store) { s.embedder = e } }

// WithEmbeddingModel names the model of the embedder's vectors: stored as
// the contexts' metadata.embedding_model and sent with every search, so
// the router compares them only with vectors of that model. Without it
// they are stored unnamed, and compared with other unnamed vectors. The
// name applies to an embedder given for one call (vectorstores.WithEmbedder)
// too; it has no effect on documents the router embeds.
func WithEmbeddingModel(name string) StoreOption { return func(s *Store) { s.model = name } }

// NewStore returns a store on topic, which is created by the first
// AddDocuments if it does not exist.
func NewStore(c *client.Client, topic string, opts ...StoreOption) (*Store, error) {
	if c == nil {
		return nil, fmt.Errorf("new store: %w: nil client", ErrInvalidArgument)
	}
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("new store: %w", err)
	}
	s := &Store{c: c, topic: topic}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Topic is the store's topic.
func (s *Store) Topic() string { return s.topic }

// options applies a call's options; vectorstores.WithNameSpace names
// another topic for the call.
func (s *Store) options(options []vectorstores.Option) (vectorstores.Options, string, error) {
	var o vectorstores.Options
	for _, opt := range options {
		opt(&o)
	}
	topic := s.topic
	if o.NameSpace != "" {
		if err := checkTopic(o.NameSpace); err != nil {
			return o, "", fmt.Errorf("name space: %w", err)
		}
		topic = o.NameSpace
	}
	if o.Embedder == nil {
		o.Embedder = s.embedder
	}
	return o, topic, nil
}

// AddDocuments stores docs as new contexts of the topic (created if it
// does not exist) and returns their ids, which the router generates. Each
// is embedded by the store's embedder (or vectorstores.WithEmbedder's);
// without one, by the router, and ErrNotEmbedded if the router does not
// embed. Documents that vectorstores.WithDeduplicater reports as known
// are skipped, and have no id in the answer.
//
// Every document is checked (ErrInvalidDocument) and embedded before the
// first is written. If a write fails, no further one is started; the
// error comes with the ids of the documents stored, "" for the others.
func (s *Store) AddDocuments(ctx context.Context, docs []schema.Document, options ...vectorstores.Option) ([]string, error) {
	o, topic, err := s.options(options)
	if err != nil {
		return nil, fmt.Errorf("add documents: %w", err)
	}
	if o.ScoreThreshold != 0 || o.Filters != nil {
		return nil, fmt.Errorf("add documents: %w: a score threshold or filters apply to searches", ErrInvalidArgument)
	}
	if o.Deduplicater != nil {
		kept := make([]schema.Document, 0, len(docs))
		for _, d := range docs {
			if !o.Deduplicater(ctx, d) {
				kept = append(kept, d)
			}
		}
		docs = kept
	}
	if len(docs) == 0 {
		return []string{}, nil
	}
	out := make([]client.Document, len(docs))
	texts := make([]string, len(docs))
	for i, d := range docs {
		if strings.TrimSpace(d.PageContent) == "" {
			return nil, fmt.Errorf("add documents: document %d: %w: no page content", i, ErrInvalidDocument)
		}
		tags, err := encodeMetadata(d.Metadata, "metadata")
		if err != nil {
			return nil, fmt.Errorf("add documents: document %d: %w: %w", i, ErrInvalidDocument, err)
		}
		out[i] = client.Document{Metadata: client.Metadata{Tags: tags}, Content: client.Content{Text: d.PageContent}}
		texts[i] = d.PageContent
	}
	if o.Embedder != nil {
		vecs, err := o.Embedder.EmbedDocuments(ctx, texts)
		if err != nil {
			return nil, fmt.Errorf("add documents: embed: %w", err)
		}
		if len(vecs) != len(docs) {
			return nil, fmt.Errorf("add documents: embed: the embedder returned %d vectors for %d documents", len(vecs), len(docs))
		}
		for i, v := range vecs {
			if len(v) == 0 {
				return nil, fmt.Errorf("add documents: embed: the embedder returned an empty vector for document %d", i)
			}
			out[i].Content.Embeddings, out[i].Metadata.EmbeddingModel = v, s.model
		}
	}
	ids := make([]string, len(docs))
	// The first write alone: it creates the topic if need be, and tells
	// whether the router embeds what it is given without embeddings.
	first, err := s.create(ctx, topic, out[0])
	if err != nil {
		return ids, fmt.Errorf("add documents: document 0: %w", err)
	}
	if o.Embedder == nil && first.Metadata.EmbeddingModel == "" && !first.Metadata.EmbeddingPending {
		if err := s.c.DeleteContext(ctx, topic, first.Metadata.ID, &client.WriteOptions{IfMatch: first.ETag}); err != nil {
			return ids, fmt.Errorf("add documents: %w; and deleting document 0 (%s) failed: %w", ErrNotEmbedded, first.Metadata.ID, err)
		}
		return ids, fmt.Errorf("add documents: %w", ErrNotEmbedded)
	}
	ids[0] = first.Metadata.ID

	var (
		g        errgroup.Group
		mu       sync.Mutex // guards firstErr
		firstErr error
	)
	g.SetLimit(addParallelism)
	for i := 1; i < len(out); i++ {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		g.Go(func() error {
			d, err := s.c.CreateContext(ctx, topic, out[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("add documents: document %d: %w", i, err)
				}
				return nil
			}
			ids[i] = d.Metadata.ID
			return nil
		})
	}
	g.Wait()
	return ids, firstErr
}

// create stores doc as a new context of topic, creating the topic first
// if it does not exist.
func (s *Store) create(ctx context.Context, topic string, doc client.Document) (*client.Document, error) {
	d, err := s.c.CreateContext(ctx, topic, doc)
	if errors.Is(err, client.ErrNotFound) {
		if err = ensureTopic(ctx, s.c, topic); err == nil {
			d, err = s.c.CreateContext(ctx, topic, doc)
		}
	}
	return d, err
}

// SimilaritySearch returns the numDocuments (1..100) documents of the
// topic most similar to query, best first, each with its cosine
// similarity as Score and its context id in Metadata[IDKey].
//
// The query is embedded by the store's embedder (or
// vectorstores.WithEmbedder's), else by the router's -embed-model.
// vectorstores.WithScoreThreshold (0..1; zero means none) drops results
// scoring below it, so fewer may come back; vectorstores.WithFilters takes a map of
// metadata values that every result must have (TagsKey: a list of tags
// that it must all have). A topic that does not exist holds nothing.
func (s *Store) SimilaritySearch(ctx context.Context, query string, numDocuments int, options ...vectorstores.Option) ([]schema.Document, error) {
	o, topic, err := s.options(options)
	if err != nil {
		return nil, fmt.Errorf("similarity search: %w", err)
	}
	switch {
	case strings.TrimSpace(query) == "":
		return nil, fmt.Errorf("similarity search: %w: empty query", ErrInvalidArgument)
	case numDocuments < 1 || numDocuments > maxK:
		return nil, fmt.Errorf("similarity search: %w: %d documents asked for, want 1..%d", ErrInvalidArgument, numDocuments, maxK)
	case o.ScoreThreshold < 0 || o.ScoreThreshold > 1:
		return nil, fmt.Errorf("similarity search: %w: score threshold %g, want 0..1", ErrInvalidArgument, o.ScoreThreshold)
	}
	tags, err := filterTags(o.Filters)
	if err != nil {
		return nil, fmt.Errorf("similarity search: %w", err)
	}
	// A similarity search, scored by cosine (so ScoreThreshold keeps its
	// 0..1 meaning): the vector leg only, never the router's default hybrid.
	req := client.SearchRequest{K: numDocuments, Tags: tags, IncludeContent: true, Mode: "vector"}
	if o.Embedder != nil {
		v, err := o.Embedder.EmbedQuery(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("similarity search: embed the query: %w", err)
		}
		if len(v) == 0 {
			return nil, fmt.Errorf("similarity search: embed the query: the embedder returned an empty vector")
		}
		req.Embedding, req.Model = v, s.model
	} else {
		req.Query = query
	}
	res, err := s.c.Search(ctx, topic, req)
	if errors.Is(err, client.ErrNotFound) {
		return []schema.Document{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("similarity search in %s: %w", topic, err)
	}
	out := make([]schema.Document, 0, len(res))
	for _, r := range res {
		score := float32(r.Score)
		if o.ScoreThreshold > 0 && score < o.ScoreThreshold { // zero: no threshold
			continue
		}
		md := decodeTags(r.Metadata.Tags)
		md[IDKey] = r.Metadata.ID
		out = append(out, schema.Document{PageContent: pageContent(r.Content), Metadata: md, Score: score})
	}
	return out, nil
}

// pageContent is a context's text; for a conversation without text, its
// messages as "role: content" lines, which is what the router embeds.
func pageContent(c *client.Content) string {
	if c == nil {
		return ""
	}
	if c.Text != "" || len(c.Messages) == 0 {
		return c.Text
	}
	var b strings.Builder
	for i, m := range c.Messages {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content)
	}
	return b.String()
}

// Delete deletes the documents ids of the store's topic (as AddDocuments
// returned them, or Metadata[IDKey] of a search result), in order,
// stopping at the first failure: an id that is not one
// (ErrInvalidArgument, checked for all before any is deleted) or that the
// topic does not hold (client.ErrNotFound).
func (s *Store) Delete(ctx context.Context, ids ...string) error {
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return fmt.Errorf("delete document: %w", err)
		}
	}
	for _, id := range ids {
		if err := s.c.DeleteContext(ctx, s.topic, id, nil); err != nil {
			return fmt.Errorf("delete document %s from %s: %w", id, s.topic, err)
		}
	}
	return nil
}
