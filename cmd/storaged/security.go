package main

import (
	"crypto/tls"
	"flag"
	"log/slog"
	"net"
	"net/http"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/storage"
)

// securityFlags close the storage tier: a shared token every data request
// must carry, and TLS.
type securityFlags struct {
	insecure  *bool
	tokenFile *string
	tlsCert   *string
	tlsKey    *string
}

func addSecurityFlags(fs *flag.FlagSet) *securityFlags {
	return &securityFlags{
		insecure:  fs.Bool("insecure", false, "allow listening on a non-loopback address without a cluster token"),
		tokenFile: fs.String("cluster-token-file", "", "file whose first line is the token every request but /healthz and /metrics must carry (default: $"+daemon.TokenEnv+")"),
		tlsCert:   fs.String("tls-cert", "", "PEM certificate (chain) to serve HTTPS with; with -tls-key (the router then needs https:// addresses and -tls-ca)"),
		tlsKey:    fs.String("tls-key", "", "PEM private key of -tls-cert"),
	}
}

type securitySetup struct {
	token string
	cert  *daemon.Certificate
	log   *slog.Logger
	addr  string
}

// load checks the flags: without a token, a non-loopback address needs
// -insecure, since anyone reaching the port could read and change every
// record past the router's keys.
func (f *securityFlags) load(addr string, log *slog.Logger) (*securitySetup, error) {
	s := &securitySetup{}
	var err error
	if s.token, err = daemon.ClusterToken(*f.tokenFile); err != nil {
		return nil, err
	}
	if s.cert, err = daemon.TLSFlags(*f.tlsCert, *f.tlsKey); err != nil {
		return nil, err
	}
	if s.token == "" {
		if !daemon.Loopback(addr) && !*f.insecure {
			return nil, daemon.Usagef("-http-addr %s is not a loopback address and there is no cluster token: set %s or -cluster-token-file (the same on every router), or give -insecure", addr, daemon.TokenEnv)
		}
	}
	s.log, s.addr = log, addr
	return s, nil
}

// handler closes h with the token, when there is one.
func (s *securitySetup) handler(h http.Handler) http.Handler {
	if s.token == "" {
		return h
	}
	return storage.RequireToken(h, s.token)
}

// listener serves TLS on ln when -tls-cert is given. It runs as the
// daemon starts serving, so it says then when the shard is open.
func (s *securitySetup) listener(ln net.Listener) net.Listener {
	if s.token == "" {
		s.log.Warn("no cluster token: anyone who reaches " + s.addr + " can read and change this shard")
	}
	if s.cert == nil {
		return ln
	}
	cfg := s.cert.ServerConfig()
	cfg.MinVersion = tls.VersionTLS12
	return tls.NewListener(ln, cfg)
}
