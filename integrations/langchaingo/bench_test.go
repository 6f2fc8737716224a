package langchaingo_test

import (
	"fmt"
	"testing"

	"github.com/go-kvdb/go-kvdb/integrations/langchaingo"
	"github.com/tmc/langchaingo/schema"
)

// The benchmarks run against a real router process on loopback, so they
// measure the adapter with the REST round trips it costs, which dominate.

func BenchmarkHistoryAddUserMessage(b *testing.B) {
	r := startRouter(b, routerOpts{})
	h := newHistory(b, r.Client, "bench", "c1")
	for b.Loop() {
		if err := h.AddUserMessage(b.Context(), "a message of a few words"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHistoryMessages reads a conversation of 100 messages.
func BenchmarkHistoryMessages(b *testing.B) {
	r := startRouter(b, routerOpts{})
	h := newHistory(b, r.Client, "bench", "c1")
	for i := range 100 {
		if err := h.AddUserMessage(b.Context(), fmt.Sprintf("message %d of a few words", i)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		msgs, err := h.Messages(b.Context())
		if err != nil || len(msgs) != 100 {
			b.Fatalf("Messages = %d, %v, want 100", len(msgs), err)
		}
	}
}

// BenchmarkStoreAddDocuments adds batches of 64 documents embedded by the
// caller; it reports the time per document.
func BenchmarkStoreAddDocuments(b *testing.B) {
	r := startRouter(b, routerOpts{})
	s := newStore(b, r.Client, "bench", langchaingo.WithEmbedder(newEmbedder(b)))
	docs := make([]schema.Document, 64)
	for i := range docs {
		docs[i] = schema.Document{PageContent: fmt.Sprintf("document %d about topic %d", i, i%7), Metadata: map[string]any{"n": i % 7}}
	}
	n := 0
	for b.Loop() {
		if _, err := s.AddDocuments(b.Context(), docs); err != nil {
			b.Fatal(err)
		}
		n += len(docs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/doc")
}

// BenchmarkStoreSimilaritySearch searches 1,000 documents for the best 10.
func BenchmarkStoreSimilaritySearch(b *testing.B) {
	r := startRouter(b, routerOpts{})
	s := newStore(b, r.Client, "bench", langchaingo.WithEmbedder(newEmbedder(b)))
	docs := make([]schema.Document, 1000)
	for i := range docs {
		docs[i] = schema.Document{PageContent: fmt.Sprintf("document %d about topic %d and subject %d", i, i%7, i%13)}
	}
	if _, err := s.AddDocuments(b.Context(), docs); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		got, err := s.SimilaritySearch(b.Context(), "a document about topic 3", 10)
		if err != nil || len(got) != 10 {
			b.Fatalf("SimilaritySearch = %d, %v, want 10", len(got), err)
		}
	}
}
