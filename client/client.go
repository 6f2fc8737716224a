package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to one Go-KVDB router. It is safe for concurrent use.
type Client struct {
	base   string // "http://host:port", no trailing slash
	hc     *http.Client
	apiKey string
	agent  string
}

// Option configures New.
type Option func(*Client)

// WithAPIKey sends key as "Authorization: Bearer <key>" on every request.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithHTTPClient uses hc instead of http.DefaultClient. Set no Timeout on
// it if you stream chats or backups: use the context instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserAgent names the program in the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.agent = ua } }

// New returns a client of the router at baseURL ("http://127.0.0.1:8080";
// a bare "host:port" means http).
func New(baseURL string, opts ...Option) (*Client, error) {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("kvdb client: router URL %q: want http(s)://host:port", baseURL)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), hc: http.DefaultClient, agent: "go-kvdb-client"}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// URL is the router's base URL.
func (c *Client) URL() string { return c.base }

// request is one call: its method, path (escaped), query, body and the
// headers beyond the defaults.
type request struct {
	method string
	path   string
	query  url.Values
	body   io.Reader
	ctype  string
	header http.Header
	// partial: an error answer comes back as the response, for a body
	// that holds more than the error (a bulk write's results).
	partial bool
}

// send sends req and returns the response of a 2xx answer, whose body the
// caller closes; any other answer is an *Error.
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	u := c.base + req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, req.body)
	if err != nil {
		return nil, fmt.Errorf("kvdb %s %s: %w", req.method, req.path, err)
	}
	for k, vs := range req.header {
		hr.Header[k] = vs
	}
	if req.ctype != "" {
		hr.Header.Set("Content-Type", req.ctype)
	}
	if c.apiKey != "" {
		hr.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	hr.Header.Set("User-Agent", c.agent)
	resp, err := c.hc.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("kvdb %s %s: %w", req.method, req.path, ctx.Err())
		}
		return nil, fmt.Errorf("kvdb %s %s: %w: %w", req.method, req.path, ErrUnavailable, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	if req.partial {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, errorOf(resp)
}

// errorOf reads an error answer.
func errorOf(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return errorOfBody(resp, raw)
}

// errorOfBody is errorOf of an answer whose body raw was read already.
func errorOfBody(resp *http.Response, raw []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header)}
	var body struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil). It returns the answer's headers.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, header http.Header) (http.Header, int, error) {
	req := request{method: method, path: path, query: query, header: header}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, 0, fmt.Errorf("kvdb %s %s: encode request: %w", method, path, err)
		}
		req.body, req.ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, 0, fmt.Errorf("kvdb %s %s: decode answer: %w", method, path, err)
		}
	}
	io.Copy(io.Discard, resp.Body) // reuse the connection
	return resp.Header, resp.StatusCode, nil
}

// pathOf joins escaped path segments under /api/v1.
func pathOf(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
