package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/router"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/storage"
)

// securityFlags are the router's flags about who may call it and how what
// it stores is protected.
type securityFlags struct {
	authFile      *string
	insecure      *bool
	tokenFile     *string
	tlsCert       *string
	tlsKey        *string
	tlsCA         *string
	keyFile       *string
	rateLimit     *int
	maxConcurrent *int
	bodyTimeout   *time.Duration
	auditLog      *string
}

func addSecurityFlags(fs *flag.FlagSet) *securityFlags {
	return &securityFlags{
		authFile:      fs.String("auth-file", "", "API keys (TOML, written by `router keygen`): every /api/v1 and /ollama request then needs Authorization: Bearer <secret>; re-read on SIGHUP"),
		insecure:      fs.Bool("insecure", false, "allow serving the API without -auth-file on a non-loopback -http-addr"),
		tokenFile:     fs.String("cluster-token-file", "", "file whose first line is the storage tier's shared token (default: $"+daemon.TokenEnv+")"),
		tlsCert:       fs.String("tls-cert", "", "PEM certificate (chain) to serve HTTPS with; with -tls-key; re-read on SIGHUP"),
		tlsKey:        fs.String("tls-key", "", "PEM private key of -tls-cert"),
		tlsCA:         fs.String("tls-ca", "", "PEM certificates to trust for https:// storage daemon addresses (default: the system's)"),
		keyFile:       fs.String("encryption-key-file", "", "encryption at rest: one 256-bit key per line in hex; the first seals new writes, all open"),
		rateLimit:     fs.Int("rate-limit", 0, "requests per second (burst the same) per API key, or per client IP when open; the auth file may override it (0: no limit)"),
		maxConcurrent: fs.Int("max-concurrent", 1024, "API requests served at once; beyond, 503 with Retry-After (0: no cap)"),
		bodyTimeout:   fs.Duration("body-timeout", time.Minute, "longest time a request body may take to arrive (answers, streamed chats included, are not bounded)"),
		auditLog:      fs.String("audit-log", "", "append one JSON line per mutating request and per refused key to this file (- for stdout); reopened on SIGHUP"),
	}
}

// securitySetup is what the flags loaded: checked, ready to wire.
type securitySetup struct {
	f         *securityFlags
	auth      *authfile.Auth
	token     string
	cert      *daemon.Certificate
	clientTLS *tls.Config
	keyring   *codec.Keyring
	audit     *reopener
	log       *slog.Logger
	addr      string
	// local is set in single-node mode: no storage daemons, so no
	// cluster token to warn about.
	local bool
}

