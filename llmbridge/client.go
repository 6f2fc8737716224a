package llmbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/envconfig"
)

// DefaultURL is where Ollama listens when nothing says otherwise: OLLAMA_HOST
// as the ollama client itself parses it, else http://127.0.0.1:11434.
func DefaultURL() string { return envconfig.Host().String() }

// Message is one turn of a conversation.
type Message struct {
	Role    string
	Content string
}

// ChatRequest asks a model to continue Messages.
type ChatRequest struct {
	Model    string
	Messages []Message
	// Options are Ollama's model options (temperature, num_ctx, …); nil
	// means the model's defaults. The OpenAI provider maps those OpenAI
	// has (see OpenAI.Chat) and refuses the others.
	Options map[string]any
}

// ChatChunk is one piece of a streamed answer. The last one has Done set and
// carries the token counts the server reports (zero when it reports none).
type ChatChunk struct {
	Content          string
	Done             bool
	DoneReason       string
	Model            string
	PromptTokens     int // Ollama's prompt_eval_count, OpenAI's usage.prompt_tokens
	CompletionTokens int // Ollama's eval_count, OpenAI's usage.completion_tokens
}

// Embedding is the answer to Embed: one vector per input, in order.
type Embedding struct {
	Model        string
	Vectors      [][]float32
	PromptTokens int
}

// Client speaks to one Ollama server. Its methods are safe for concurrent
// use.
type Client struct {
	base *url.URL
	hc   *http.Client
	api  *api.Client
}

// Options tune New. The zero value is usable.
type Options struct {
	// HTTPClient carries the transport; nil means one with a 2-second dial
	// timeout and no overall timeout (answers stream for as long as the
	// model writes; callers bound them with their context).
	HTTPClient *http.Client
}

// New returns a client for the Ollama server at rawURL ("http://host:port",
// or "host:port").
func New(rawURL string, opts Options) (*Client, error) {
	if !strings.Contains(rawURL, "://") {
		rawURL = "http://" + rawURL
	}
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("ollama url %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("ollama url %q: want http://host:port", rawURL)
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &Client{base: u, hc: hc, api: api.NewClient(u, hc)}, nil
}

// URL is the Ollama server's base URL; error messages name it.
func (c *Client) URL() string { return c.base.String() }

// Kind is ProviderOllama: Do speaks Ollama's API.
func (c *Client) Kind() string { return ProviderOllama }

// Models lists the models Ollama has pulled (GET /api/tags), named as it
// names them: "name:tag", with ":latest" for a name pulled without a tag.
func (c *Client) Models(ctx context.Context) ([]string, error) {
	resp, err := c.api.List(ctx)
	if err != nil {
		return nil, c.wrap(ctx, "list models", err)
	}
	names := make([]string, len(resp.Models))
	for i, m := range resp.Models {
		names[i] = m.Name
	}
	return names, nil
}

// Embed embeds each of input with model.
func (c *Client) Embed(ctx context.Context, model string, input []string) (Embedding, error) {
	resp, err := c.api.Embed(ctx, &api.EmbedRequest{Model: model, Input: input})
	if err != nil {
		return Embedding{}, c.wrap(ctx, "embed with "+model, err)
	}
	if len(resp.Embeddings) != len(input) {
		return Embedding{}, fmt.Errorf("embed with %s at %s: %d vectors for %d inputs: %w", model, c.URL(), len(resp.Embeddings), len(input), ErrUpstream)
	}
	return Embedding{Model: resp.Model, Vectors: resp.Embeddings, PromptTokens: resp.PromptEvalCount}, nil
}

// Chat streams the model's answer to req: fn is called with each piece, the
// last one with Done set. If fn returns an error the stream is abandoned
// and Chat returns that error. A stream that ends without a done line is
// ErrUnavailable (the server went away); an error line is ErrUpstream.
func (c *Client) Chat(ctx context.Context, req ChatRequest, fn func(ChatChunk) error) error {
	msgs := make([]api.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = api.Message{Role: m.Role, Content: m.Content}
	}
	stream := true
	var fnErr error
	done := false
	err := c.api.Chat(ctx, &api.ChatRequest{Model: req.Model, Messages: msgs, Stream: &stream, Options: req.Options}, func(r api.ChatResponse) error {
		ch := ChatChunk{Content: r.Message.Content, Done: r.Done, DoneReason: r.DoneReason, Model: r.Model}
		if r.Done {
			done = true
			ch.PromptTokens, ch.CompletionTokens = r.PromptEvalCount, r.EvalCount
		}
		if err := fn(ch); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return c.wrap(ctx, "chat with "+req.Model, err)
	case !done:
		return fmt.Errorf("chat with %s at %s: the answer ended without a done line: %w", req.Model, c.URL(), ErrUnavailable)
	}
	return nil
}

// Do sends a raw request to Ollama (path is like "/api/chat", with any
// query) and returns its response, whatever the status: the router's
// drop-in endpoint relays it. The caller's credentials (Authorization,
// Cookie, …) in header are dropped, never relayed. Only a failure to reach
// Ollama, or a path with a dot segment, is an error.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := relayRequest(ctx, c.base, method, path, header, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.wrap(ctx, method+" "+path, err)
	}
	return resp, nil
}

// wrap sorts an error from the ollama client into the package's sentinels,
// naming the server.
func (c *Client) wrap(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s at %s: %w", what, c.URL(), ctxErr)
	}
	var se api.StatusError
	if errors.As(err, &se) {
		msg := se.ErrorMessage
		if msg == "" {
			msg = se.Status
		}
		sentinel := ErrUpstream
		switch {
		case se.StatusCode == http.StatusNotFound:
			sentinel = ErrModelNotFound
		case se.StatusCode == http.StatusBadGateway, se.StatusCode == http.StatusServiceUnavailable, se.StatusCode == http.StatusGatewayTimeout:
			sentinel = ErrUnavailable
		case se.StatusCode >= 400 && se.StatusCode < 500:
			sentinel = ErrInvalid
		}
		return fmt.Errorf("%s at %s: %s: %w", what, c.URL(), msg, sentinel)
	}
	var ae api.AuthorizationError
	if errors.As(err, &ae) {
		return fmt.Errorf("%s at %s: unauthorized: %w", what, c.URL(), ErrInvalid)
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s at %s: %v: %w", what, c.URL(), err, ErrUnavailable)
	}
	return fmt.Errorf("%s at %s: %v: %w", what, c.URL(), err, ErrUpstream)
}
