package llmbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/packages/ssestream"
)

// OpenAI speaks to one OpenAI-compatible server (OpenAI, vLLM, llama.cpp's
// server, LM Studio, Ollama's /v1, …) through the official client,
// github.com/openai/openai-go/v3. Its methods are safe for concurrent use.
type OpenAI struct {
	base *url.URL // ends in /v1, no trailing slash
	key  string
	hc   *http.Client

	// The services of the official client, built once. They are used
	// directly, not through openai.NewClient, which would also read
	// OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_CUSTOM_HEADERS… from the
	// environment: the router's configuration says where it talks and
	// with which key, nothing else.
	chat   openai.ChatCompletionService
	embed  openai.EmbeddingService
	models openai.ModelService
}

// NewOpenAI returns a client for the OpenAI-compatible server whose base
// URL is rawURL, ending in /v1 ("https://api.openai.com/v1"; without a
// scheme, "host:port/v1", http is meant). apiKey is
// sent as "Authorization: Bearer" on every request; empty sends none.
func NewOpenAI(rawURL, apiKey string, opts Options) (*OpenAI, error) {
	if !strings.Contains(rawURL, "://") {
		rawURL = "http://" + rawURL
	}
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	switch {
	case err != nil:
		return nil, fmt.Errorf("openai url %q: %w", rawURL, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("openai url %q: want http(s)://host[:port]/…/v1", rawURL)
	case u.User != nil:
		// The URL is in every error message; a password must not be.
		return nil, fmt.Errorf("openai url %s://%s%s: has user information: give the key as the API key, not in the URL", u.Scheme, u.Host, u.Path)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("openai url %q: want no query or fragment", rawURL)
	case !strings.HasSuffix(u.Path, "/v1"):
		return nil, fmt.Errorf("openai url %q: want the base URL ending in /v1, like https://api.openai.com/v1 or http://127.0.0.1:11434/v1", rawURL)
	}
	if apiKey != "" {
		if err := checkKey(apiKey); err != nil {
			return nil, err
		}
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = defaultHTTPClient()
	}
	ro := []option.RequestOption{
		option.WithBaseURL(u.String() + "/"),
		option.WithHTTPClient(hc),
		// Never retry, as the Ollama client does not: callers decide, and a
		// streamed answer cannot be retried transparently anyway.
		option.WithMaxRetries(0),
	}
	if apiKey != "" {
		ro = append(ro, option.WithAPIKey(apiKey))
	}
	return &OpenAI{
		base:   u,
		key:    apiKey,
		hc:     hc,
		chat:   openai.NewChatCompletionService(ro...),
		embed:  openai.NewEmbeddingService(ro...),
		models: openai.NewModelService(ro...),
	}, nil
}

// URL is the server's base URL, ending in /v1; error messages name it.
// A URL given without a scheme is http.
func (c *OpenAI) URL() string { return c.base.String() }

// Kind is ProviderOpenAI: Do speaks OpenAI's API.
func (c *OpenAI) Kind() string { return ProviderOpenAI }

// Embed embeds each of input with model (POST /embeddings). The answer
// must hold one vector per input, each index once.
//
// Vectors are asked for as base64 (little-endian float32s), as OpenAI's
// Python client does by default, which compatible servers are therefore
// built to accept: about a third less time and a quarter of the
// allocations of float arrays (BenchmarkEmbed), and exact float32s. A
// server that ignores the field and answers floats is read as well.
func (c *OpenAI) Embed(ctx context.Context, model string, input []string) (Embedding, error) {
	what := "embed with " + model
	if len(input) == 0 {
		return Embedding{Model: model}, nil
	}
	var httpResp *http.Response
	resp, err := c.embed.New(ctx, openai.EmbeddingNewParams{
		Model:          model,
		Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: input},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64,
	}, option.WithResponseInto(&httpResp))
	if err != nil {
		return Embedding{}, c.wrap(ctx, what, err, httpResp)
	}
	if len(resp.Data) != len(input) {
		return Embedding{}, fmt.Errorf("%s at %s: %d vectors for %d inputs: %w", what, c.URL(), len(resp.Data), len(input), ErrUpstream)
	}
	vecs := make([][]float32, len(input))
	for _, d := range resp.Data {
		if d.Index < 0 || d.Index >= int64(len(input)) || vecs[d.Index] != nil {
			return Embedding{}, fmt.Errorf("%s at %s: vector index %d repeated or out of 0..%d: %w", what, c.URL(), d.Index, len(input)-1, ErrUpstream)
		}
		v := make([]float32, len(d.Embedding))
		for i, f := range d.Embedding {
			v[i] = float32(f)
		}
		vecs[d.Index] = v
	}
	name := resp.Model
	if name == "" {
		name = model
	}
	return Embedding{Model: name, Vectors: vecs, PromptTokens: int(resp.Usage.PromptTokens)}, nil
}

