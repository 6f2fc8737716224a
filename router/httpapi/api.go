package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/feed"
	"github.com/go-kvdb/go-kvdb/router/llm"
	"github.com/go-kvdb/go-kvdb/router/maintenance"
	"github.com/go-kvdb/go-kvdb/router/mcpserver"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Config wires the API. Every field but MetricsHandler is required.
type Config struct {
	Cluster *cluster.Cluster
	Docs    *docstore.Store
	LLM     *llm.Service
	Maint   *maintenance.Service
	Codec   *codec.Codec
	Feed    *feed.Feed
	// FeedHeartbeat is how often an idle change feed sends a comment
	// (0: DefaultFeedHeartbeat).
	FeedHeartbeat time.Duration
	// Security configures keys, limits, the audit trail (and names the
	// keyring the maintenance passes seal with).
	Security SecurityConfig
	// MaxBodyBytes caps request bodies (413 beyond).
	MaxBodyBytes int64
	// MetricsHandler serves /metrics; nil leaves the route out.
	MetricsHandler http.Handler
	Metrics        *metrics.Router
	Registry       prometheus.Registerer
	Log            *slog.Logger
}

// API is the HTTP face of the router: the REST API under /api/v1, the
// drop-in Ollama endpoint under /ollama, probes, metrics and the OpenAPI
// description, behind the security middleware.
type API struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics.Router
	cluster *cluster.Cluster
	docs    *docstore.Store
	llm     *llm.Service
	maint   *maintenance.Service
	codec   *codec.Codec
	feed    *feed.Feed
	sec     *security
	mcp     *mcpserver.Server
	echo    *echo.Echo
	access  map[routeKey]entry // the route table by method and path (see classify)

	// streamsDone closes (once, by CloseStreams) when the change feeds
	// must end: the server is shutting down.
	streamsDone chan struct{}
	closeOnce   sync.Once
}

// New builds the API over cfg's parts.
func New(cfg Config) *API {
	a := &API{cfg: cfg, log: cfg.Log, m: cfg.Metrics, cluster: cfg.Cluster, docs: cfg.Docs, llm: cfg.LLM, maint: cfg.Maint, codec: cfg.Codec, feed: cfg.Feed, streamsDone: make(chan struct{})}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = a.handleError
	e.Use(a.m.HTTP.Echo())
	e.Use(a.checkRequest)
	a.sec = newSecurity(cfg.Security, cfg.Registry, cfg.Log)
	a.sec.classify = a.classify
	e.Use(a.sec.middleware)
	a.mcp = mcpserver.New(mcpserver.Config{
		Docs: cfg.Docs, LLM: cfg.LLM, MaxBodyBytes: cfg.MaxBodyBytes, Version: "1",
		Metrics: metrics.NewMCP(cfg.Registry), Log: cfg.Log,
	})

	// Open routes: probes, metrics and the API's description.
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, []byte(`{"status":"ok"}`))
	})
	e.GET("/readyz", a.ready)
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", openAPISpec)
	})
	if cfg.MetricsHandler != nil {
		e.GET("/metrics", echo.WrapHandler(cfg.MetricsHandler))
	}
	a.register(e)
	a.echo = e
	return a
}

// CloseStreams ends every open change feed (each answers its client's
// end of stream); new ones still start. Safe to call more than once.
func (a *API) CloseStreams() { a.closeOnce.Do(func() { close(a.streamsDone) }) }

// Handler is the API's HTTP handler.
func (a *API) Handler() http.Handler { return a.echo }

// ErrorBody is the API's one error shape, {"error":{"code","message"}}.
type ErrorBody struct {
	Error struct {
		Code    apierr.Code `json:"code"`
		Message string      `json:"message"`
	} `json:"error"`
}

// handleError writes every error as {"error":{"code","message"}}, and logs
// server-side failures (5xx), not client mistakes.
func (a *API) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var apiErr *apierr.Error
	var httpErr *echo.HTTPError
	switch {
	case errors.As(err, &apiErr):
	case errors.As(err, &httpErr):
		apiErr = fromEcho(httpErr)
	default:
		apiErr = &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: err}
	}
	status := apiErr.Status()
	switch {
	case status >= 500 && c.Request().Context().Err() != nil:
		// The client went away mid-request: its shard calls were cancelled.
		a.log.Debug("request abandoned by the client", "method", c.Request().Method, "path", c.Request().URL.Path)
	case status >= 500:
		a.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", status, "err", apiErr.Error())
	}
	var body ErrorBody
	body.Error.Code, body.Error.Message = apiErr.Code, apiErr.Message
	if c.Request().Method == http.MethodHead {
		c.NoContent(status)
		return
	}
	if openaiShaped(c.Request().URL.Path) { // OpenAI's clients read their own shape
		openaiError(c, status, apiErr.Code, apiErr.Message)
		return
	}
	c.JSON(status, body)
}

