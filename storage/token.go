package storage

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// The storage tier is closed with one shared secret, the cluster token:
// storaged answers every request but GET /healthz and GET /metrics with
// 401 unless it carries "Authorization: Bearer <token>", and the router
// sends it on every call. So nobody reaches the data by talking to a
// storage port directly, past the router's keys and roles.

// RequireToken wraps h so that requests without the token are refused with
// 401 and a JSON error body, before h sees them: a refused request changes
// nothing. The comparison takes the same time whatever the token sent.
func RequireToken(h http.Handler, token string) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (r.URL.Path == pathHealth || r.URL.Path == "/metrics") {
			h.ServeHTTP(w, r)
			return
		}
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvdb-storage"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "this storage daemon needs the cluster token (Authorization: Bearer, KVDB_CLUSTER_TOKEN)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TokenTransport sends the cluster token on every request it carries.
type TokenTransport struct {
	Base  http.RoundTripper // nil: http.DefaultTransport
	Token string
}

// RoundTrip adds the token to a copy of req (a RoundTripper must not
// change the request it is given).
func (t *TokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+t.Token)
	return base.RoundTrip(r)
}
