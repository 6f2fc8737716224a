package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/codec"
	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus"
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

// Forwarder relays a raw request to the model server, for the drop-in
// endpoints, names the server for error messages, and says which API Do
// speaks (llmbridge.ProviderOllama or ProviderOpenAI).
type Forwarder interface {
	Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error)
	URL() string
	Kind() string
}

// LLM is everything the router asks of Ollama. llmbridge.Client implements
// it; tests may pass a fake.
type LLM interface {
	Embedder
	Chatter
	Forwarder
}

// Config configures the LLM features. The zero value turns
// it off: the LLM endpoints answer 503 and writes are never embedded.
type Config struct {
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

// Docs is what the LLM features need of the topics and contexts
// (package docstore implements it).
type Docs interface {
	Topic(ctx context.Context, name string) ([]byte, uint64, error)
	TopicMaxTokens(ctx context.Context, topic string) int
	EnsureTopic(ctx context.Context, name, description string) error
	ReadContext(ctx context.Context, topic, id string) (*schema.Document, uint64, error)
	ReadTail(ctx context.Context, topic, id string, enough func(doc *schema.Document, offset uint64, tail []schema.Message) bool) (*schema.Document, uint64, uint64, error)
	LastMessages(ctx context.Context, topic, id string, n int) (docstore.MessagePage, error)
	Append(ctx context.Context, topic, id string, msgs []schema.Message, match uint64, mutate func(*schema.Document)) (docstore.Appended, error)
	Replace(ctx context.Context, topic string, doc *schema.Document, version uint64) (bool, error)
}

// Records is what they need of the records below the documents: vectors
// and pending marks written at their context's version, quorum reads, and
// top-k searches over every shard (package coord implements it).
type Records interface {
	Get(ctx context.Context, pk, bucket string, key []byte) (storage.Record, error)
	GetMany(ctx context.Context, bucket string, keys [][]byte, pks []string) ([]storage.Record, error)
	WriteAt(ctx context.Context, pk, bucket string, key []byte, v uint64, tombstone bool, value []byte) error
	TopK(ctx context.Context, q storage.TopKQuery) (storage.TopKResult, error)
	TopKIn(ctx context.Context, bucket string, q storage.TopKQuery) (storage.TopKResult, error)
	Keyword(ctx context.Context, q coord.KeywordQuery) (storage.TopKResult, error)
	ShardCtx(ctx context.Context) (context.Context, context.CancelFunc)
}

// Deps are the parts of the router the LLM features work through.
type Deps struct {
	Docs     Docs
	Records  Records
	Codec    *codec.Codec
	Topology func() *placement.Topology
	Registry prometheus.Registerer
	Log      *slog.Logger
	// ShardTimeout bounds each page of the pending-marks scan.
	ShardTimeout time.Duration
	// Go runs fn in the background under the owner's lifetime.
	Go func(fn func(ctx context.Context))
}

// Service is the router's LLM features over the model server: auto-
// embedding of written contexts (and the retry loop for those stored
// pending), semantic search, chat with stored conversations folded to a
// token budget, and the drop-in endpoints' memory.
type Service struct {
	cfg   Config
	m     *metrics.LLM
	docs  Docs
	coord Records
	codec *codec.Codec
	topo  func() *placement.Topology
	log   *slog.Logger
	spawn func(fn func(ctx context.Context))

	// tokens corrects token estimates per chat model, learnt from the
	// model server's prompt counts.
	tokens memory.Calibrator

	shardTimeout time.Duration
}

// New builds the LLM features with cfg's defaults filled in; Start begins
// the embedding retry loop.
func New(cfg Config, d Deps) *Service {
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
	return &Service{cfg: cfg, m: metrics.NewLLM(d.Registry), docs: d.Docs, coord: d.Records, codec: d.Codec,
		topo: d.Topology, log: d.Log, spawn: d.Go, shardTimeout: d.ShardTimeout}
}

// Start begins the loop that embeds contexts stored pending, when an
// embedding model is configured.
func (l *Service) Start() {
	if l.cfg.Client != nil && l.cfg.EmbedModel != "" {
		l.spawn(l.embedRetryLoop)
	}
}

// Config is what the features were configured with, defaults filled in.
func (l *Service) Config() Config { return l.cfg }

// Tokens is the per-model token-count calibration.
func (l *Service) Tokens() *memory.Calibrator { return &l.tokens }

// Metrics are the LLM metrics (the drop-in relay records its calls).
func (l *Service) Metrics() *metrics.LLM { return l.m }

// URL names the model server in messages.
func (l *Service) URL() string {
	if l.cfg.Client == nil {
		return "(none configured)"
	}
	return l.cfg.Client.URL()
}

// Need answers 503 when no Ollama is configured.
func (l *Service) Need() error {
	if l.cfg.Client == nil {
		return apierr.Errorf(apierr.CodeUnavailable, "no model server is configured: start the router with -ollama-url, or -llm-provider=openai and -llm-url")
	}
	return nil
}

// Error turns an error from Ollama into an API error naming the server.
func (l *Service) Error(what string, err error) error {
	var apiErr *apierr.Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, llmbridge.ErrModelNotFound):
		return &apierr.Error{Code: apierr.CodeNotFound, Message: fmt.Sprintf("%s: the model is not available on %s (pull it first): %v", what, l.server(), err), Err: err}
	case errors.Is(err, llmbridge.ErrInvalid):
		return &apierr.Error{Code: apierr.CodeInvalidArgument, Message: fmt.Sprintf("%s: %s refused the request: %v", what, l.server(), err), Err: err}
	case errors.Is(err, llmbridge.ErrUpstream):
		return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: %s failed: %v", what, l.server(), err), Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: %s did not answer in time", what, l.server()), Err: err}
	}
	// The cause is logged (Err), not sent: the client needs to know that
	// Ollama is down and where, not the dialer's words.
	return &apierr.Error{Code: apierr.CodeUnavailable, Message: fmt.Sprintf("%s: %s is unavailable", what, l.server()), Err: err}
}

