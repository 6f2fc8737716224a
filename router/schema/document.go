package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"time"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
)

// Limits on a context document, checked before anything is stored.
const (
	MaxTags       = 64
	MaxTagLen     = 128
	MaxEmbeddings = 16384
	MaxModelLen   = 256
	maxDescLen    = 4096
	maxNameLen    = 128
	maxIDLen      = 256
	MaxMessages   = 100000
	// MaxAppendMessages bounds the messages of one append (they go in one
	// transaction per owner).
	MaxAppendMessages = 5000
	// MaxTokenBudget bounds max_tokens, of a request or a topic.
	MaxTokenBudget = 10_000_000
)

// Topic is a named group of contexts.
type Topic struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// MaxTokens is the token budget of the topic's conversations (see
	// POST …/chat); zero means the router's default.
	MaxTokens int    `json:"max_tokens,omitempty"`
	CreatedAt string `json:"created_at"`
	// DefaultTTLSeconds is the lifetime given to a context written without
	// expires_at or ttl_seconds (see ttl.go); zero means none.
	DefaultTTLSeconds int64 `json:"default_ttl_seconds,omitempty"`
}

// Metadata describes a context; it is what lists return.
type Metadata struct {
	// ExpiresAt is when the context disappears (RFC 3339, UTC); empty
	// means never. It is the first field on purpose: a rendered or stored
	// context then begins with it, so reads test expiry with a prefix
	// comparison instead of decoding the metadata (see ttl.go).
	ExpiresAt string `json:"expires_at,omitempty"`
	// TTLSeconds is accepted on write only: the router turns it into
	// ExpiresAt and never stores it.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`

	ID        string   `json:"id"`
	CreatedAt string   `json:"created_at,omitempty"`
	UpdatedAt string   `json:"updated_at,omitempty"`
	Model     string   `json:"model,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	// EmbeddingModel names the model of content.embeddings: set by the
	// router when it embedded the context, or by a client that sends its
	// own embeddings. Empty: unnamed.
	EmbeddingModel string `json:"embedding_model,omitempty"`
	// EmbeddingPending is set by the router when Ollama could not embed
	// the context at write time; a background loop retries.
	EmbeddingPending bool `json:"embedding_pending,omitempty"`
}

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Seq is the message's place in its conversation, 1 for the first:
	// set on every message read back, ignored on write (the router
	// assigns it).
	Seq uint64 `json:"seq,omitempty"`
}

// Conversation is the header of a conversation whose messages are records
// of their own (BucketMessages, MessageKey), stored in its context record:
// an append writes the new records and this header, nothing else. Seqs
// run from 1 to Last without holes; records of the key range past Last
// (left by a replaced or deleted conversation, until they are purged)
// are not part of it.
type Conversation struct {
	Last uint64 `json:"last"`
	// Idem remembers the recent appends that carried an Idempotency-Key,
	// newest last, so a retried append answers what the first stored.
	Idem []IdemEntry `json:"idem,omitempty"`
}

// IdemEntry is one remembered keyed append: its key, the seqs it stored,
// and when (unix seconds).
type IdemEntry struct {
	Key   string `json:"k"`
	First uint64 `json:"f"`
	Last  uint64 `json:"l"`
	At    int64  `json:"t"`
}

// Limits of the idempotency memory of a conversation: the newest
// MaxIdemKeys keyed appends of the last IdemWindow seconds.
const (
	MaxIdemKeys   = 32
	IdemWindow    = 24 * 3600
	MaxIdemKeyLen = 128
)

// Remembered returns the entry of an append keyed key, if remembered.
func (c *Conversation) Remembered(key string, now time.Time) (IdemEntry, bool) {
	for _, e := range c.Idem {
		if e.Key == key && now.Unix()-e.At <= IdemWindow {
			return e, true
		}
	}
	return IdemEntry{}, false
}

// Remember records an append keyed key that stored first..last, dropping
// the entries too old or too many.
func (c *Conversation) Remember(key string, first, last uint64, now time.Time) {
	keep := c.Idem[:0]
	for _, e := range c.Idem {
		if now.Unix()-e.At <= IdemWindow && e.Key != key {
			keep = append(keep, e)
		}
	}
	keep = append(keep, IdemEntry{Key: key, First: first, Last: last, At: now.Unix()})
	if len(keep) > MaxIdemKeys {
		keep = keep[len(keep)-MaxIdemKeys:]
	}
	c.Idem = keep
}

// Content is what a context holds.
type Content struct {
	Text       string    `json:"text,omitempty"`
	Messages   []Message `json:"messages,omitempty"`
	Embeddings []float32 `json:"embeddings,omitempty"`
	// Summary folds the oldest messages of a long conversation (see
	// POST …/chat); the messages stay stored.
	Summary *Summary `json:"summary,omitempty"`
	// Conversation is set when the messages are records of their own
	// (see Conversation); Messages then holds what a read loaded of them,
	// and the stored context holds none. Never rendered as such: the
	// codec stores it beside the content.
	Conversation *Conversation `json:"-"`
}

// Summary is a running summary of a conversation's oldest turns.
type Summary struct {
	Text string `json:"text"`
	// Messages is how many of the oldest messages the summary covers.
	Messages int `json:"messages"`
}

// Document is a context as clients send and receive it.
type Document struct {
	Metadata Metadata `json:"metadata"`
	Content  Content  `json:"content"`
}

// ValidName reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.
func ValidName(s string) bool { return ValidToken(s, maxNameLen, false) }

// ValidID reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$.
func ValidID(s string) bool { return ValidToken(s, maxIDLen, true) }

// ValidToken checks names and ids by hand: they are checked on every request
// and a regexp costs more than the rest of a cache hit.
func ValidToken(s string, max int, colon bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		case i > 0 && colon && c == ':':
		default:
			return false
		}
	}
	return true
}

func CheckName(s string) error {
	if !ValidName(s) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "topic name %q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", Truncate(s))
	}
	return nil
}

func CheckID(s string) error {
	if !ValidID(s) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "context id %q must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$", Truncate(s))
	}
	return nil
}

// TopicRequest is the body of POST /api/v1/topics.
type TopicRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	MaxTokens   int    `json:"max_tokens"`
	// DefaultTTLSeconds: see Topic.
	DefaultTTLSeconds int64 `json:"default_ttl_seconds"`
}

func (r *TopicRequest) Validate() error {
	if err := CheckName(r.Name); err != nil {
		return err
	}
	if len(r.Description) > maxDescLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"description\": longer than %d bytes", maxDescLen)
	}
	if r.MaxTokens < 0 || r.MaxTokens > MaxTokenBudget {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"max_tokens\": %d is not in 0..%d", r.MaxTokens, MaxTokenBudget)
	}
	if r.DefaultTTLSeconds < 0 || r.DefaultTTLSeconds > MaxTTLSeconds {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"default_ttl_seconds\": %d is not in 0..%d", r.DefaultTTLSeconds, MaxTTLSeconds)
	}
	return nil
}

var ValidRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// normalize validates a document and fills what the router owns: a missing
// created_at becomes now, updated_at is always now.
func (d *Document) Normalize(now time.Time) error {
	m := &d.Metadata
	if m.ID != "" {
		if err := CheckID(m.ID); err != nil {
			return err
		}
	}
	if m.CreatedAt == "" {
		m.CreatedAt = now.Format(time.RFC3339Nano)
	} else if _, err := time.Parse(time.RFC3339Nano, m.CreatedAt); err != nil {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.created_at\": %q is not an RFC 3339 time", Truncate(m.CreatedAt))
	}
	m.UpdatedAt = now.Format(time.RFC3339Nano)
	if len(m.Model) > MaxModelLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.model\": longer than %d bytes", MaxModelLen)
	}
	if len(m.Tags) > MaxTags {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.tags\": %d tags, at most %d allowed", len(m.Tags), MaxTags)
	}
	for i, t := range m.Tags {
		if t == "" || len(t) > MaxTagLen {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.tags[%d]\": a tag has 1 to %d bytes", i, MaxTagLen)
		}
	}
	if len(d.Content.Embeddings) > MaxEmbeddings {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.embeddings\": %d values, at most %d allowed", len(d.Content.Embeddings), MaxEmbeddings)
	}
	if len(d.Content.Messages) > MaxMessages {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.messages\": %d messages, at most %d allowed", len(d.Content.Messages), MaxMessages)
	}
	conv := d.Content.Conversation
	for i, msg := range d.Content.Messages {
		if conv == nil {
			d.Content.Messages[i].Seq = uint64(i + 1) // the router numbers messages
		}
		if !ValidRoles[msg.Role] {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.messages[%d].role\": %q is not one of system, user, assistant, tool", i, Truncate(msg.Role))
		}
	}
	count := len(d.Content.Messages)
	if conv != nil {
		count = int(conv.Last)
	}
	if s := d.Content.Summary; s != nil && (s.Messages < 0 || s.Messages > count) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.summary.messages\": %d is not in 0..%d (the number of messages)", s.Messages, count)
	}
	return nil
}

// DecodeDocument reads and validates a context document from a request body.
func DecodeDocument(body []byte, now time.Time) (*Document, error) {
	var d Document
	if err := DecodeJSON(body, &d); err != nil {
		return nil, err
	}
	if err := d.Normalize(now); err != nil {
		return nil, err
	}
	if err := d.Metadata.ResolveExpiry(now); err != nil {
		return nil, err
	}
	return &d, nil
}

// MaxBulkContexts bounds the contexts of one bulk write
// (POST …/contexts/_bulk); the router's -max-body-size caps its bytes.
const MaxBulkContexts = 1000

// DecodeBulk decodes the body of a bulk write, {"contexts": [document, …]},
// checking each document as DecodeDocument does a PUT's. Each must name its
// id (metadata.id), once in the bulk. An error names the item it is about:
// one bad item refuses the whole bulk, before anything is written.
func DecodeBulk(body []byte, now time.Time) ([]*Document, error) {
	raws, err := decodeBulkEnvelope(body)
	if err != nil {
		return nil, err
	}
	if len(raws) == 0 || len(raws) > MaxBulkContexts {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "field \"contexts\": %d documents, want 1..%d", len(raws), MaxBulkContexts)
	}
	docs := make([]*Document, len(raws))
	seen := make(map[string]int, len(docs))
	for i, raw := range raws {
		d, err := DecodeDocument(raw, now)
		if err != nil {
			var e *apierr.Error
			if errors.As(err, &e) {
				return nil, apierr.Errorf(e.Code, "contexts[%d]: %s", i, e.Message)
			}
			return nil, err
		}
		id := d.Metadata.ID
		if id == "" {
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "contexts[%d]: field \"metadata.id\" is required in a bulk write", i)
		}
		if err := CheckID(id); err != nil {
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "contexts[%d]: %s", i, err.(*apierr.Error).Message)
		}
		if j, dup := seen[id]; dup {
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "contexts[%d]: id %q is also contexts[%d]'s: a bulk names each context once", i, id, j)
		}
		seen[id] = i
		docs[i] = d
	}
	return docs, nil
}

// decodeBulkEnvelope splits {"contexts": [...]} into its documents, with
// DecodeJSON's checks on the envelope alone: its one key, once, and nothing
// after it. Each document is checked whole by DecodeDocument (duplicate
// keys included), so the body is not scanned for them twice: on a bulk of
// embeddings the scan was a tenth of the router's CPU, half of it the
// envelope's repeat of the documents' own.
func decodeBulkEnvelope(body []byte) ([]json.RawMessage, error) {
	if !utf8.Valid(body) {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil {
		return nil, jsonError(err)
	} else if t != json.Delim('{') {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: body must be an object")
	}
	var raws []json.RawMessage
	seen := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		switch key, _ := t.(string); {
		case key != "contexts":
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "unknown field %q", Truncate(key))
		case seen:
			return nil, apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: key %q appears twice in one object", key)
		}
		seen = true
		if err := dec.Decode(&raws); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return nil, apierr.Errorf(apierr.CodeInvalidArgument, "field \"contexts\": got %s, want array", typeErr.Value)
			}
			return nil, jsonError(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: data after the top-level object")
	}
	return raws, nil
}
