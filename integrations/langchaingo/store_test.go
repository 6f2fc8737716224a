package langchaingo_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/integrations/langchaingo"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/tmc/langchaingo/embeddings"
	"github.com/tmc/langchaingo/schema"
	"github.com/tmc/langchaingo/vectorstores"
)

// callerDim is the dimension of the caller's embedder, unlike the fake
// Ollama's embed-a (64), so the two are never mixed up.
const callerDim = 32

// countingEmbedder is a deterministic embeddings.Embedder: langchaingo's
// own EmbedderImpl over ollamatest.Embed (a hashed bag of words), counting
// the texts it embeds.
type countingEmbedder struct {
	*embeddings.EmbedderImpl
	texts atomic.Int64
}

func newEmbedder(t testing.TB) *countingEmbedder {
	t.Helper()
	e := &countingEmbedder{}
	impl, err := embeddings.NewEmbedder(embeddings.EmbedderClientFunc(func(_ context.Context, texts []string) ([][]float32, error) {
		e.texts.Add(int64(len(texts)))
		out := make([][]float32, len(texts))
		for i, s := range texts {
			out[i] = ollamatest.Embed(s, callerDim)
		}
		return out, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	e.EmbedderImpl = impl
	return e
}

var corpus = []schema.Document{
	{PageContent: "The cat sat on the mat and purred", Metadata: map[string]any{"kind": "animal", "lang": "en", "year": 2024, "tags": []string{"pets"}}},
	{PageContent: "Dogs bark at the mailman every morning", Metadata: map[string]any{"kind": "animal", "lang": "en"}},
	{PageContent: "Go is a programming language with goroutines and channels", Metadata: map[string]any{"kind": "code", "lang": "en"}},
	{PageContent: "BoltDB is an embedded key value store written in Go", Metadata: map[string]any{"kind": "code", "lang": "en", "stars": 14.5}},
	{PageContent: "Le chat dort sur le canapé", Metadata: map[string]any{"kind": "animal", "lang": "fr"}},
}

const catQuery = "a cat on the mat"

func newStore(t testing.TB, c *client.Client, topic string, opts ...langchaingo.StoreOption) *langchaingo.Store {
	t.Helper()
	s, err := langchaingo.NewStore(c, topic, opts...)
	if err != nil {
		t.Fatalf("NewStore(%q): %v", topic, err)
	}
	return s
}

func addCorpus(t testing.TB, s *langchaingo.Store, opts ...vectorstores.Option) []string {
	t.Helper()
	ids, err := s.AddDocuments(t.Context(), corpus, opts...)
	if err != nil {
		t.Fatalf("AddDocuments: %v", err)
	}
	if len(ids) != len(corpus) {
		t.Fatalf("AddDocuments returned %d ids, want %d", len(ids), len(corpus))
	}
	seen := map[string]bool{}
	for i, id := range ids {
		if id == "" || seen[id] {
			t.Errorf("AddDocuments ids[%d] = %q, want a distinct non-empty id (ids %v)", i, id, ids)
		}
		seen[id] = true
	}
	return ids
}

func search(t testing.TB, s *langchaingo.Store, query string, k int, opts ...vectorstores.Option) []schema.Document {
	t.Helper()
	docs, err := s.SimilaritySearch(t.Context(), query, k, opts...)
	if err != nil {
		t.Fatalf("SimilaritySearch(%q, %d): %v", query, k, err)
	}
	for i := 1; i < len(docs); i++ {
		if docs[i].Score > docs[i-1].Score {
			t.Errorf("SimilaritySearch(%q): score %d (%g) > score %d (%g), want best first", query, i, docs[i].Score, i-1, docs[i-1].Score)
		}
	}
	return docs
}

func contents(docs []schema.Document) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.PageContent
	}
	return out
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

// checkSearches runs the searches both embedders must answer alike, with
// embed the embedding of the vectors searched (to check the scores).
func checkSearches(t *testing.T, s *langchaingo.Store, ids []string, embed func(string) []float32) {
	t.Helper()
	all := search(t, s, catQuery, len(corpus))
	if len(all) != len(corpus) {
		t.Fatalf("SimilaritySearch(%q, %d) = %d documents, want %d", catQuery, len(corpus), len(all), len(corpus))
	}
	top := all[0]
	if top.PageContent != corpus[0].PageContent {
		t.Errorf("SimilaritySearch(%q)[0] = %q, want %q", catQuery, top.PageContent, corpus[0].PageContent)
	}
	wantMD := map[string]any{"kind": "animal", "lang": "en", "year": float64(2024), "tags": []string{"pets"}, langchaingo.IDKey: ids[0]}
	if !reflect.DeepEqual(top.Metadata, wantMD) {
		t.Errorf("SimilaritySearch(%q)[0].Metadata = %#v, want %#v", catQuery, top.Metadata, wantMD)
	}
	if want := cosine(embed(catQuery), embed(corpus[0].PageContent)); math.Abs(float64(top.Score)-want) > 1e-5 {
		t.Errorf("SimilaritySearch(%q)[0].Score = %g, want the cosine similarity %g", catQuery, top.Score, want)
	}
	for _, d := range all {
		i := slices.Index(ids, d.Metadata[langchaingo.IDKey].(string))
		if i < 0 || corpus[i].PageContent != d.PageContent {
			t.Errorf("result %q has id %v, not the id AddDocuments returned for it", d.PageContent, d.Metadata[langchaingo.IDKey])
		}
	}

	// k
	if got := search(t, s, catQuery, 2); !slices.Equal(contents(got), contents(all[:2])) {
		t.Errorf("SimilaritySearch(k=2) = %q, want the best two %q", contents(got), contents(all[:2]))
	}
	// A threshold between the best score and the next keeps the best only.
	thr := (all[0].Score + all[1].Score) / 2
	if got := search(t, s, catQuery, len(corpus), vectorstores.WithScoreThreshold(thr)); !slices.Equal(contents(got), contents(all[:1])) {
		t.Errorf("SimilaritySearch(threshold %g; scores %g, %g) = %q, want only %q", thr, all[0].Score, all[1].Score, contents(got), all[0].PageContent)
	}
	if got := search(t, s, catQuery, len(corpus), vectorstores.WithScoreThreshold(1)); len(got) != 0 && got[0].Score < 1 {
		t.Errorf("SimilaritySearch(threshold 1) = %v, want nothing below 1", got)
	}

	// Filters: exact metadata values, as tags.
	for _, tc := range []struct {
		name    string
		filters any
		want    []string // page contents, in any order
	}{
		{"kind", map[string]any{"kind": "code"}, []string{corpus[2].PageContent, corpus[3].PageContent}},
		{"two keys", map[string]any{"kind": "animal", "lang": "fr"}, []string{corpus[4].PageContent}},
		{"int as stored", map[string]any{"year": 2024}, []string{corpus[0].PageContent}},
		{"float", map[string]any{"stars": 14.5}, []string{corpus[3].PageContent}},
		{"plain tags", map[string]any{"tags": []string{"pets"}}, []string{corpus[0].PageContent}},
		{"map of strings", map[string]string{"lang": "fr"}, []string{corpus[4].PageContent}},
		{"no match", map[string]any{"kind": "code", "lang": "fr"}, nil},
		{"wrong type", map[string]any{"year": "2024"}, nil},
	} {
		got := contents(search(t, s, catQuery, len(corpus), vectorstores.WithFilters(tc.filters)))
		slices.Sort(got)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("SimilaritySearch(filter %s %v) = %q, want %q", tc.name, tc.filters, got, want)
		}
	}
}

// TestStoreWithCallersEmbedder: documents and queries embedded by the
// caller's embedder; the router (which auto-embeds) keeps those vectors
// and never calls its model.
func TestStoreWithCallersEmbedder(t *testing.T) {
	r := startRouter(t, routerOpts{embed: true})
	e := newEmbedder(t)
	s := newStore(t, r.Client, "docs", langchaingo.WithEmbedder(e))
	ids := addCorpus(t, s)
	if got := e.texts.Load(); got != int64(len(corpus)) {
		t.Errorf("the embedder embedded %d texts, want %d", got, len(corpus))
	}
	stored, err := r.Client.GetContext(t.Context(), "docs", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored.Content.Embeddings, ollamatest.Embed(corpus[0].PageContent, callerDim)) || stored.Metadata.EmbeddingModel != "" {
		t.Errorf("stored embeddings = %d values of model %q, want the caller's %d, unnamed", len(stored.Content.Embeddings), stored.Metadata.EmbeddingModel, callerDim)
	}
	wantTags := []string{`kind="animal"`, `lang="en"`, "pets", "year=2024"}
	if got := slices.Sorted(slices.Values(stored.Metadata.Tags)); !slices.Equal(got, wantTags) || stored.Content.Text != corpus[0].PageContent {
		t.Errorf("stored context = text %q tags %q, want %q, %q", stored.Content.Text, got, corpus[0].PageContent, wantTags)
	}

	checkSearches(t, s, ids, func(s string) []float32 { return ollamatest.Embed(s, callerDim) })
	if n := len(r.Ollama.Requests("/api/embed")) + len(r.Ollama.Requests("/api/embeddings")); n != 0 {
		t.Errorf("the router called its embedding model %d times, want 0: the caller embeds", n)
	}

	// A named model keeps its vectors apart from the unnamed ones.
	named := newStore(t, r.Client, "docs", langchaingo.WithEmbedder(e), langchaingo.WithEmbeddingModel("caller-v1"))
	if got := search(t, named, catQuery, 5); len(got) != 0 {
		t.Errorf("SimilaritySearch(model caller-v1) before any such document = %q, want none", contents(got))
	}
	nid, err := named.AddDocuments(t.Context(), corpus[:1])
	if err != nil {
		t.Fatal(err)
	}
	if got := search(t, named, catQuery, 5); len(got) != 1 || got[0].Metadata[langchaingo.IDKey] != nid[0] {
		t.Errorf("SimilaritySearch(model caller-v1) = %v, want only its own document %s", got, nid[0])
	}

	// Per call: another embedder, another topic (name space), a deduplicater.
	plain := newStore(t, r.Client, "docs")
	other := newEmbedder(t)
	skipDogs := vectorstores.WithDeduplicater(func(_ context.Context, d schema.Document) bool { return strings.HasPrefix(d.PageContent, "Dogs") })
	oids, err := plain.AddDocuments(t.Context(), corpus, vectorstores.WithEmbedder(other), vectorstores.WithNameSpace("docs-other"), skipDogs)
	if err != nil || len(oids) != len(corpus)-1 {
		t.Fatalf("AddDocuments(name space, deduplicater) = %v, %v, want %d ids", oids, err, len(corpus)-1)
	}
	if other.texts.Load() != int64(len(corpus)-1) {
		t.Errorf("the per-call embedder embedded %d texts, want %d", other.texts.Load(), len(corpus)-1)
	}
	got := search(t, plain, "dogs bark", 10, vectorstores.WithEmbedder(other), vectorstores.WithNameSpace("docs-other"))
	if len(got) != len(corpus)-1 || slices.Contains(contents(got), corpus[1].PageContent) {
		t.Errorf("SimilaritySearch(name space) = %q, want the %d documents but the dogs", contents(got), len(corpus)-1)
	}
	if got := search(t, s, catQuery, 10); len(got) != len(corpus) {
		t.Errorf("SimilaritySearch(docs) = %d documents, want %d: the name space is another topic", len(got), len(corpus))
	}

	// Delete by the ids returned.
	if err := s.Delete(t.Context(), ids[0]); err != nil {
		t.Fatalf("Delete(%s): %v", ids[0], err)
	}
	if got := search(t, s, catQuery, 10); len(got) != len(corpus)-1 || slices.Contains(contents(got), corpus[0].PageContent) {
		t.Errorf("SimilaritySearch after Delete = %q, want the cat gone", contents(got))
	}
}

// TestStoreWithRoutersEmbedder: no embedder in the store; the router
// embeds every document and every query with its -embed-model (the fake
// Ollama's embed-a).
func TestStoreWithRoutersEmbedder(t *testing.T) {
	r := startRouter(t, routerOpts{embed: true})
	s := newStore(t, r.Client, "kb")
	ids := addCorpus(t, s)
	if n := len(r.Ollama.Requests("/api/embed")); n != len(corpus) {
		t.Errorf("the router embedded %d times, want %d (one per document)", n, len(corpus))
	}
	stored, err := r.Client.GetContext(t.Context(), "kb", ids[3])
	if err != nil {
		t.Fatal(err)
	}
	if stored.Metadata.EmbeddingModel != "embed-a" || !slices.Equal(stored.Content.Embeddings, ollamatest.Embed(corpus[3].PageContent, 64)) {
		t.Errorf("stored embedding = %d values of model %q, want embed-a's of the text", len(stored.Content.Embeddings), stored.Metadata.EmbeddingModel)
	}
	checkSearches(t, s, ids, func(s string) []float32 { return ollamatest.Embed(s, 64) })

	// Vectors of the caller's embedder and of the router's never meet.
	mixed := newStore(t, r.Client, "kb", langchaingo.WithEmbedder(newEmbedder(t)))
	if got := search(t, mixed, catQuery, 10); len(got) != 0 {
		t.Errorf("SimilaritySearch(caller's embedder over router-embedded documents) = %q, want none", contents(got))
	}
}

// TestStoreRouterWithoutEmbedModel: without -embed-model and without an
// embedder nothing can be searched, and AddDocuments says so and leaves
// no document behind.
func TestStoreRouterWithoutEmbedModel(t *testing.T) {
	r := startRouter(t, routerOpts{})
	s := newStore(t, r.Client, "kb")
	ids, err := s.AddDocuments(t.Context(), corpus)
	if !errors.Is(err, langchaingo.ErrNotEmbedded) || slices.ContainsFunc(ids, func(id string) bool { return id != "" }) {
		t.Fatalf("AddDocuments = %v, %v, want no ids, ErrNotEmbedded", ids, err)
	}
	page, err := r.Client.ListContexts(t.Context(), "kb", client.ListOptions{})
	if err != nil || len(page.Contexts) != 0 {
		t.Errorf("ListContexts(kb) after ErrNotEmbedded = %v, %v, want no contexts", page, err)
	}
	if _, err := s.SimilaritySearch(t.Context(), catQuery, 3); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("SimilaritySearch(no embedding model) = %v, want the router's invalid_argument", err)
	}
	// The caller's embedder needs nothing of the router.
	withE := newStore(t, r.Client, "kb", langchaingo.WithEmbedder(newEmbedder(t)))
	ids = addCorpus(t, withE)
	checkSearches(t, withE, ids, func(s string) []float32 { return ollamatest.Embed(s, callerDim) })
}