// ModelLabel keeps the metrics' model label bounded: a failed call is
// counted under its model only if the model is one the router is
// configured with; any other name a client sent counts as "unknown".
func (l *Service) ModelLabel(model string, err error) string {
	c := l.cfg
	if err == nil || model == c.EmbedModel || model == c.ChatModel || model == c.SummaryModel {
		return model
	}
	return "unknown"
}

// embed asks Ollama for one vector per text and records the call.
func (l *Service) embed(ctx context.Context, op, model string, texts []string) ([][]float32, error) {
	start := time.Now()
	emb, err := l.cfg.Client.Embed(ctx, model, texts)
	l.m.Observe(op, l.ModelLabel(model, err), start, err)
	if err != nil {
		return nil, err
	}
	l.m.AddTokens(model, emb.PromptTokens, 0)
	return emb.Vectors, nil
}

// chat streams a model's answer and records the call and its tokens.
func (l *Service) chat(ctx context.Context, op string, req llmbridge.ChatRequest, fn func(llmbridge.ChatChunk) error) error {
	start := time.Now()
	err := l.cfg.Client.Chat(ctx, req, func(ch llmbridge.ChatChunk) error {
		if ch.Done {
			l.m.AddTokens(req.Model, ch.PromptTokens, ch.CompletionTokens)
		}
		return fn(ch)
	})
	l.m.Observe(op, l.ModelLabel(req.Model, err), start, err)
	return err
}

// ---- auto-embedding ----

// maxEmbedText bounds what is sent to be embedded: the head of the text
// and the most recent messages. Embedding models read a few thousand
// tokens at most; Ollama truncates the rest anyway.
const maxEmbedText = 32 << 10

// embedWindowMessages is how many of a records-format conversation's
// newest messages the embedding retry reads to embed it, as many as an
// append embeds (docstore's embedWindow, and the new messages).
const embedWindowMessages = 32

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
func (l *Service) autoEmbedded(d *schema.Document) bool {
	em := l.cfg.EmbedModel
	return em != "" && (d.Metadata.EmbeddingPending || (len(d.Content.Embeddings) > 0 && d.Metadata.EmbeddingModel == em))
}

