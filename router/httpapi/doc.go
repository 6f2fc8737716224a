// Package httpapi owns the HTTP face of the router: the one route table
// (routes.go) with each route's access level, the handlers (parse, call a
// part, render), error rendering in the API's one shape, the security
// middleware (keys, rate limits, the concurrency cap, body deadlines, the
// audit trail), the request checks every route shares (header size, query
// encoding), and the drop-in Ollama and OpenAI endpoints. It holds no data and no
// logic the parts below do not own.
package httpapi
