// Package llm owns the router's LLM features: auto-embedding of written
// contexts (as docstore.Hooks) and the retry loop for those stored
// pending, semantic search, chat over a stored conversation folded to a
// token budget, and the drop-in endpoints' memory (Recall, Remember). It
// reaches documents and records only through the Docs and Records
// interfaces it declares; the pure memory policy is llmbridge/memory's.
package llm
