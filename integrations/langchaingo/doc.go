// Package langchaingo adapts Go-KVDB to langchaingo
// (github.com/tmc/langchaingo): a History is its schema.ChatMessageHistory
// on a stored conversation, a Store its vectorstores.VectorStore on a
// topic. Both sit on the Go client (package client) and hold no state of
// their own, so every process that names the same conversation or topic
// sees the same messages and documents.
//
// # Basics
//
//	c, _ := client.New("http://127.0.0.1:8080")
//	history, _ := langchaingo.NewHistory(c, "support", "ticket-42")
//	mem := memory.NewConversationBuffer(memory.WithChatHistory(history))
//	store, _ := langchaingo.NewStore(c, "docs")   // the router embeds (-embed-model)
//
// A History maps langchaingo's message types to the API's roles: human to
// user, ai to assistant, system and tool as they are; reading maps them
// back. The topic and the conversation are created by the first message.
//
// A Store writes each document as a context: PageContent is its text, and
// each metadata entry k: v is a tag "k=<v as JSON>" ("lang=\"go\"",
// "year=2024"), except TagsKey, whose strings are plain tags. Search
// filters (vectorstores.WithFilters) are metadata values a result must
// have, matched as tags by the router. Results carry their context id in
// Metadata[IDKey] and their cosine similarity in Score. Documents are
// embedded by the caller's embeddings.Embedder when the store has one
// (WithEmbedder, or vectorstores.WithEmbedder for one call), else by the
// router's -embed-model.
//
// Checks made before anything is sent fail with one of this package's
// sentinels, each of which also matches client.ErrInvalidArgument; what the
// router refuses comes back as the client's *client.Error.
//
// # Caveats
//
// A stored message is a role and a text. Messages that carry more (an AI
// message's tool calls, a tool message's call id, a function message, a
// named speaker) are refused with ErrUnsupportedMessage rather than stored
// in part.
//
// Metadata must fit the router's tags: at most 64 per document, each at
// most 128 bytes as "key=JSON". Numbers come back as float64, as from any
// JSON store. A filter matches exact values only.
//
// A tag written by another client as "k=v" reads back as metadata k when v
// is JSON, and as a plain tag otherwise.
//
// This package creates nothing the caller did not ask for beyond the topic
// and the conversation, holds no connections (the client owns its
// transport) and starts no goroutine that outlives a call.
package langchaingo