// embedForWrite fills a context's embeddings before it is written, when
// an embedding model is configured and the client sent none. It never
// fails the write: if Ollama cannot embed in time, the context is marked
// embedding_pending and the retry loop embeds it later.
func (l *Service) embedForWrite(ctx context.Context, d *schema.Document) {
	m := &d.Metadata
	m.EmbeddingPending = false // the router's to set
	if len(d.Content.Embeddings) > 0 {
		return // the client's own, under the model it names (maybe none)
	}
	m.EmbeddingModel = ""
	model := l.cfg.EmbedModel
	text := embedText(d)
	if model == "" || l.cfg.Client == nil || strings.TrimSpace(text) == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.EmbedTimeout)
	defer cancel()
	vecs, err := l.embed(ctx, "embed", model, []string{text})
	if err == nil && (len(vecs) != 1 || len(vecs[0]) == 0 || len(vecs[0]) > schema.MaxEmbeddings) {
		err = fmt.Errorf("embed with %s: %d vectors, want one of 1..%d values", model, len(vecs), schema.MaxEmbeddings)
	}
	if err != nil {
		l.log.Warn("context stored without its embedding; it will be retried", "id", m.ID, "model", model, "err", err)
		m.EmbeddingPending = true
		return
	}
	d.Content.Embeddings, m.EmbeddingModel = vecs[0], model
}

// beside is what a context's transaction writes with it at its version
// (docstore.Hooks.Beside): its vector, so that a search can tell it from a
// stale one, and its pending mark. (Its words for keyword search are
// docstore's own.) A replaced context's old vector is left in place:
// search ignores a vector older than its context and purges it when it
// meets it, which keeps a tombstone off every replace.
func (l *Service) beside(key []byte, d *schema.Document) []storage.TxnWrite {
	var ws []storage.TxnWrite
	if len(d.Content.Embeddings) > 0 {
		ws = append(ws, storage.TxnWrite{Bucket: schema.BucketVectors, Write: storage.Write{Record: storage.Record{Key: key, Value: encodeVector(d)}}})
	}
	if d.Metadata.EmbeddingPending {
		ws = append(ws, storage.TxnWrite{Bucket: schema.BucketEmbedPending, Write: storage.Write{Record: storage.Record{Key: key, Value: []byte{}}}})
	}
	return ws
}

// afterContextDelete deletes a deleted (or expired) context's vector and
// words. Search ignores a match whose context is gone, so this runs off
// the request's path.
func (l *Service) afterContextDelete(_ context.Context, topic, id string, v uint64) {
	l.spawn(func(bg context.Context) {
		for _, bucket := range []string{schema.BucketVectors, schema.BucketText} {
			if err := l.coord.WriteAt(bg, schema.Placement(topic, id), bucket, []byte(schema.ContextKey(topic, id)), v, true, nil); err != nil {
				l.log.Warn("derived record of a deleted context not deleted", "bucket", bucket, "topic", topic, "id", id, "err", err)
			}
		}
	})
}

// Prepare, Derived, Beside and Deleted are the LLM features' part in
// every context write (docstore.Hooks).
func (l *Service) Prepare(ctx context.Context, d *schema.Document) { l.embedForWrite(ctx, d) }

// Derived reports whether d's embeddings were made by the router.
func (l *Service) Derived(d *schema.Document) bool { return l.autoEmbedded(d) }

// Beside is the vector and pending mark written with d (see beside).
func (l *Service) Beside(key []byte, d *schema.Document) []storage.TxnWrite { return l.beside(key, d) }

// Deleted drops the vector of a context deleted at v.
func (l *Service) Deleted(ctx context.Context, topic, id string, v uint64) {
	l.afterContextDelete(ctx, topic, id, v)
}

// server names the model server in messages: "Ollama at URL", or "the
// OpenAI-compatible server at URL".
func (l *Service) server() string {
	if k, ok := l.cfg.Client.(interface{ Kind() string }); ok && k.Kind() == llmbridge.ProviderOpenAI {
		return "the OpenAI-compatible server at " + l.URL()
	}
	return "Ollama at " + l.URL()
}
