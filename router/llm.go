package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/labstack/echo/v4"
)

// Embedder turns texts into vectors, one per input.
type Embedder interface {
	Embed(ctx context.Context, model string, input []string) (llmbridge.Embedding, error)
}

// Chatter streams a model's answer to a conversation: fn sees each piece,
// the last one with Done set.
type Chatter interface {
	Chat(ctx context.Context, req llmbridge.ChatRequest, fn func(llmbridge.ChatChunk) error) error
}

// Forwarder relays a raw request to Ollama, for the drop-in endpoint, and
// names the server for error messages.
type Forwarder interface {
	Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error)
	URL() string
}

// LLM is everything the router asks of Ollama. llmbridge.Client implements
// it; tests may pass a fake.
type LLM interface {
	Embedder
	Chatter
	Forwarder
}

// LLMConfig configures the router's Ollama bridge. The zero value turns
// it off: the LLM endpoints answer 503 and writes are never embedded.
type LLMConfig struct {
	// Client reaches Ollama; nil turns the bridge off.
	Client LLM
	// EmbedModel embeds every context written without embeddings; empty
	// turns auto-embedding off (search then needs "embedding" or "model").
	EmbedModel string
	// ChatModel is the model of conversations that name none.
	ChatModel string
	// SummaryModel folds old turns into a context's running summary;
	// empty means ChatModel.
	SummaryModel string
	// MaxTokens is the token budget of a conversation when neither the
	// request nor the topic sets one; zero means no budget.
	MaxTokens int
	// EmbedTimeout bounds the embedding made while a write waits; past it
	// the context is stored pending. Zero means 10 seconds.
	EmbedTimeout time.Duration
	// RetryInterval is the first delay between passes that embed pending
	// contexts; it doubles while Ollama fails, up to RetryMax. Zero means
	// 5 seconds and 5 minutes.
	RetryInterval, RetryMax time.Duration
}

// llmState is the router's Ollama bridge: configuration, metrics, the
// token-count calibration, and the embedding retry loop.
type llmState struct {
	cfg LLMConfig
	m   *metrics.LLM

	// tokens corrects token estimates per chat model, learnt from
	// Ollama's prompt_eval_count.
	tokens memory.Calibrator

	cancel context.CancelFunc // stops the retry loop; nil when none runs
	wg     sync.WaitGroup     // the retry loop
}

// llmRoutes registers the LLM endpoints and starts the embedding retry
// loop when an embedding model is configured. routes calls it once.
func (r *Router) llmRoutes(e *echo.Echo, v1 *echo.Group) {
	cfg := r.cfg.LLM
	if cfg.SummaryModel == "" {
		cfg.SummaryModel = cfg.ChatModel
	}
	if cfg.EmbedTimeout <= 0 {
		cfg.EmbedTimeout = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	if cfg.RetryMax < cfg.RetryInterval {
		cfg.RetryMax = max(5*time.Minute, cfg.RetryInterval)
	}
	r.llm = &llmState{cfg: cfg, m: metrics.NewLLM(r.cfg.Registry)}

	v1.POST("/topics/:topic/contexts/:id/messages", r.appendMessagesHandler)
	v1.GET("/topics/:topic/contexts/:id/messages", r.getMessages)
	v1.POST("/topics/:topic/search", r.search)
	v1.POST("/topics/:topic/contexts/:id/chat", r.chatHandler)
	r.ollamaRoutes(e)

	if cfg.Client != nil && cfg.EmbedModel != "" {
		ctx, cancel := context.WithCancel(context.Background())
		r.llm.cancel = cancel
		r.llm.wg.Go(func() { r.embedRetryLoop(ctx) })
	}
}

// closeLLM stops the retry loop and waits for it.
func (r *Router) closeLLM() {
	if r.llm != nil && r.llm.cancel != nil {
		r.llm.cancel()
		r.llm.wg.Wait()
	}
}

// ollamaURL names the Ollama server in messages.
func (r *Router) ollamaURL() string {
	if r.llm.cfg.Client == nil {
		return "(none configured)"
	}
	return r.llm.cfg.Client.URL()
}

// needLLM answers 503 when no Ollama is configured.
func (r *Router) needLLM() error {
	if r.llm.cfg.Client == nil {
		return apierr.Errorf(apierr.CodeUnavailable, "no Ollama is configured: start the router with -ollama-url")
	}
	return nil
}

// llmError turns an error from Ollama into an API error naming the server.
func (r *Router) llmError(what string, err error) error {
	var apiErr *apierr.Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, llmbridge.ErrModelNotFound):
		return &apierr.Error{Code: apierr.CodeNotFound, Message: fmt.Sprintf("%s: the model is not available on Ollama at %s (pull it first): %v", what, r.ollamaURL(), err), Err: err}
	case errors.Is(err, llmbridge.ErrInvalid):
		return &apierr.Error{Code: apierr.CodeInvalidArgument, Message: fmt.Sprintf("%s: Ollama at %s refused the request: %v", what, r.ollamaURL(), err), Err: err}
	case errors.Is(err, llmbridge.ErrUpstream):
		return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: Ollama at %s failed: %v", what, r.ollamaURL(), err), Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: Ollama at %s did not answer in time", what, r.ollamaURL()), Err: err}
	}
	// The cause is logged (Err), not sent: the client needs to know that
	// Ollama is down and where, not the dialer's words.
	return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: Ollama at %s is unavailable", what, r.ollamaURL()), Err: err}
}

