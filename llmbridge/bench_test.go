package llmbridge_test

import (
	"context"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
)

// benchProviders are both providers against their fakes, which answer
// alike: the figures compare the clients (and the fakes), not models.
func benchProviders(b *testing.B) []llmbridge.Provider {
	ol := ollamatest.New(b)
	oa := openaitest.New(b)
	oa.SetAPIKey(routerKey)
	return []llmbridge.Provider{
		open(b, llmbridge.Config{Provider: "ollama", URL: ol.URL}),
		open(b, llmbridge.Config{Provider: "openai", URL: oa.URL, APIKey: routerKey}),
	}
}

// BenchmarkChat streams a 22-word answer (23 chunks) per op.
func BenchmarkChat(b *testing.B) {
	words := strings.Repeat("word ", 20)
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: words}}}
	for _, p := range benchProviders(b) {
		b.Run(p.Kind(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				if err := p.Chat(context.Background(), req, func(llmbridge.ChatChunk) error { n++; return nil }); err != nil || n != 23 {
					b.Fatalf("Chat = %v after %d chunks", err, n)
				}
			}
		})
	}
}

// BenchmarkEmbed embeds 16 texts into 64 dimensions per op.
func BenchmarkEmbed(b *testing.B) {
	texts := make([]string, 16)
	for i := range texts {
		texts[i] = strings.Repeat("some words to embed ", 4)
	}
	for _, p := range benchProviders(b) {
		b.Run(p.Kind(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if e, err := p.Embed(context.Background(), "embed-a", texts); err != nil || len(e.Vectors) != 16 {
					b.Fatalf("Embed = %v", err)
				}
			}
		})
	}
}
