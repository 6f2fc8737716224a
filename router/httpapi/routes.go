package httpapi

import (
	"net/http"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/labstack/echo/v4"
)

// route is one entry of the route table: a method ("" for every method)
// and echo path, its handler, and what the caller's key must allow. A
// path with :topic is scoped to that topic (a key's topic patterns
// apply); need, when set, decides the access per request instead.
type route struct {
	method, path string
	handler      echo.HandlerFunc
	access       authfile.Access
	need         func(c echo.Context) authfile.Access
}

// entry is a route as the middleware looks it up.
type entry struct {
	route
	scoped, byID bool // the path names :topic, :id
}

// routeKey finds a route by method ("" for every method) and echo path,
// without building a string per request.
type routeKey struct{ method, path string }

// routes is the one route table of the API and the drop-in endpoint,
// with the access level of each route. With an auth file every one of
// them needs a key; /healthz, /readyz, /metrics and /openapi.yaml (see
// New) never do.
func (a *API) routes() []route {
	const (
		read  = authfile.AccessRead
		write = authfile.AccessWrite
		admin = authfile.AccessAdmin
		v1    = "/api/v1"
		ctx   = v1 + "/topics/:topic/contexts/:id"
		drop  = ollamaPrefix + "/:topic/:id"
		oa    = openaiPrefix + "/:topic/:id/v1"
	)
	return []route{
		{http.MethodGet, v1 + "/cluster", a.clusterStatus, admin, nil},
		{http.MethodPost, v1 + "/admin/repair", a.adminRepair, admin, nil},
		{http.MethodPost, v1 + "/admin/reindex", a.adminReindex, admin, nil},
		{http.MethodPost, v1 + "/admin/reload", a.adminReload, admin, nil},
		{http.MethodPost, v1 + "/admin/remove", a.adminRemove, admin, nil},
		{http.MethodDelete, v1 + "/admin/shards/:shard", a.adminRemove, admin, nil},
		{http.MethodGet, v1 + "/admin/backup", a.adminBackup, admin, nil},
		{http.MethodPost, v1 + "/admin/restore", a.adminRestore, admin, nil},
		{http.MethodGet, v1 + "/admin/compression", a.adminCompression, admin, nil},
		{http.MethodPost, v1 + "/admin/compression/train", a.adminTrain, admin, nil},
		{http.MethodPost, v1 + "/admin/compression/rewrite", a.adminRewrite, admin, nil},
		{http.MethodPost, v1 + "/admin/reencrypt", a.adminReencrypt, admin, nil},

		// POST names its topic in the body: createTopic checks the key's
		// patterns against it.
		{http.MethodPost, v1 + "/topics", a.createTopic, write, nil},
		{http.MethodGet, v1 + "/topics", a.listTopics, read, nil},
		{http.MethodGet, v1 + "/topics/:topic", a.getTopic, read, nil},
		{http.MethodDelete, v1 + "/topics/:topic", a.deleteTopic, write, nil},
		{http.MethodPost, v1 + "/topics/:topic/contexts", a.createContext, write, nil},
		{http.MethodPost, v1 + "/topics/:topic/contexts/_bulk", a.bulkContexts, write, nil},
		{http.MethodGet, v1 + "/topics/:topic/contexts", a.listContexts, read, nil},
		{http.MethodPost, v1 + "/topics/:topic/search", a.search, read, nil},
		{http.MethodGet, v1 + "/topics/:topic/changes", a.topicChanges, read, nil},
		{http.MethodGet, ctx, a.getContext, read, nil},
		{http.MethodPut, ctx, a.putContext, write, nil},
		{http.MethodDelete, ctx, a.deleteContext, write, nil},
		{http.MethodPost, ctx + "/messages", a.appendMessagesHandler, write, nil},
		{http.MethodGet, ctx + "/messages", a.getMessages, read, nil},
		{http.MethodPost, ctx + "/chat", a.chatHandler, write, nil},

		// The MCP server: any key may connect; each tool checks the key's
		// role and topic patterns itself (router/mcpserver).
		{"", mcpPath, a.mcpHandler, read, nil},

		// The drop-in Ollama endpoint: its root answers reads itself and
		// relays the rest; /api/chat stores turns; every other path is
		// relayed, a reader's when it changes nothing on the model server.
		{"", drop, a.ollamaRoot, admin, readOrAdmin},
		{"", drop + "/", a.ollamaRoot, admin, readOrAdmin},
		{http.MethodPost, drop + "/api/chat", a.ollamaChat, write, nil},
		{http.MethodPost, drop + "/v1/chat/completions", a.openaiChat, write, nil},
		{"", drop + "/*", a.ollamaForward, admin, relayNeed},

		// The drop-in OpenAI endpoint: chat completions store turns;
		// the model list and embeddings are relayed.
		{http.MethodPost, oa + "/chat/completions", a.openaiChat, write, nil},
		{http.MethodGet, oa + "/models", a.openaiRelay, read, nil},
		{http.MethodPost, oa + "/embeddings", a.openaiRelay, read, nil},
	}
}

// readOrAdmin: a read needs a reader's key, anything else an admin's.
func readOrAdmin(c echo.Context) authfile.Access {
	if m := c.Request().Method; m == http.MethodGet || m == http.MethodHead {
		return authfile.AccessRead
	}
	return authfile.AccessAdmin
}

// ollamaReadOnly are the Ollama paths relayed as they are that neither
// store anything nor change the Ollama server: a reader may use them. Any
// other relayed path (pull, push, create, copy, delete, blobs) changes the
// Ollama server and needs an admin key.
var ollamaReadOnly = map[string]bool{
	"/api/generate": true, "/api/embed": true, "/api/embeddings": true,
	"/api/show": true, "/api/tags": true, "/api/ps": true, "/api/version": true,
	"/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": true, "/v1/models": true,
}

// relayNeed is the access a relayed path needs (see ollamaReadOnly).
func relayNeed(c echo.Context) authfile.Access {
	if readOrAdmin(c) == authfile.AccessRead || ollamaReadOnly["/"+c.Param("*")] {
		return authfile.AccessRead
	}
	return authfile.AccessAdmin
}

// register adds the table to e and indexes each route's access by method
// and path for the security middleware.
func (a *API) register(e *echo.Echo) {
	a.access = map[routeKey]entry{}
	for _, rt := range a.routes() {
		if rt.method == "" {
			e.Any(rt.path, rt.handler)
		} else {
			e.Add(rt.method, rt.path, rt.handler)
		}
		a.access[routeKey{rt.method, rt.path}] = entry{rt, strings.Contains(rt.path, ":topic"), strings.Contains(rt.path, ":id")}
	}
}

// classify says what a routed request needs: its route's access level,
// and the topic and context it is scoped to. A request that matched no
// route (404) or a route with another method (405) needs a key, no more,
// and gets its error.
func (a *API) classify(c echo.Context) (need authfile.Access, topic, id string, scoped bool) {
	if unrouted(c) {
		return authfile.AccessAuth, "", "", false
	}
	method := c.Request().Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	rt, ok := a.access[routeKey{method, c.Path()}]
	if !ok {
		rt, ok = a.access[routeKey{"", c.Path()}]
	}
	if !ok { // not in the table: closed until placed
		return authfile.AccessAdmin, "", "", false
	}
	need = rt.access
	if rt.need != nil {
		need = rt.need(c)
	}
	if rt.scoped {
		topic, scoped = param(c, "topic"), true
	}
	if rt.byID {
		id = param(c, "id")
	}
	return need, topic, id, scoped
}