// load checks the flags and reads the files they name; a problem is a
// usage error (exit status 2, one line).
func (f *securityFlags) load(httpAddr string, stdout io.Writer, log *slog.Logger) (*securitySetup, error) {
	s := &securitySetup{f: f}
	switch {
	case *f.rateLimit < 0:
		return nil, daemon.Usagef("-rate-limit %d: must not be negative", *f.rateLimit)
	case *f.maxConcurrent < 0:
		return nil, daemon.Usagef("-max-concurrent %d: must not be negative", *f.maxConcurrent)
	case *f.bodyTimeout <= 0:
		return nil, daemon.Usagef("-body-timeout %s: must be positive", *f.bodyTimeout)
	}
	if *f.authFile != "" {
		a, err := authfile.LoadAuthFile(*f.authFile)
		if err != nil {
			return nil, &daemon.UsageError{Err: err}
		}
		s.auth = a
	} else {
		if !daemon.Loopback(httpAddr) && !*f.insecure {
			return nil, daemon.Usagef("-http-addr %s is not a loopback address and there is no -auth-file: give -auth-file (keys from `router keygen`), or -insecure to serve the API open anyway", httpAddr)
		}
	}
	var err error
	if s.token, err = daemon.ClusterToken(*f.tokenFile); err != nil {
		return nil, err
	}
	if s.cert, err = daemon.TLSFlags(*f.tlsCert, *f.tlsKey); err != nil {
		return nil, err
	}
	if *f.tlsCA != "" {
		pool, err := daemon.CAPool(*f.tlsCA)
		if err != nil {
			return nil, err
		}
		s.clientTLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	if *f.keyFile != "" {
		if s.keyring, err = codec.LoadKeyFile(*f.keyFile); err != nil {
			return nil, &daemon.UsageError{Err: err}
		}
	}
	if *f.auditLog != "" {
		if s.audit, err = openAudit(*f.auditLog, stdout); err != nil {
			return nil, &daemon.UsageError{Err: err}
		}
	}

	s.log, s.addr = log, httpAddr
	return s, nil
}

// announce logs how the router is protected, loudly when it is not. It
// runs when the router starts serving, so a bad flag or config file still
// fails with one line.
func (s *securitySetup) announce() {
	log := s.log
	if s.auth == nil {
		log.Warn("!!! NO AUTHENTICATION: the API is open to anyone who can reach " + s.addr + "; give -auth-file with keys from `router keygen` !!!")
	} else {
		log.Info("API keys loaded", "auth_file", *s.f.authFile, "keys", s.auth.Len())
	}
	if s.token == "" && !s.local {
		log.Warn("no cluster token: storage daemons must be reachable by this router only (loopback, or storaged -insecure)")
	}
	if s.keyring != nil {
		log.Info("encryption at rest", "key", s.keyring.CurrentID(), "keys", s.keyring.Len())
	}
}

// configure sets the router's security config.
func (s *securitySetup) configure(cfg *router.Config) {
	cfg.Security = router.SecurityConfig{
		Auth:          s.auth,
		RateLimit:     *s.f.rateLimit,
		MaxConcurrent: *s.f.maxConcurrent,
		BodyTimeout:   *s.f.bodyTimeout,
		Keyring:       s.keyring,
	}
	if s.audit != nil {
		cfg.Security.Audit = s.audit
	}
}

// storageClient is the HTTP client shared by every storage.Client: one
// pooled transport, the cluster token on every request, and the -tls-ca
// roots for https:// addresses.
func (s *securitySetup) storageClient() *http.Client {
	tr := storage.NewTransport()
	if s.clientTLS != nil {
		tr.TLSClientConfig = s.clientTLS
	}
	var rt http.RoundTripper = tr
	if s.token != "" {
		rt = &storage.TokenTransport{Base: tr, Token: s.token}
	}
	return &http.Client{Transport: rt}
}

// listener serves TLS on ln when -tls-cert is given. The router calls it
// as it starts serving: the moment to say how it is protected.
func (s *securitySetup) listener(ln net.Listener) net.Listener {
	s.announce()
	if s.cert == nil {
		return ln
	}
	return tls.NewListener(ln, s.cert.ServerConfig())
}

// reload re-reads the auth file and the TLS key pair, and reopens the
// audit log (after logrotate moved it): SIGHUP. A file that does not load
// is reported and the old one stays in force.
func (s *securitySetup) reload(rt *router.Router, log *slog.Logger) {
	if s.auth != nil {
		if a, err := authfile.LoadAuthFile(*s.f.authFile); err != nil {
			log.Error("auth file reload refused: the previous keys stay in force", "err", err)
		} else {
			rt.SetAuth(a)
			log.Info("auth file reloaded", "keys", a.Len())
		}
	}
	if s.cert != nil {
		if err := s.cert.Reload(); err != nil {
			log.Error("TLS key pair reload refused: the previous one stays in force", "err", err)
		}
	}
	if s.audit != nil {
		if err := s.audit.reopen(); err != nil {
			log.Error("audit log reopen failed", "err", err)
		}
	}
}

func (s *securitySetup) close() {
	if s.audit != nil {
		s.audit.close()
	}
}

// reopener is the audit log file, reopened on SIGHUP.
type reopener struct {
	path string // "" for stdout

	mu sync.Mutex // guards w
	w  io.Writer
}

func openAudit(path string, stdout io.Writer) (*reopener, error) {
	if path == "-" {
		return &reopener{w: stdout}, nil
	}
	r := &reopener{path: path}
	if err := r.reopen(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reopener) reopen() error {
	if r.path == "" {
		return nil
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	r.mu.Lock()
	old := r.w
	r.w = f
	r.mu.Unlock()
	if c, ok := old.(io.Closer); ok {
		c.Close()
	}
	return nil
}

func (r *reopener) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Write(p)
}

func (r *reopener) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.w.(io.Closer); ok && r.path != "" {
		c.Close()
	}
}
