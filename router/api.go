package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/hlc"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/labstack/echo/v4"
)

// Cache keys: one letter for the kind, then the storage key.
func topicCacheKey(topic string) string        { return "t" + topic }
func contextCacheKey(storageKey string) string { return "c" + storageKey }

func (r *Router) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = r.handleError
	e.Use(r.m.HTTP.Echo())

	e.GET("/healthz", func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, []byte(`{"status":"ok"}`))
	})
	e.GET("/readyz", r.ready)
	r.openAPIRoutes(e)
	if r.cfg.MetricsHandler != nil {
		e.GET("/metrics", echo.WrapHandler(r.cfg.MetricsHandler))
	}

	v1 := e.Group("/api/v1")
	r.secure(e, v1)
	v1.GET("/cluster", r.clusterStatus)
	v1.POST("/admin/repair", r.adminRepair)
	v1.POST("/admin/reload", r.adminReload)
	r.backupRoutes(v1)
	r.adminRoutes(v1)
	v1.POST("/topics", r.createTopic)
	v1.GET("/topics", r.listTopics)
	v1.GET("/topics/:topic", r.getTopic)
	v1.DELETE("/topics/:topic", r.deleteTopic)
	v1.POST("/topics/:topic/contexts", r.createContext)
	v1.GET("/topics/:topic/contexts", r.listContexts)
	v1.GET("/topics/:topic/contexts/:id", r.getContext)
	v1.PUT("/topics/:topic/contexts/:id", r.putContext)
	v1.DELETE("/topics/:topic/contexts/:id", r.deleteContext)
	r.llmRoutes(e, v1)
	return e
}

// errorBody is the API's one error Shape.
type errorBody struct {
	Error struct {
		Code    apierr.Code `json:"code"`
		Message string      `json:"message"`
	} `json:"error"`
}

// handleError writes every error as {"error":{"code","message"}}, and logs
// server-side failures (5xx), not client mistakes.
func (r *Router) handleError(err error, c echo.Context) {
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
		r.log.Debug("request abandoned by the client", "method", c.Request().Method, "path", c.Request().URL.Path)
	case status >= 500:
		r.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", status, "err", apiErr.Error())
	}
	var body errorBody
	body.Error.Code, body.Error.Message = apiErr.Code, apiErr.Message
	if c.Request().Method == http.MethodHead {
		c.NoContent(status)
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
func (r *Router) readJSON(c echo.Context, buf *bytes.Buffer) error {
	req := c.Request()
	ct := req.Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return apierr.Errorf(apierr.CodeUnsupportedMediaType, "Content-Type must be application/json, got %q", schema.Truncate(ct))
	}
	if req.ContentLength > r.cfg.MaxBodyBytes {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "request body of %d bytes exceeds the limit of %d", req.ContentLength, r.cfg.MaxBodyBytes)
	}
	_, err = buf.ReadFrom(http.MaxBytesReader(c.Response(), req.Body, r.cfg.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return apierr.Errorf(apierr.CodePayloadTooLarge, "request body exceeds the limit of %d bytes", r.cfg.MaxBodyBytes)
	}
	if err != nil {
		return apierr.Errorf(apierr.CodeInvalidArgument, "read request body: %v", err)
	}
	return nil
}

func withBody[T any](r *Router, c echo.Context, fn func([]byte) (T, error)) (T, error) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bodyPool.Put(buf)
		}
	}()
	if err := r.readJSON(c, buf); err != nil {
		var zero T
		return zero, err
	}
	return fn(buf.Bytes())
}

func etag(v uint64) string { return `"` + strconv.FormatUint(v, 16) + `"` }

// parseETag accepts a strong or weak entity tag, quoted or not.
func parseETag(s string) (uint64, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	s = strings.Trim(s, `"`)
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil && v != 0
}

