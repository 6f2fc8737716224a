// Package mcpserver owns the router's Model Context Protocol server: the
// tools an agent uses Go-KVDB as its memory with (list_topics,
// list_contexts, get_context, store_context, append_messages,
// get_messages, search_memory, delete_context), served over streamable
// HTTP with the official SDK (github.com/modelcontextprotocol/go-sdk).
//
// Each tool validates its input with the REST API's rules (schema) and
// calls the same code paths (docstore, llm); a failure is a tool error
// (IsError, "code: message"), never a protocol error. Each tool checks the
// caller's key (its role and topic patterns) itself: the HTTP layer above
// authenticates the request and hands the key down with WithCaller. It
// does not authenticate, rate-limit or write the audit trail; it reports
// each call to the Caller's Record hook, which does.
//
// The server is stateless (no Mcp-Session-Id): any router answers any
// request, as for the REST API.
package mcpserver
