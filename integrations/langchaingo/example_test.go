package langchaingo_test

import (
	"context"
	"fmt"
	"log"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/integrations/langchaingo"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms/fake"
	"github.com/tmc/langchaingo/memory"
	"github.com/tmc/langchaingo/schema"
	"github.com/tmc/langchaingo/vectorstores"
)

// A conversation chain whose memory lives in Go-KVDB: run it again, in
// another process, and it remembers. (The examples are compiled, not run:
// they need a router on 127.0.0.1:8080; the tests run the same code
// against a real one.)
func ExampleHistory() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	history, err := langchaingo.NewHistory(c, "assistant", "user-42")
	if err != nil {
		log.Fatal(err)
	}
	llm := fake.NewFakeLLM([]string{"Nice to meet you, Ada."}) // any llms.Model
	chain := chains.NewConversation(llm, memory.NewConversationBuffer(memory.WithChatHistory(history)))
	answer, err := chains.Run(ctx, chain, "Hi, I am Ada.")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(answer)
}

// Documents embedded by the router (started with -embed-model), searched
// with a score threshold and a metadata filter.
func ExampleStore() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	store, err := langchaingo.NewStore(c, "kb") // langchaingo.WithEmbedder(e) to embed them yourself
	if err != nil {
		log.Fatal(err)
	}
	ids, err := store.AddDocuments(ctx, []schema.Document{
		{PageContent: "BoltDB is an embedded key value store", Metadata: map[string]any{"kind": "code"}},
		{PageContent: "The cat sat on the mat", Metadata: map[string]any{"kind": "animal", "tags": []string{"pets"}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored", ids)
	docs, err := store.SimilaritySearch(ctx, "where did the cat sit?", 3,
		vectorstores.WithScoreThreshold(0.3),
		vectorstores.WithFilters(map[string]any{"kind": "animal"}))
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range docs {
		fmt.Println(d.Score, d.PageContent, d.Metadata[langchaingo.IDKey])
	}
}