// Models lists the ids of the models the server offers (GET /models).
func (c *OpenAI) Models(ctx context.Context) ([]string, error) {
	var httpResp *http.Response
	page, err := c.models.List(ctx, option.WithResponseInto(&httpResp))
	if err != nil {
		return nil, c.wrap(ctx, "list models", err, httpResp)
	}
	ids := make([]string, len(page.Data))
	for i, m := range page.Data {
		ids[i] = m.ID
	}
	return ids, nil
}

// streamOpt turns a chat completion into a streamed one, as the official
// client's NewStreaming does.
var streamOpt = option.WithJSONSet("stream", true)

// Chat streams the model's answer to req (POST /chat/completions with
// "stream": true and stream_options.include_usage, so that the last chunk
// carries the token counts). fn is called with each piece of text, and
// last with Done set, DoneReason the finish_reason, and the counts of
// usage (zero when the server reports none). If fn returns an error the
// stream is abandoned and Chat returns that error. A stream that ends
// without "data: [DONE]" is ErrUnavailable (the server or a proxy went
// away); an error event in it is ErrUpstream.
//
// req.Options are read as Ollama's names them, mapped to OpenAI's
// parameters: temperature, top_p, seed, stop, frequency_penalty,
// presence_penalty, num_predict (max_tokens); max_tokens and
// max_completion_tokens are taken as they are. Any other (num_ctx,
// top_k, …) has no OpenAI counterpart and is ErrInvalid.
func (c *OpenAI) Chat(ctx context.Context, req ChatRequest, fn func(ChatChunk) error) error {
	what := "chat with " + req.Model
	params, err := chatParams(req)
	if err != nil {
		return fmt.Errorf("%s at %s: %v: %w", what, c.URL(), err, ErrInvalid)
	}
	// The response is taken raw, not through NewStreaming, to see whether
	// the stream ends with [DONE]: the official stream ends without an
	// error at EOF either way, and a stream cut by a proxy would pass
	// for a complete answer.
	var raw *http.Response
	if _, err := c.chat.New(ctx, params, streamOpt, option.WithResponseBodyInto(&raw)); err != nil {
		return c.wrap(ctx, what, err, raw)
	}
	if raw == nil {
		return fmt.Errorf("%s at %s: no answer: %w", what, c.URL(), ErrUpstream)
	}
	if mt, _, _ := mime.ParseMediaType(raw.Header.Get("Content-Type")); mt != "text/event-stream" {
		raw.Body.Close()
		return fmt.Errorf("%s at %s: answered %q, want an event stream: %w", what, c.URL(), raw.Header.Get("Content-Type"), ErrUpstream)
	}
	dec := &doneDecoder{Decoder: ssestream.NewDecoder(raw)}
	stream := ssestream.NewStream[openai.ChatCompletionChunk](dec, nil)
	defer stream.Close()

	last := ChatChunk{Done: true, Model: req.Model}
	for stream.Next() {
		ch := stream.Current()
		if ch.Model != "" {
			last.Model = ch.Model
		}
		if ch.JSON.Usage.Valid() {
			last.PromptTokens, last.CompletionTokens = int(ch.Usage.PromptTokens), int(ch.Usage.CompletionTokens)
		}
		for _, choice := range ch.Choices {
			if choice.Index != 0 {
				continue // one answer was asked for; a server sending more is ignored past the first
			}
			if choice.FinishReason != "" {
				last.DoneReason = choice.FinishReason
			}
			if choice.Delta.Content == "" {
				continue
			}
			if err := fn(ChatChunk{Content: choice.Delta.Content, Model: last.Model}); err != nil {
				return err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return c.wrap(ctx, what, err, nil)
	}
	if !dec.done {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s at %s: %w", what, c.URL(), err)
		}
		return fmt.Errorf("%s at %s: the answer ended without data: [DONE]: %w", what, c.URL(), ErrUnavailable)
	}
	return fn(last)
}

// doneDecoder notes whether the stream's [DONE] event went by.
type doneDecoder struct {
	ssestream.Decoder
	done bool
}

func (d *doneDecoder) Event() ssestream.Event {
	ev := d.Decoder.Event()
	if bytes.HasPrefix(ev.Data, []byte("[DONE]")) {
		d.done = true
	}
	return ev
}

// chatParams puts req in OpenAI's terms.
func chatParams(req ChatRequest) (openai.ChatCompletionNewParams, error) {
	p := openai.ChatCompletionNewParams{
		Model:         req.Model,
		Messages:      make([]openai.ChatCompletionMessageParamUnion, len(req.Messages)),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	for i, m := range req.Messages {
		switch m.Role {
		case "system":
			p.Messages[i] = openai.SystemMessage(m.Content)
		case "developer":
			p.Messages[i] = openai.DeveloperMessage(m.Content)
		case "user":
			p.Messages[i] = openai.UserMessage(m.Content)
		case "assistant":
			p.Messages[i] = openai.AssistantMessage(m.Content)
		default:
			return p, fmt.Errorf("message %d: role %q: want system, developer, user or assistant", i, m.Role)
		}
	}
	if len(req.Options) == 0 {
		return p, nil
	}
	keys := make([]string, 0, len(req.Options))
	for k := range req.Options {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad option named is always the same
	for _, k := range keys {
		v := req.Options[k]
		var err error
		switch k {
		case "temperature":
			p.Temperature, err = optFloat(v)
		case "top_p":
			p.TopP, err = optFloat(v)
		case "frequency_penalty":
			p.FrequencyPenalty, err = optFloat(v)
		case "presence_penalty":
			p.PresencePenalty, err = optFloat(v)
		case "seed":
			var n int64
			if n, err = integer(v); err == nil {
				p.Seed = openai.Int(n)
			}
		case "num_predict", "max_tokens", "max_completion_tokens":
			var n int64
			if n, err = integer(v); err == nil {
				switch {
				case k == "num_predict" && n < 0:
					// Ollama's "no limit" (-1) and "fill the context" (-2): OpenAI's default
				case n <= 0:
					err = fmt.Errorf("want a positive count")
				case k == "max_completion_tokens":
					p.MaxCompletionTokens = openai.Int(n)
				default:
					// max_tokens, not max_completion_tokens: the one every
					// compatible server knows.
					p.MaxTokens = openai.Int(n)
				}
			}
		case "stop":
			p.Stop, err = stop(v)
		default:
			return p, fmt.Errorf("option %q has no OpenAI counterpart (known: frequency_penalty, max_completion_tokens, max_tokens, num_predict, presence_penalty, seed, stop, temperature, top_p)", k)
		}
		if err != nil {
			return p, fmt.Errorf("option %q: %v", k, err)
		}
	}
	return p, nil
}

// optFloat reads an option's value as an optional number.
func optFloat(v any) (param.Opt[float64], error) {
	f, ok := number(v)
	if !ok {
		return param.Opt[float64]{}, fmt.Errorf("want a number, not %T", v)
	}
	return openai.Float(f), nil
}

// number reads an option's value as JSON decoding or Go code gives it.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func integer(v any) (int64, error) {
	f, ok := number(v)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("want an integer, not %v", v)
	}
	return int64(f), nil
}

func stop(v any) (openai.ChatCompletionNewParamsStopUnion, error) {
	var u openai.ChatCompletionNewParamsStopUnion
	switch s := v.(type) {
	case string:
		u.OfString = openai.String(s)
	case []string:
		u.OfStringArray = s
	case []any:
		for _, x := range s {
			str, ok := x.(string)
			if !ok {
				return u, fmt.Errorf("want strings, not %T", x)
			}
			u.OfStringArray = append(u.OfStringArray, str)
		}
	default:
		return u, fmt.Errorf("want a string or a list of strings, not %T", v)
	}
	return u, nil
}

// Do sends a raw request to the server (path is relative to the base URL,
// like "/chat/completions" or "/models", with any query) and returns its
// response, whatever the status: the router's drop-in endpoints relay it.
// The caller's credentials (Authorization, Cookie, …) in header are
// dropped; the request carries this client's own API key, if it has one.
// Only a failure to reach the server, or a path with a dot segment, is an
// error.
func (c *OpenAI) Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := relayRequest(ctx, c.base, method, path, header, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.wrap(ctx, method+" "+path, err, nil)
	}
	return resp, nil
}

