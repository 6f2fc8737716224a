package llmbridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The providers Open knows, as Config.Provider and Kind name them.
const (
	ProviderOllama = "ollama"
	ProviderOpenAI = "openai"
)

// Provider is what the router asks of a model server, whichever API it
// speaks. Client (Ollama) and OpenAI (any OpenAI-compatible server)
// implement it; Open picks one from a Config.
type Provider interface {
	// Embed embeds each of input with model: one vector per input, in
	// order.
	Embed(ctx context.Context, model string, input []string) (Embedding, error)
	// Chat streams the model's answer to req: fn sees each piece, the
	// last one with Done set and the token counts.
	Chat(ctx context.Context, req ChatRequest, fn func(ChatChunk) error) error
	// Models lists the names of the models the server offers, as it
	// names them (Ollama adds ":latest" to a name without a tag).
	Models(ctx context.Context) ([]string, error)
	// Do relays a raw request and returns the server's answer whatever its
	// status. path is relative to URL(): "/api/chat" for Ollama,
	// "/chat/completions" for an OpenAI base URL ending in /v1. The
	// caller's credentials in header are never relayed.
	Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error)
	// URL is the server's base URL; error messages name it.
	URL() string
	// Kind is ProviderOllama or ProviderOpenAI: the API Do speaks.
	Kind() string
}

var (
	_ Provider = (*Client)(nil)
	_ Provider = (*OpenAI)(nil)
)

// Config picks and configures a provider for Open.
type Config struct {
	// Provider is ProviderOllama or ProviderOpenAI; empty means Ollama.
	Provider string
	// URL is the server: for Ollama its root ("http://host:11434"; empty
	// means DefaultURL()), for OpenAI the base URL ending in /v1
	// ("https://api.openai.com/v1", "http://127.0.0.1:8000/v1"), required.
	URL string
	// APIKey is sent as "Authorization: Bearer" to an OpenAI-compatible
	// server; empty sends none (local servers need none). Ollama takes
	// none.
	APIKey string
	// Options tune the HTTP client.
	Options Options
}

// Open returns the provider cfg describes, or an error saying what in cfg
// is wrong and what is expected.
func Open(cfg Config) (Provider, error) {
	switch cfg.Provider {
	case "", ProviderOllama:
		if cfg.APIKey != "" {
			return nil, fmt.Errorf("llm provider ollama: an API key is only sent to the openai provider; Ollama takes none")
		}
		raw := cfg.URL
		if raw == "" {
			raw = DefaultURL()
		}
		if u, err := url.Parse(strings.TrimRight(raw, "/")); err == nil && strings.HasSuffix(u.Path, "/v1") {
			return nil, fmt.Errorf("llm provider ollama: url %q is an OpenAI-compatible base URL: give Ollama's root URL, or use the openai provider for its /v1 API", raw)
		}
		c, err := New(raw, cfg.Options)
		if err != nil {
			return nil, fmt.Errorf("llm provider ollama: %w", err)
		}
		return c, nil
	case ProviderOpenAI:
		if cfg.URL == "" {
			return nil, fmt.Errorf("llm provider openai: a base URL ending in /v1 is required, like https://api.openai.com/v1 or http://127.0.0.1:11434/v1")
		}
		c, err := NewOpenAI(cfg.URL, cfg.APIKey, cfg.Options)
		if err != nil {
			return nil, fmt.Errorf("llm provider openai: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("llm provider %q: want %q or %q", cfg.Provider, ProviderOllama, ProviderOpenAI)
}

// ReadKeyFile reads an API key from the first line of the file at path,
// without the spaces around it. Errors name the file, never its content.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	key := strings.TrimSpace(line)
	if key == "" {
		return "", fmt.Errorf("api key file %s: the first line is empty, want the key", path)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("api key file %s: %w", path, err)
	}
	return key, nil
}

// checkKey refuses a key that cannot go in a header as it is. The key is
// not quoted: errors must never carry it.
func checkKey(key string) error {
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("the API key has a space, control or non-ASCII character at byte %d", i)
		}
	}
	return nil
}

// defaultHTTPClient is the client of a provider given none: a 2-second
// dial timeout and no overall timeout (answers stream for as long as the
// model writes; callers bound them with their context), and a pool large
// enough that concurrent calls reuse connections.
func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// credentialHeaders are never relayed: on a request to the router they are
// the caller's credentials (its Go-KVDB API key, a session cookie), which
// the model server must never see. A provider authenticates with its own
// key only.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key"}

// relayRequest builds the request Do sends: path (with any query) under
// base, the caller's headers without its credentials. A path with a "."
// or ".." segment is refused, so a relayed path cannot climb out of base
// (out of /v1, for an OpenAI base URL).
func relayRequest(ctx context.Context, base *url.URL, method, path string, header http.Header, body io.Reader) (*http.Request, error) {
	p, query, _ := strings.Cut(path, "?")
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("request to %s: path %q has a dot segment: %w", base, p, ErrInvalid)
		}
	}
	u := base.JoinPath(p)
	u.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("request to %s: %v: %w", base, err, ErrInvalid)
	}
	for k, vs := range header {
		if !isCredential(k) {
			req.Header[k] = vs
		}
	}
	return req, nil
}

func isCredential(k string) bool {
	for _, c := range credentialHeaders {
		if strings.EqualFold(k, c) {
			return true
		}
	}
	return false
}