// precondition turns If-Match / If-None-Match into a storage condition.
func precondition(req *http.Request, def storage.Cond) (storage.Cond, uint64, error) {
	if m := req.Header.Get("If-Match"); m != "" {
		if strings.TrimSpace(m) == "*" {
			return storage.CondExists, 0, nil
		}
		v, ok := parseETag(m)
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

func (r *Router) createTopic(c echo.Context) error {
	req, err := withBody(r, c, func(b []byte) (schema.TopicRequest, error) {
		var t schema.TopicRequest
		if err := schema.DecodeJSON(b, &t); err != nil {
			return t, err
		}
		return t, t.Validate()
	})
	if err != nil {
		return err
	}
	if err := r.allowTopic(c, req.Name); err != nil {
		return err
	}
	t := schema.Topic{Name: req.Name, Description: req.Description, MaxTokens: req.MaxTokens, CreatedAt: time.Now().UTC().Format(time.RFC3339Nano), DefaultTTLSeconds: req.DefaultTTLSeconds}
	body := schema.TopicJSON(&t)
	res, v, err := r.coord.Write(c.Request().Context(), t.Name, schema.BucketTopics, []byte(t.Name), false, body, storage.CondAbsent, 0)
	if err != nil {
		return err
	}
	if res.Outcome == storage.Conflict {
		return apierr.Errorf(apierr.CodeAlreadyExists, "topic %q already exists", t.Name)
	}
	r.cache.Put(topicCacheKey(t.Name), v, false, body)
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/topics/"+t.Name)
	return c.JSONBlob(http.StatusCreated, body)
}

// readTopic returns a topic's stored JSON and version, from the cache when
// it holds it. A missing or deleted topic is a not_found error.
func (r *Router) readTopic(c echo.Context, name string) ([]byte, uint64, error) {
	ck := topicCacheKey(name)
	if v, tomb, body, ok := r.cache.Get(ck); ok {
		if tomb {
			return nil, v, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
		}
		return body, v, nil
	}
	rec, err := r.coord.Get(c.Request().Context(), name, schema.BucketTopics, []byte(name))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	if err != nil {
		return nil, 0, err
	}
	r.cache.Put(ck, rec.Version, rec.Tombstone, rec.Value)
	if rec.Tombstone {
		return nil, rec.Version, apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	return rec.Value, rec.Version, nil
}

func (r *Router) getTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	body, _, err := r.readTopic(c, name)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, body)
}

// deleteTopic tombstones the topic's contexts on every shard, then the
// topic. If a shard is down nothing is reported as done: the client gets 503
// and may retry, which finishes the job (every step is idempotent).
func (r *Router) deleteTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	rec, err := r.coord.Get(ctx, name, schema.BucketTopics, []byte(name))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Tombstone) {
		return apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	if err != nil {
		return err
	}
	v := r.clock.Next()
	prefix := []byte(name + schema.KeySep)
	if err := r.coord.FanOutAll(ctx, 10*r.cfg.ShardTimeout, func(ctx context.Context, n *placement.Node) error {
		// A topic's contexts, their vectors and their pending embeddings.
		for _, bucket := range []string{schema.BucketContexts, schema.BucketVectors, schema.BucketEmbedPending} {
			if _, err := n.Shard.DeletePrefix(ctx, bucket, prefix, v); err != nil {
				return apierr.FromStorage("delete "+bucket+" on shard "+n.Name, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	r.deletedTopics.Store(name, v)
	res, tv, err := r.coord.Write(ctx, name, schema.BucketTopics, []byte(name), true, nil, storage.CondExists, 0)
	if err != nil {
		return err
	}
	r.cache.Put(topicCacheKey(name), tv, true, nil)
	r.pruneDeletedTopics()
	if res.Outcome == storage.Conflict {
		return apierr.Errorf(apierr.CodeNotFound, "topic %q not found", name)
	}
	return c.NoContent(http.StatusNoContent)
}

// pruneDeletedTopics forgets deletions the cache can no longer hold entries
// from.
func (r *Router) pruneDeletedTopics() {
	horizon := time.Now().Add(-2 * r.cfg.CacheTTL)
	r.deletedTopics.Range(func(k, v any) bool {
		if hlc.Time(v.(uint64)).Before(horizon) {
			r.deletedTopics.Delete(k)
		}
		return true
	})
}

// maskedByTopicDelete reports whether a cached context of topic at version
// predates the topic's deletion.
func (r *Router) maskedByTopicDelete(topic string, version uint64) bool {
	v, ok := r.deletedTopics.Load(topic)
	return ok && version < v.(uint64)
}

// ---- contexts ----

func (r *Router) getContext(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	key := schema.ContextKey(topic, id)
	ck := contextCacheKey(key)
	if v, tomb, body, ok := r.cache.Get(ck); ok && !r.maskedByTopicDelete(topic, v) {
		r.m.CacheHits.Inc()
		if tomb || codec.RenderedExpired(body) {
			return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
		}
		return writeDocument(c, http.StatusOK, v, "hit", body)
	}
	r.m.CacheMisses.Inc()
	rec, err := r.coord.Get(c.Request().Context(), schema.Placement(topic, id), schema.BucketContexts, []byte(key))
	if errors.Is(err, storage.ErrNotFound) {
		return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
	}
	if err != nil {
		return err
	}
	if rec.Tombstone {
		r.cache.Put(ck, rec.Version, true, nil)
		return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
	}
	if codec.StoredExpired(rec.Value, time.Now()) {
		// Expired for good at this version: cached as deleted.
		r.cache.Put(ck, rec.Version, true, nil)
		return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
	}
	body, err := r.codec.AppendDocumentJSON(nil, rec.Value, true)
	if err != nil {
		return &apierr.Error{Code: apierr.CodeInternal, Message: fmt.Sprintf("context %q in topic %q cannot be decoded", id, topic), Err: err}
	}
	r.cache.Put(ck, rec.Version, false, body)
	return writeDocument(c, http.StatusOK, rec.Version, "miss", body)
}

func writeDocument(c echo.Context, status int, version uint64, cache string, body []byte) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set("ETag", etag(version))
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

func (r *Router) createContext(c echo.Context) error {
	topic, err := topicParam(c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	doc, err := withBody(r, c, func(b []byte) (*schema.Document, error) { return schema.DecodeDocument(b, now) })
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
	return r.storeContext(c, topic, doc, cond, match, func(res storage.Result) error {
		if !hasPrecondition {
			return apierr.Errorf(apierr.CodeAlreadyExists, "context %q already exists in topic %q", doc.Metadata.ID, topic)
		}
		return preconditionFailed(topic, doc.Metadata.ID, cond, match, res)
	})
}

func (r *Router) putContext(c echo.Context) error {
	topic, id, err := contextParams(c)
	if err != nil {
		return err
	}
	doc, err := withBody(r, c, func(b []byte) (*schema.Document, error) { return schema.DecodeDocument(b, time.Now().UTC()) })
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
	return r.storeContext(c, topic, doc, cond, match, func(res storage.Result) error {
		return preconditionFailed(topic, id, cond, match, res)
	})
}

// preconditionFailed explains why a conditional write did not apply.
func preconditionFailed(topic, id string, cond storage.Cond, match uint64, res storage.Result) error {
	switch {
	case cond == storage.CondAbsent:
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q already exists in topic %q", id, topic)
	case !res.PrevLive():
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q does not exist in topic %q", id, topic)
	default:
		return apierr.Errorf(apierr.CodeFailedPrecondition, "context %q is at version %s, not %s", id, etag(res.PrevVersion), etag(match))
	}
}

// storeContext writes a validated document under cond and answers 201 for
// a new context, 200 for a replaced one; a failed condition answers what
// onConflict returns.
func (r *Router) storeContext(c echo.Context, topic string, doc *schema.Document, cond storage.Cond, match uint64, onConflict func(storage.Result) error) error {
	tbody, _, err := r.readTopic(c, topic)
	if err != nil {
		return err
	}
	schema.ApplyTopicTTL(doc, tbody, time.Now())
	r.embedForWrite(c.Request().Context(), doc)
	value, body, err := r.codec.EncodeRendered(doc)
	if err != nil {
		return &apierr.Error{Code: apierr.CodeInternal, Message: "encode context", Err: err}
	}
	id := doc.Metadata.ID
	key := schema.ContextKey(topic, id)
	res, v, err := r.coord.Write(c.Request().Context(), schema.Placement(topic, id), schema.BucketContexts, []byte(key), false, value, cond, match)
	if err == nil && res.Outcome == storage.Conflict && cond == storage.CondAbsent {
		res, v, err = r.replaceExpired(c.Request().Context(), topic, id, value, res)
	}
	if err != nil {
		return err
	}
	if res.Outcome == storage.Conflict {
		return onConflict(res)
	}
	r.afterContextWrite(c.Request().Context(), topic, doc, v, res.PrevLive())
	r.cache.Put(contextCacheKey(key), v, false, body)
	status := http.StatusOK
	if !res.PrevLive() {
		status = http.StatusCreated
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/topics/"+topic+"/contexts/"+id)
	}
	return writeDocument(c, status, v, "", body)
}

func (r *Router) deleteContext(c echo.Context) error {
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
	key := schema.ContextKey(topic, id)
	res, v, err := r.coord.Write(c.Request().Context(), schema.Placement(topic, id), schema.BucketContexts, []byte(key), true, nil, cond, match)
	if err != nil {
		return err
	}
	if res.Outcome == storage.Conflict {
		if !res.PrevLive() {
			return apierr.Errorf(apierr.CodeNotFound, "context %q not found in topic %q", id, topic)
		}
		return preconditionFailed(topic, id, cond, match, res)
	}
	r.cache.Put(contextCacheKey(key), v, true, nil)
	r.afterContextDelete(c.Request().Context(), topic, id, v)
	return c.NoContent(http.StatusNoContent)
}