// wrap sorts an error from the official client into the package's
// sentinels, naming the server and never the key. resp is the server's
// answer when there was one: an error body the official client cannot
// parse (not OpenAI's shape, as {"error":"text"}) still has its status.
func (c *OpenAI) wrap(ctx context.Context, what string, err error, resp *http.Response) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s at %s: %w", what, c.URL(), ctxErr)
	}
	var ae *openai.Error
	if errors.As(err, &ae) {
		msg := ae.Message
		if msg == "" && ae.Response != nil {
			msg = errorText(ae.Response) // the official client keeps the body readable
		}
		return c.statusError(what, ae.StatusCode, ae.Code, msg)
	}
	if resp != nil && resp.StatusCode >= 400 {
		return c.statusError(what, resp.StatusCode, "", errorText(resp))
	}
	var se *ssestream.StreamError
	if errors.As(err, &se) {
		var ev struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := se.Message
		if json.Unmarshal(se.Event.Data, &ev) == nil && ev.Error.Message != "" {
			msg = ev.Error.Message
		}
		return fmt.Errorf("%s at %s: error in the stream: %s: %w", what, c.URL(), c.redact(msg), ErrUpstream)
	}
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case strings.HasPrefix(err.Error(), "error parsing response json"):
		// A whole answer arrived but is not JSON; truncated JSON wraps
		// io.ErrUnexpectedEOF as a cut connection does, so the official
		// client's words are what tells them apart.
	case errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%s at %s: %v: %w", what, c.URL(), err, ErrUnavailable)
	}
	return fmt.Errorf("%s at %s: %s: %w", what, c.URL(), c.redact(err.Error()), ErrUpstream)
}