// modelLabel keeps the metrics' model label bounded: a failed call is
// counted under its model only if the model is one the router is
// configured with; any other name a client sent counts as "unknown".
func (r *Router) modelLabel(model string, err error) string {
	c := r.llm.cfg
	if err == nil || model == c.EmbedModel || model == c.ChatModel || model == c.SummaryModel {
		return model
	}
	return "unknown"
}

// embed asks Ollama for one vector per text and records the call.
func (r *Router) embed(ctx context.Context, op, model string, texts []string) ([][]float32, error) {
	start := time.Now()
	emb, err := r.llm.cfg.Client.Embed(ctx, model, texts)
	r.llm.m.Observe(op, r.modelLabel(model, err), start, err)
	if err != nil {
		return nil, err
	}
	r.llm.m.AddTokens(model, emb.PromptTokens, 0)
	return emb.Vectors, nil
}

// chat streams a model's answer and records the call and its tokens.
func (r *Router) chat(ctx context.Context, op string, req llmbridge.ChatRequest, fn func(llmbridge.ChatChunk) error) error {
	start := time.Now()
	err := r.llm.cfg.Client.Chat(ctx, req, func(ch llmbridge.ChatChunk) error {
		if ch.Done {
			r.llm.m.AddTokens(req.Model, ch.PromptTokens, ch.CompletionTokens)
		}
		return fn(ch)
	})
	r.llm.m.Observe(op, r.modelLabel(req.Model, err), start, err)
	return err
}

// ---- auto-embedding ----

// maxEmbedText bounds what is sent to be embedded: the head of the text
// and the most recent messages. Embedding models read a few thousand
// tokens at most; Ollama truncates the rest anyway.
const maxEmbedText = 32 << 10

// embedText is what a context is embedded from: its text, then its
// messages as "role: content" lines, newest kept when it is too long.
func embedText(d *schema.Document) string {
	text := d.Content.Text
	if len(text) > maxEmbedText/4 && len(d.Content.Messages) > 0 {
		text = text[:maxEmbedText/4]
	}
	var lines []string
	n := len(text)
	for i := len(d.Content.Messages) - 1; i >= 0; i-- {
		m := d.Content.Messages[i]
		if m.Role == "tool" {
			continue
		}
		line := m.Role + ": " + m.Content
		if n+len(line)+1 > maxEmbedText {
			break
		}
		n += len(line) + 1
		lines = append(lines, line)
	}
	var b strings.Builder
	b.WriteString(text)
	for i := len(lines) - 1; i >= 0; i-- {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(lines[i])
	}
	s := b.String()
	if len(s) > maxEmbedText {
		s = s[:maxEmbedText]
	}
	return strings.ToValidUTF8(s, "")
}

// autoEmbedded reports whether a stored context's embeddings were made by
// the router (so they follow its content) rather than sent by a client.
func (r *Router) autoEmbedded(d *schema.Document) bool {
	em := r.llm.cfg.EmbedModel
	return em != "" && (d.Metadata.EmbeddingPending || (len(d.Content.Embeddings) > 0 && d.Metadata.EmbeddingModel == em))
}

