package mcpserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/llm"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Config wires the server. Every field is required.
type Config struct {
	Docs *docstore.Store
	LLM  *llm.Service
	// MaxBodyBytes caps a request body, as for the REST API (413 beyond).
	MaxBodyBytes int64
	// Version is reported to clients in the initialize answer.
	Version string
	Metrics *metrics.MCP
	Log     *slog.Logger
}

// Server is the MCP server: one mcp.Server with its tools, behind one
// stateless streamable HTTP handler, both built once.
type Server struct {
	cfg     Config
	docs    *docstore.Store
	llm     *llm.Service
	m       *metrics.MCP
	handler http.Handler
}

// New builds the server and registers its tools.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, docs: cfg.Docs, llm: cfg.LLM, m: cfg.Metrics}
	ms := mcp.NewServer(&mcp.Implementation{Name: "go-kvdb", Title: "Go-KVDB memory", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "Go-KVDB is a key-value database of contexts (documents and conversations) grouped in topics. " +
			"Store what you want to remember with store_context or append_messages, find it again with search_memory.",
	})
	s.addTools(ms)
	s.handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return ms }, &mcp.StreamableHTTPOptions{
		// Stateless: no session lives in one router, so any router behind
		// a load balancer answers any request.
		Stateless:           true,
		JSONResponse:        true,
		MaxRequestBodyBytes: cfg.MaxBodyBytes,
		Logger:              cfg.Log,
	})
	return s
}

// Handler serves MCP over streamable HTTP. Mount it behind the API's
// security middleware, which authenticates the request and puts its
// Caller in the request's context (WithCaller).
func (s *Server) Handler() http.Handler { return s.handler }

// Call is one tool call, as the Caller's Record hook sees it.
type Call struct {
	Tool      string
	Topic, ID string // what the call named, if anything
	Mutating  bool   // the tool changes data (store, append, delete)
	// Status is the REST API's status for the outcome: 200, or the
	// status of the API error the call failed with.
	Status int
}

// Caller is who makes the requests of one HTTP request. The zero value
// (no key) is the API running open, without an auth file: every tool is
// allowed, as every REST route is.
type Caller struct {
	Key *authfile.Key
	// Record, when set, sees every tool call once it is decided: the audit
	// trail and the auth-failure metric live above this package.
	Record func(Call)
	// Denied, when set, is told why the key was refused ("role", "topic").
	Denied func(reason string)
}

type callerKey struct{}

// WithCaller returns ctx carrying c, for the tools of the MCP request
// served under ctx.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// allow checks the caller's role against need, and its topic patterns
// against topic (when the tool names one).
func (c Caller) allow(need authfile.Access, topic string) error {
	k := c.Key
	if k == nil {
		return nil // running open
	}
	if !k.Role().Allows(need) {
		c.denied("role")
		return apierr.Errorf(apierr.CodePermissionDenied, "key %q (role %s) may not %s here", k.Label(), k.Role(), need)
	}
	if topic != "" && !k.TopicAllowed(topic) {
		c.denied("topic")
		return apierr.Errorf(apierr.CodePermissionDenied, "key %q may not use topic %q", k.Label(), schema.Truncate(topic))
	}
	return nil
}

func (c Caller) denied(reason string) {
	if c.Denied != nil {
		c.Denied(reason)
	}
}

// toolError is the text of a failed call's tool error: the API error's
// code and message, never a server-side cause (that is logged).
func (s *Server) toolError(tool string, err error) (*apierr.Error, error) {
	var apiErr *apierr.Error
	if !errors.As(err, &apiErr) {
		apiErr = &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
	}
	if apiErr.Status() >= 500 {
		s.cfg.Log.Error("mcp tool failed", "tool", tool, "err", apiErr.Error())
	}
	return apiErr, errors.New(string(apiErr.Code) + ": " + apiErr.Message)
}