// statusError sorts an error answer by its status and OpenAI error code.
func (c *OpenAI) statusError(what string, status int, code, msg string) error {
	sentinel := ErrUpstream
	switch {
	case status == http.StatusNotFound || code == "model_not_found":
		sentinel = ErrModelNotFound
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// The router's own key was refused: the caller can do nothing
		// about it. The server's message is not kept, since it may quote
		// the key (OpenAI quotes part of it).
		reason := "the API key was refused"
		if c.key == "" {
			reason = "the server wants an API key"
		}
		return fmt.Errorf("%s at %s: %s (%d %s): %w", what, c.URL(), reason, status, http.StatusText(status), ErrUpstream)
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
		status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		sentinel = ErrUnavailable
	case status >= 400 && status < 500:
		sentinel = ErrInvalid
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return fmt.Errorf("%s at %s: %s (%d): %w", what, c.URL(), c.redact(msg), status, sentinel)
}

// errorText is the message of an error body not in OpenAI's shape:
// {"error":"text"}, {"detail":"text"} or {"message":"text"}, else none.
func errorText(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	for _, k := range []string{"error", "detail", "message"} {
		if s, ok := m[k].(string); ok {
			return s
		}
	}
	return ""
}

// redact removes the key from a message a server wrote, in case it quotes
// it.
func (c *OpenAI) redact(msg string) string {
	if c.key == "" {
		return msg
	}
	return strings.ReplaceAll(msg, c.key, "[api key]")
}