// embedForWrite fills a context's embeddings before it is written, when
// an embedding model is configured and the client sent none. It never
// fails the write: if Ollama cannot embed in time, the context is marked
// embedding_pending and the retry loop embeds it later.
func (r *Router) embedForWrite(ctx context.Context, d *schema.Document) {
	m := &d.Metadata
	m.EmbeddingPending = false // the router's to set
	if len(d.Content.Embeddings) > 0 {
		return // the client's own, under the model it names (maybe none)
	}
	m.EmbeddingModel = ""
	model := r.llm.cfg.EmbedModel
	text := embedText(d)
	if model == "" || r.llm.cfg.Client == nil || strings.TrimSpace(text) == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.llm.cfg.EmbedTimeout)
	defer cancel()
	vecs, err := r.embed(ctx, "embed", model, []string{text})
	if err == nil && (len(vecs) != 1 || len(vecs[0]) == 0 || len(vecs[0]) > schema.MaxEmbeddings) {
		err = fmt.Errorf("embed with %s: %d vectors, want one of 1..%d values", model, len(vecs), schema.MaxEmbeddings)
	}
	if err != nil {
		r.log.Warn("context stored without its embedding; it will be retried", "id", m.ID, "model", model, "err", err)
		m.EmbeddingPending = true
		return
	}
	d.Content.Embeddings, m.EmbeddingModel = vecs[0], model
}

// afterContextWrite keeps the vector and the pending mark of a context in
// step with the context just written at version v: the vector is written
// (or, if the context has none now but had a live version before, deleted)
// at the same version, so a search can tell a vector from a stale one. A
// failure here is logged, not returned: the context is stored, search
// checks versions, and the next write or the retry loop repairs it.
func (r *Router) afterContextWrite(ctx context.Context, topic string, d *schema.Document, v uint64, prevLive bool) {
	pk := schema.Placement(topic, d.Metadata.ID)
	key := []byte(schema.ContextKey(topic, d.Metadata.ID))
	if len(d.Content.Embeddings) > 0 {
		val := encodeVector(d)
		if err := r.coord.WriteAt(ctx, pk, schema.BucketVectors, key, v, false, val); err != nil {
			r.log.Warn("vector not stored", "topic", topic, "id", d.Metadata.ID, "err", err)
		}
	}
	// A replaced context's old vector is left in place: search ignores a
	// vector older than its context and purges it when it meets it, which
	// keeps a second durable write off every replace.
	if d.Metadata.EmbeddingPending {
		if err := r.coord.WriteAt(ctx, pk, schema.BucketEmbedPending, key, v, false, []byte{}); err != nil {
			r.log.Warn("pending embedding not recorded", "topic", topic, "id", d.Metadata.ID, "err", err)
		}
	}
}

// afterContextDelete deletes a deleted context's vector.
// Search ignores a vector whose context is gone, so this runs off the
// request's path.
func (r *Router) afterContextDelete(_ context.Context, topic, id string, v uint64) {
	r.background(func(bg context.Context) {
		if err := r.coord.WriteAt(bg, schema.Placement(topic, id), schema.BucketVectors, []byte(schema.ContextKey(topic, id)), v, true, nil); err != nil {
			r.log.Warn("vector of a deleted context not deleted", "topic", topic, "id", id, "err", err)
		}
	})
}

// llmHooks are the LLM features' part in every context write (see
// docstore.Hooks).
type llmHooks struct{ r *Router }

func (h llmHooks) Prepare(ctx context.Context, d *schema.Document) { h.r.embedForWrite(ctx, d) }
func (h llmHooks) Derived(d *schema.Document) bool                 { return h.r.autoEmbedded(d) }
func (h llmHooks) Written(ctx context.Context, topic string, d *schema.Document, v uint64, prevLive bool) {
	h.r.afterContextWrite(ctx, topic, d, v, prevLive)
}
func (h llmHooks) Deleted(ctx context.Context, topic, id string, v uint64) {
	h.r.afterContextDelete(ctx, topic, id, v)
}
