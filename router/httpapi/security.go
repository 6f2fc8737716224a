package httpapi

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// SecurityConfig is who may call the router, how often, what it records,
// and how it seals what it stores. The zero value runs the API open, with
// no limits but a one-minute body deadline, no audit and no encryption.
type SecurityConfig struct {
	// Auth holds the API keys every /api/v1, /ollama and /openai request must carry
	// (Authorization: Bearer <secret>). Nil runs the API open. Swap it at
	// run time with Router.SetAuth.
	Auth *authfile.Auth
	// RateLimit is the requests per second (burst the same) allowed to each
	// key, or to each client IP when the API runs open; the auth file may
	// override it per role and per key. Zero: no limit.
	RateLimit int
	// MaxConcurrent caps the API requests served at once; beyond it the
	// router answers 503 unavailable with Retry-After at once (the router
	// is overloaded: no one client is at fault, so not 429). Zero: no cap.
	MaxConcurrent int
	// BodyTimeout bounds how long a request body may take to arrive, so a
	// client that trickles its body cannot hold a connection. It applies
	// to the body only, never to the answer, so streamed chats run as
	// long as they need. Zero means one minute; negative, no bound.
	BodyTimeout time.Duration
	// Audit receives one JSON line per mutating request and per refused
	// key (see audit.go). Nil: no audit trail.
	Audit io.Writer
	// Keyring seals every value before it leaves the router (AES-256-GCM,
	// see crypto.go). Nil: values are stored as they are.
	Keyring *codec.Keyring
}

// security is the router's gatekeeping state.
type security struct {
	cfg         SecurityConfig
	classify    func(echo.Context) (need authfile.Access, topic, id string, scoped bool) // the route table's (API.classify)
	auth        atomic.Pointer[authfile.Auth]                                            // nil: open
	limits      *limiters
	sem         chan struct{} // nil: no concurrency cap
	audit       *auditLog     // nil: no trail
	bodyTimeout time.Duration

	authFailures *prometheus.CounterVec
	rejected     *prometheus.CounterVec
}

func newSecurity(cfg SecurityConfig, reg prometheus.Registerer, log *slog.Logger) *security {
	s := &security{
		cfg:         cfg,
		limits:      newLimiters(defaultMaxLimiters, limiterIdle),
		bodyTimeout: cfg.BodyTimeout,
	}
	if s.bodyTimeout == 0 {
		s.bodyTimeout = time.Minute
	}
	if cfg.Auth != nil {
		s.auth.Store(cfg.Auth)
	}
	if cfg.MaxConcurrent > 0 {
		s.sem = make(chan struct{}, cfg.MaxConcurrent)
	}
	if cfg.Audit != nil {
		s.audit = &auditLog{w: cfg.Audit, log: log}
	}
	m := metrics.NewSecurity(reg)
	s.authFailures, s.rejected = m.AuthFailures, m.Rejected
	return s
}

// SetAuth swaps the API keys (a reloaded auth file). A nil Auth is
// ignored: a router started with keys never opens up, and one started
// open stays open.
func (a *API) SetAuth(auth *authfile.Auth) {
	if auth == nil || a.sec.auth.Load() == nil {
		return
	}
	a.sec.auth.Store(auth)
}

// middleware runs, in order, for every request to a guarded path: a
// request id, the audit hook, the concurrency cap, authentication,
// authorization, the rate limit and the body deadline. /healthz, /readyz
// and /metrics only get a request id.
func (s *security) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		rid := requestID(req.Header.Get(echo.HeaderXRequestID))
		c.Response().Header().Set(echo.HeaderXRequestID, rid)
		if openPath(req.URL.Path) || !guarded(req.URL.Path) {
			return next(c)
		}
		need, topic, id, scoped := s.classify(c)
		ri := &reqInfo{
			need: need, topic: topic, id: id, scoped: scoped,
			ip: clientIP(req), reqID: rid, mutating: need >= authfile.AccessWrite,
			ollama: len(req.URL.Path) > len(ollamaPrefix) && req.URL.Path[:len(ollamaPrefix)+1] == ollamaPrefix+"/",
			openai: openaiShaped(req.URL.Path),
		}
		c.Set(infoKey, ri)
		if s.audit != nil {
			c.Response().Before(func() { s.audit.record(c, ri, c.Response().Status) })
		}
		if s.sem != nil {
			select {
			case s.sem <- struct{}{}:
				defer func() { <-s.sem }()
			default:
				s.rejected.WithLabelValues("concurrency").Inc()
				c.Response().Header().Set("Retry-After", "1")
				return s.fail(c, ri, apierr.Errorf(apierr.CodeUnavailable, "the router is serving its limit of %d concurrent requests; retry", cap(s.sem)))
			}
		}
		if err := s.authenticate(c, ri); err != nil {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="kvdb"`)
			return s.fail(c, ri, err)
		}
		if err := s.authorize(ri); err != nil {
			return s.fail(c, ri, err)
		}
		who, n := "ip:"+ri.ip, s.cfg.RateLimit
		if a := s.auth.Load(); a != nil && ri.key != nil {
			who, n = "key:"+ri.key.Label(), a.RateFor(ri.key, s.cfg.RateLimit)
		}
		if ok, wait := s.limits.allow(who, n, time.Now()); !ok {
			s.rejected.WithLabelValues("rate_limited").Inc()
			c.Response().Header().Set("Retry-After", retryAfter(wait))
			return s.fail(c, ri, apierr.Errorf(apierr.CodeRateLimited, "more than %d requests per second; retry after %s", n, wait.Round(time.Millisecond)))
		}
		s.limitBody(c)
		return next(c)
	}
}

// fail answers an error from the middleware, in Ollama's Shape on the
// drop-in Ollama endpoint, in OpenAI's on the OpenAI API.
func (s *security) fail(c echo.Context, ri *reqInfo, err *apierr.Error) error {
	if ri.openai {
		return openaiError(c, err.Status(), err.Code, err.Message)
	}
	if ri.ollama {
		return ollamaError(c, err.Status(), err.Message)
	}
	return err
}

// limitBody puts a read deadline on the request's connection while its
// body arrives, and lifts it once the body is read, so a client that
// trickles its body gets an error (the read fails: 400, or the connection
// closes) instead of holding a connection and a concurrency slot. Only the
// body is bounded: the answer is not (no WriteTimeout), so streamed chats
// run as long as they need. (http.Server's ReadTimeout would bound the
// body too, and net/http clears it once the body is read; it lives in the
// server that cmd/internal/daemon builds for storaged as well, while this
// bound is the router's own setting and covers exactly the API's bodies.)
func (s *security) limitBody(c echo.Context) {
	req := c.Request()
	if s.bodyTimeout < 0 || req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return
	}
	rc := http.NewResponseController(c.Response())
	if err := rc.SetReadDeadline(time.Now().Add(s.bodyTimeout)); err != nil {
		return // not a real connection (a test recorder)
	}
	req.Body = &deadlineBody{ReadCloser: req.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
}

// deadlineBody lifts the body's read deadline at its end (or when it is
// closed). The Ollama relay hands the body to another goroutine, so the
// lift is guarded by a sync.Once rather than a flag.
type deadlineBody struct {
	io.ReadCloser
	lift func()
	once sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.lift)
	}
	return n, err
}

func (b *deadlineBody) Close() error {
	b.once.Do(b.lift)
	return b.ReadCloser.Close()
}