// TestStoreHostileInput: every bad argument fails before anything is
// written, with an error that names it.
func TestStoreHostileInput(t *testing.T) {
	r := startRouter(t, routerOpts{embed: true})
	c := r.Client
	for _, topic := range []string{"", "bad topic", "a/b", "..", strings.Repeat("t", 129)} {
		if s, err := langchaingo.NewStore(c, topic); s != nil || !errors.Is(err, langchaingo.ErrInvalidArgument) {
			t.Errorf("NewStore(%q) = %v, %v, want nil, ErrInvalidArgument", truncate(topic), s, err)
		}
	}
	if _, err := langchaingo.NewStore(nil, "t"); !errors.Is(err, langchaingo.ErrInvalidArgument) {
		t.Errorf("NewStore(nil client) = %v, want ErrInvalidArgument", err)
	}

	s := newStore(t, c, "hostile")
	doc := func(text string, md map[string]any) []schema.Document {
		return []schema.Document{corpus[0], {PageContent: text, Metadata: md}}
	}
	manyKeys := map[string]any{}
	for i := range 65 {
		manyKeys[string(rune('a'+i%26))+strings.Repeat("k", i/26)] = i
	}
	for _, tc := range []struct {
		name string
		docs []schema.Document
		opts []vectorstores.Option
		want error
	}{
		{"empty page content", doc("", nil), nil, langchaingo.ErrInvalidDocument},
		{"blank page content", doc(" \n\t", nil), nil, langchaingo.ErrInvalidDocument},
		{"value too long for a tag", doc("x", map[string]any{"k": strings.Repeat("v", 130)}), nil, langchaingo.ErrInvalidDocument},
		{"key with =", doc("x", map[string]any{"a=b": 1}), nil, langchaingo.ErrInvalidDocument},
		{"empty key", doc("x", map[string]any{"": 1}), nil, langchaingo.ErrInvalidDocument},
		{"tags not strings", doc("x", map[string]any{"tags": []any{"a", 1}}), nil, langchaingo.ErrInvalidDocument},
		{"tag with =", doc("x", map[string]any{"tags": []string{"a=b"}}), nil, langchaingo.ErrInvalidDocument},
		{"empty tag", doc("x", map[string]any{"tags": []string{""}}), nil, langchaingo.ErrInvalidDocument},
		{"value not JSON", doc("x", map[string]any{"f": func() {}}), nil, langchaingo.ErrInvalidDocument},
		{"too many tags", doc("x", manyKeys), nil, langchaingo.ErrInvalidDocument},
		{"threshold on add", corpus, []vectorstores.Option{vectorstores.WithScoreThreshold(0.5)}, langchaingo.ErrInvalidArgument},
		{"filters on add", corpus, []vectorstores.Option{vectorstores.WithFilters(map[string]any{"a": 1})}, langchaingo.ErrInvalidArgument},
		{"bad name space", corpus, []vectorstores.Option{vectorstores.WithNameSpace("no/slash")}, langchaingo.ErrInvalidArgument},
	} {
		ids, err := s.AddDocuments(t.Context(), tc.docs, tc.opts...)
		if ids != nil || !errors.Is(err, tc.want) || !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("AddDocuments(%s) = %v, %v, want nil, %v", tc.name, ids, err, tc.want)
		}
	}
	wrongCount := embeddings.EmbedderClientFunc(func(context.Context, []string) ([][]float32, error) { return [][]float32{{1}}, nil })
	bad, _ := embeddings.NewEmbedder(wrongCount)
	if _, err := s.AddDocuments(t.Context(), corpus, vectorstores.WithEmbedder(bad)); err == nil || !strings.Contains(err.Error(), "1 vectors for 5 documents") {
		t.Errorf("AddDocuments(embedder returning 1 vector for 5) = %v, want an error saying so", err)
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.AddDocuments(cancelled, corpus); !errors.Is(err, context.Canceled) {
		t.Errorf("AddDocuments(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := c.Topic(t.Context(), "hostile"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Topic(hostile) after refused AddDocuments = %v, want ErrNotFound: nothing written", err)
	}

	// A search of a topic nobody wrote is empty, not an error.
	if got, err := s.SimilaritySearch(t.Context(), catQuery, 3); err != nil || len(got) != 0 {
		t.Errorf("SimilaritySearch(no such topic) = %v, %v, want none, nil", got, err)
	}
	ids := addCorpus(t, s)
	for _, tc := range []struct {
		name  string
		query string
		k     int
		opts  []vectorstores.Option
		want  error
	}{
		{"k 0", catQuery, 0, nil, langchaingo.ErrInvalidArgument},
		{"k -1", catQuery, -1, nil, langchaingo.ErrInvalidArgument},
		{"k 101", catQuery, 101, nil, langchaingo.ErrInvalidArgument},
		{"empty query", " ", 3, nil, langchaingo.ErrInvalidArgument},
		{"threshold 1.5", catQuery, 3, []vectorstores.Option{vectorstores.WithScoreThreshold(1.5)}, langchaingo.ErrInvalidArgument},
		{"threshold -0.1", catQuery, 3, []vectorstores.Option{vectorstores.WithScoreThreshold(-0.1)}, langchaingo.ErrInvalidArgument},
		{"filter not a map", catQuery, 3, []vectorstores.Option{vectorstores.WithFilters("kind=code")}, langchaingo.ErrInvalidFilter},
		{"filter map of ints", catQuery, 3, []vectorstores.Option{vectorstores.WithFilters(map[string]int{"year": 2024})}, langchaingo.ErrInvalidFilter},
		{"filter on the id", catQuery, 3, []vectorstores.Option{vectorstores.WithFilters(map[string]any{langchaingo.IDKey: ids[0]})}, langchaingo.ErrInvalidFilter},
		{"filter value too long", catQuery, 3, []vectorstores.Option{vectorstores.WithFilters(map[string]any{"k": strings.Repeat("v", 130)})}, langchaingo.ErrInvalidFilter},
		{"bad name space", catQuery, 3, []vectorstores.Option{vectorstores.WithNameSpace("a b")}, langchaingo.ErrInvalidArgument},
	} {
		got, err := s.SimilaritySearch(t.Context(), tc.query, tc.k, tc.opts...)
		if got != nil || !errors.Is(err, tc.want) || !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("SimilaritySearch(%s) = %v, %v, want nil, %v", tc.name, got, err, tc.want)
		}
	}

	for _, id := range []string{"", "a/b", "..", "-x", strings.Repeat("i", 257)} {
		if err := s.Delete(t.Context(), ids[1], id); !errors.Is(err, langchaingo.ErrInvalidArgument) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidArgument", truncate(id), err)
		}
	}
	if err := s.Delete(t.Context(), "no-such-document"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Delete(no-such-document) = %v, want client.ErrNotFound", err)
	}
	if got := search(t, s, catQuery, 10); len(got) != len(corpus) {
		t.Errorf("SimilaritySearch after refused Deletes = %d documents, want all %d", len(got), len(corpus))
	}
}
