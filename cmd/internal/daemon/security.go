package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
)

// TokenEnv is the environment variable that carries the cluster token when
// -cluster-token-file is not given.
const TokenEnv = "KVDB_CLUSTER_TOKEN"

// ClusterToken returns the token the storage tier is closed with: the
// first line of file when one is named, else $KVDB_CLUSTER_TOKEN, else "".
// A token shorter than 16 bytes is refused: it would be guessable.
func ClusterToken(file string) (string, error) {
	tok, from := os.Getenv(TokenEnv), TokenEnv
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return "", Usagef("-cluster-token-file: %v", err)
		}
		tok, _, _ = strings.Cut(string(raw), "\n")
		from = "-cluster-token-file " + file
	}
	tok = strings.TrimSpace(tok)
	if tok != "" && len(tok) < 16 {
		return "", Usagef("%s: the cluster token has %d bytes, want at least 16 (e.g. openssl rand -hex 32)", from, len(tok))
	}
	return tok, nil
}

// Loopback reports whether a listen address (host:port) only accepts
// connections from this machine. An empty host, 0.0.0.0 and :: listen on
// every interface; a name other than localhost may resolve anywhere.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Certificate is a TLS key pair loaded from files that Reload reads again
// (on SIGHUP), so a renewed certificate is served without a restart.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate (chain) and its key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again; on error the old pair stays in use.
func (c *Certificate) Reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("TLS key pair %s, %s: %w", c.certFile, c.keyFile, err)
	}
	c.cur.Store(&pair)
	return nil
}

// ServerConfig is a TLS 1.2+ server configuration serving c.
func (c *Certificate) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// TLSFlags checks a -tls-cert / -tls-key pair: both or neither.
func TLSFlags(cert, key string) (*Certificate, error) {
	switch {
	case cert == "" && key == "":
		return nil, nil
	case cert == "" || key == "":
		return nil, Usagef("-tls-cert and -tls-key go together")
	}
	c, err := LoadCertificate(cert, key)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	return c, nil
}

// CAPool reads PEM certificates that clients trust (-tls-ca).
func CAPool(file string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, Usagef("-tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, Usagef("-tls-ca %s: no PEM certificate in it", file)
	}
	return pool, nil
}