// fromEcho maps echo's own errors (no route, wrong method) to API errors.
func fromEcho(e *echo.HTTPError) *apierr.Error {
	msg := http.StatusText(e.Code)
	if m, ok := e.Message.(string); ok {
		msg = m
	}
	switch e.Code {
	case http.StatusNotFound:
		return apierr.Errorf(apierr.CodeNotFound, "no such route")
	case http.StatusMethodNotAllowed:
		return apierr.Errorf(apierr.CodeMethodNotAllowed, "method not allowed on this route")
	case http.StatusRequestEntityTooLarge:
		return apierr.Errorf(apierr.CodePayloadTooLarge, "%s", msg)
	case http.StatusUnsupportedMediaType:
		return apierr.Errorf(apierr.CodeUnsupportedMediaType, "%s", msg)
	}
	if e.Code >= 400 && e.Code < 500 {
		return apierr.Errorf(apierr.CodeInvalidArgument, "%s", msg)
	}
	return &apierr.Error{Code: apierr.CodeInternal, Message: "internal error", Err: e}
}

// param returns a path parameter, unescaped.
func param(c echo.Context, name string) string {
	v := c.Param(name)
	if strings.IndexByte(v, '%') >= 0 {
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
		return "\x00invalid" // fails validation with the name in the message
	}
	return v
}

func topicParam(c echo.Context) (string, error) {
	t := param(c, "topic")
	return t, schema.CheckName(t)
}

func contextParams(c echo.Context) (topic, id string, err error) {
	if topic, err = topicParam(c); err != nil {
		return "", "", err
	}
	id = param(c, "id")
	return topic, id, schema.CheckID(id)
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readJSON reads a JSON request body of at most MaxBodyBytes into buf.
func (a *API) readJSON(c echo.Context, buf *bytes.Buffer) error {
	req := c.Request()
	ct := req.Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return apierr.Errorf(apierr.CodeUnsupportedMediaType, "Content-Type must be application/json, got %q", schema.Truncate(ct))
	}
	if req.ContentLength > a.cfg.MaxBodyBytes {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "request body of %d bytes exceeds the limit of %d", req.ContentLength, a.cfg.MaxBodyBytes)
	}
	_, err = buf.ReadFrom(http.MaxBytesReader(c.Response(), req.Body, a.cfg.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "request body exceeds the limit of %d bytes", a.cfg.MaxBodyBytes)
	}
	if err != nil {
		return apierr.Errorf(apierr.CodeInvalidArgument, "read request body: %v", err)
	}
	return nil
}

func withBody[T any](a *API, c echo.Context, fn func([]byte) (T, error)) (T, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bodyPool.Put(buf)
		}
	}()
	if err := a.readJSON(c, buf); err != nil {
		var zero T
		return zero, err
	}
	return fn(buf.Bytes())
}

// precondition turns If-Match / If-None-Match into a storage condition.
func precondition(req *http.Request, def storage.Cond) (storage.Cond, uint64, error) {
	if m := req.Header.Get("If-Match"); m != "" {
		if strings.TrimSpace(m) == "*" {
			return storage.CondExists, 0, nil
		}
		v, ok := schema.ParseETag(m)
		if !ok {
			return 0, 0, apierr.Errorf(apierr.CodeInvalidArgument, "If-Match %q is not an entity tag of this API", schema.Truncate(m))
		}
		return storage.CondVersion, v, nil
	}
	if m := req.Header.Get("If-None-Match"); m != "" {
		if strings.TrimSpace(m) != "*" {
			return 0, 0, apierr.Errorf(apierr.CodeInvalidArgument, "If-None-Match supports only *")
		}
		return storage.CondAbsent, 0, nil
	}
	return def, 0, nil
}

// ---- topics ----

