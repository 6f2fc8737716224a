package httpapi

import (
	"net"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
)

// reqInfo is what the security middleware learns about a request: its
// route's needs, the caller, and what the audit line reports.
type reqInfo struct {
	need     authfile.Access
	topic    string // the topic the route names, if any
	id       string // the context id the route names, if any
	scoped   bool   // the route acts on topic
	key      *authfile.Key
	ip       string
	reqID    string
	ollama   bool // answer errors in Ollama's Shape
	openai   bool // answer errors in OpenAI's shape (wins over ollama)
	mutating bool
}

const infoKey = "kvdb.security"

func infoOf(c echo.Context) *reqInfo {
	if ri, ok := c.Get(infoKey).(*reqInfo); ok {
		return ri
	}
	return nil
}

// openPath reports the routes that never need a key: probes and metrics.
func openPath(p string) bool {
	return p == "/healthz" || p == "/readyz" || p == "/metrics"
}

// guarded reports the paths that need a key when the router has an auth
// file: the API, the MCP server and the drop-in Ollama and OpenAI
// endpoints.
func guarded(p string) bool {
	return p == "/api/v1" || strings.HasPrefix(p, "/api/v1/") || p == mcpPath ||
		p == ollamaPrefix || strings.HasPrefix(p, ollamaPrefix+"/") ||
		p == openaiPrefix || strings.HasPrefix(p, openaiPrefix+"/")
}

// openaiShaped reports the paths whose errors OpenAI's clients read: the
// drop-in OpenAI endpoint, and the OpenAI API under the Ollama one
// (/ollama/{topic}/{context}/v1/…).
func openaiShaped(p string) bool {
	if strings.HasPrefix(p, openaiPrefix+"/") {
		return true
	}
	rest, ok := strings.CutPrefix(p, ollamaPrefix+"/")
	if !ok {
		return false
	}
	// rest is {topic}/{context}/…
	parts := strings.SplitN(rest, "/", 4)
	return len(parts) >= 3 && parts[2] == "v1"
}

var notFoundHandler = reflect.ValueOf(echo.NotFoundHandler).Pointer()

// unrouted reports a request that matched no route (404), or a route with
// another method (405): it needs a key, no more, and gets its error.
func unrouted(c echo.Context) bool {
	h := c.Handler()
	return c.Path() == "" || h == nil || c.Get(echo.ContextKeyHeaderAllow) != nil ||
		reflect.ValueOf(h).Pointer() == notFoundHandler
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authenticate finds the request's key. It returns an unauthenticated
// error naming what is wrong, never the secret.
func (s *security) authenticate(c echo.Context, ri *reqInfo) *apierr.Error {
	a := s.auth.Load()
	if a == nil {
		return nil // running open
	}
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	if h == "" {
		s.authFailures.WithLabelValues("missing").Inc()
		return apierr.Errorf(apierr.CodeUnauthenticated, "this API needs a key: send Authorization: Bearer <secret>")
	}
	tok, ok := bearer(h)
	if !ok {
		s.authFailures.WithLabelValues("malformed").Inc()
		return apierr.Errorf(apierr.CodeUnauthenticated, "the Authorization header must read Bearer <secret>")
	}
	k := a.Lookup(tok)
	if k == nil {
		s.authFailures.WithLabelValues("unknown").Inc()
		return apierr.Errorf(apierr.CodeUnauthenticated, "unknown or revoked API key")
	}
	ri.key = k
	return nil
}

// authorize checks the key's role and topic patterns against the route.
func (s *security) authorize(ri *reqInfo) *apierr.Error {
	if s.auth.Load() == nil {
		return nil
	}
	k := ri.key
	if !k.Role().Allows(ri.need) {
		s.authFailures.WithLabelValues("role").Inc()
		return apierr.Errorf(apierr.CodePermissionDenied, "key %q (role %s) may not %s here", k.Label(), k.Role(), ri.need)
	}
	if ri.scoped && !k.TopicAllowed(ri.topic) {
		s.authFailures.WithLabelValues("topic").Inc()
		return apierr.Errorf(apierr.CodePermissionDenied, "key %q may not use topic %q", k.Label(), schema.Truncate(ri.topic))
	}
	return nil
}

// allowTopic checks that the request's key may act on topic, for routes
// that name their topic in the body (POST /api/v1/topics).
func (a *API) allowTopic(c echo.Context, topic string) error {
	ri := infoOf(c)
	if ri == nil || ri.key == nil || ri.key.TopicAllowed(topic) {
		return nil
	}
	a.sec.authFailures.WithLabelValues("topic").Inc()
	return apierr.Errorf(apierr.CodePermissionDenied, "key %q may not use topic %q", ri.key.Label(), schema.Truncate(topic))
}

// topicFilter returns the predicate a topic list keeps records by: only
// the topics the request's key may see. Nil keeps all. The list's pager
// applies it while it merges, so pages stay full and cursors stay right.
func (a *API) topicFilter(c echo.Context) func(storage.Record) bool {
	ri := infoOf(c)
	if ri == nil || !ri.key.Scoped() {
		return nil
	}
	k := ri.key
	return func(rec storage.Record) bool { return k.TopicAllowed(string(rec.Key)) }
}

// clientIP is the peer's address. X-Forwarded-For is not trusted: any
// client could set it to dodge its rate limit or blame another address.
func clientIP(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}