func (a *API) createTopic(c echo.Context) error {
	req, err := withBody(a, c, func(b []byte) (schema.TopicRequest, error) {
		var t schema.TopicRequest
		if err := schema.DecodeJSON(b, &t); err != nil {
			return t, err
		}
		return t, t.Validate()
	})
	if err != nil {
		return err
	}
	if err := a.allowTopic(c, req.Name); err != nil {
		return err
	}
	body, err := a.docs.CreateTopic(c.Request().Context(), schema.Topic{Name: req.Name, Description: req.Description, MaxTokens: req.MaxTokens, DefaultTTLSeconds: req.DefaultTTLSeconds})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/topics/"+req.Name)
	return c.JSONBlob(http.StatusCreated, body)
}

func (a *API) getTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	body, _, err := a.docs.Topic(readContext(c), name)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, body)
}

func (a *API) deleteTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	if err := a.docs.DeleteTopic(c.Request().Context(), name); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// ---- contexts ----

func (a *API) getContext(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	body, v, hit, err := a.docs.Context(readContext(c), topic, id)
	if err != nil {
		return err
	}
	cache := "miss"
	if hit {
		cache = "hit"
	}
	return writeDocument(c, http.StatusOK, v, cache, body)
}

// readContext is a read's context: marked to skip the hot cache when the
// client asks for a fresh answer (Cache-Control: no-cache or max-age=0).
func readContext(c echo.Context) context.Context {
	ctx := c.Request().Context()
	for _, v := range c.Request().Header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "no-cache" || d == "max-age=0" {
				return docstore.WithoutCache(ctx)
			}
		}
	}
	return ctx
}

func writeDocument(c echo.Context, status int, version uint64, cache string, body []byte) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set("ETag", schema.ETag(version))
	if cache != "" {
		h.Set("X-Kvdb-Cache", cache)
	}
	c.Response().WriteHeader(status)
	_, err := c.Response().Write(body)
	return err
}

// newID makes a context id that sorts by creation time: 12 hex digits of
// milliseconds, then 16 random hex digits.
func newID(now time.Time) string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%012x%s", now.UnixMilli(), hex.EncodeToString(b[:]))
}

func (a *API) createContext(c echo.Context) error {
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	doc, err := withBody(a, c, func(b []byte) (*schema.Document, error) { return schema.DecodeDocument(b, now) })
	if err != nil {
		return err
	}
	if doc.Metadata.ID == "" {
		doc.Metadata.ID = newID(now)
	}
	cond, match, err := precondition(c.Request(), storage.CondAbsent)
	if err != nil {
		return err
	}
	hasPrecondition := cond != storage.CondAbsent || c.Request().Header.Get("If-None-Match") != ""
	return a.storeContext(c, topic, doc, cond, match, func(res storage.Result) error {
		if !hasPrecondition {
			return apierr.Errorf(apierr.CodeAlreadyExists, "context %q already exists in topic %q", doc.Metadata.ID, topic)
		}
		return docstore.PreconditionFailed(topic, doc.Metadata.ID, cond, match, res)
	})
}

func (a *API) putContext(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	doc, err := withBody(a, c, func(b []byte) (*schema.Document, error) { return schema.DecodeDocument(b, time.Now().UTC()) })
	if err != nil {
		return err
	}
	if doc.Metadata.ID != "" && doc.Metadata.ID != id {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.id\": %q differs from the id %q in the path", schema.Truncate(doc.Metadata.ID), id)
	}
	doc.Metadata.ID = id
	cond, match, err := precondition(c.Request(), storage.CondNone)
	if err != nil {
		return err
	}
	return a.storeContext(c, topic, doc, cond, match, func(res storage.Result) error {
		return docstore.PreconditionFailed(topic, id, cond, match, res)
	})
}

// storeContext writes a validated document under cond and answers 201 for
// a new context, 200 for a replaced one; a failed condition answers what
// onConflict returns.
func (a *API) storeContext(c echo.Context, topic string, doc *schema.Document, cond storage.Cond, match uint64, onConflict func(storage.Result) error) error {
	w, err := a.docs.Put(c.Request().Context(), topic, doc, cond, match, onConflict)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if w.Created {
		status = http.StatusCreated
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/topics/"+topic+"/contexts/"+doc.Metadata.ID)
	}
	return writeDocument(c, status, w.Version, "", w.Body)
}

func (a *API) deleteContext(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	cond, match, err := precondition(c.Request(), storage.CondExists)
	if err != nil {
		return err
	}
	if cond == storage.CondAbsent {
		return apierr.Errorf(apierr.CodeInvalidArgument, "If-None-Match makes no sense on DELETE")
	}
	if err := a.docs.Delete(c.Request().Context(), topic, id, cond, match); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
