package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/router/apierr"
)

// Limits on a context document, checked before anything is stored.
const (
	maxTags       = 64
	maxTagLen     = 128
	maxEmbeddings = 16384
	maxModelLen   = 256
	maxDescLen    = 4096
	maxNameLen    = 128
	maxIDLen      = 256
	maxMessages   = 100000
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
}

// Content is what a context holds.
type Content struct {
	Text       string    `json:"text,omitempty"`
	Messages   []Message `json:"messages,omitempty"`
	Embeddings []float32 `json:"embeddings,omitempty"`
	// Summary folds the oldest messages of a long conversation (see
	// POST …/chat); the messages stay stored.
	Summary *Summary `json:"summary,omitempty"`
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

// validName reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.
func validName(s string) bool { return validToken(s, maxNameLen, false) }

// validID reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$.
func validID(s string) bool { return validToken(s, maxIDLen, true) }

// validToken checks names and ids by hand: they are checked on every request
// and a regexp costs more than the rest of a cache hit.
func validToken(s string, max int, colon bool) bool {
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

func checkName(s string) error {
	if !validName(s) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "topic name %q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", truncate(s))
	}
	return nil
}

func checkID(s string) error {
	if !validID(s) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "context id %q must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$", truncate(s))
	}
	return nil
}

// truncate keeps error messages short when a client sends a huge value.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// decodeJSON decodes one JSON object into v, rejecting unknown fields and
// trailing data, and names the offending field in its error.
func decodeJSON(body []byte, v any) error {
	if !utf8.Valid(body) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: data after the top-level object")
	}
	if key, dup := duplicateKey(body); dup {
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: key %q appears twice in one object", truncate(key))
	}
	return nil
}

func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: body must be an object, got %s", typeErr.Value)
		}
		return apierr.Errorf(apierr.CodeInvalidArgument, "field %q: got %s, want %s", field, typeErr.Value, jsonType(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr):
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.EOF):
		return apierr.Errorf(apierr.CodeInvalidArgument, "request body is empty, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: body ends early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apierr.Errorf(apierr.CodeInvalidArgument, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return apierr.Errorf(apierr.CodeInvalidArgument, "invalid JSON: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "float32", "float64", "int", "int64", "uint64":
		return "number"
	}
	return kind
}

// topicRequest is the body of POST /api/v1/topics.
type topicRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	MaxTokens   int    `json:"max_tokens"`
	// DefaultTTLSeconds: see Topic.
	DefaultTTLSeconds int64 `json:"default_ttl_seconds"`
}

func (r *topicRequest) validate() error {
	if err := checkName(r.Name); err != nil {
		return err
	}
	if len(r.Description) > maxDescLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"description\": longer than %d bytes", maxDescLen)
	}
	if r.MaxTokens < 0 || r.MaxTokens > maxTokenBudget {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"max_tokens\": %d is not in 0..%d", r.MaxTokens, maxTokenBudget)
	}
	if r.DefaultTTLSeconds < 0 || r.DefaultTTLSeconds > maxTTLSeconds {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"default_ttl_seconds\": %d is not in 0..%d", r.DefaultTTLSeconds, maxTTLSeconds)
	}
	return nil
}

var validRoles = map[string]bool{"system": true, "user": true, "assistant": true, "tool": true}

// normalize validates a document and fills what the router owns: a missing
// created_at becomes now, updated_at is always now.
func (d *Document) normalize(now time.Time) error {
	m := &d.Metadata
	if m.ID != "" {
		if err := checkID(m.ID); err != nil {
			return err
		}
	}
	if m.CreatedAt == "" {
		m.CreatedAt = now.Format(time.RFC3339Nano)
	} else if _, err := time.Parse(time.RFC3339Nano, m.CreatedAt); err != nil {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.created_at\": %q is not an RFC 3339 time", truncate(m.CreatedAt))
	}
	m.UpdatedAt = now.Format(time.RFC3339Nano)
	if len(m.Model) > maxModelLen {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.model\": longer than %d bytes", maxModelLen)
	}
	if len(m.Tags) > maxTags {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.tags\": %d tags, at most %d allowed", len(m.Tags), maxTags)
	}
	for i, t := range m.Tags {
		if t == "" || len(t) > maxTagLen {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"metadata.tags[%d]\": a tag has 1 to %d bytes", i, maxTagLen)
		}
	}
	if len(d.Content.Embeddings) > maxEmbeddings {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.embeddings\": %d values, at most %d allowed", len(d.Content.Embeddings), maxEmbeddings)
	}
	if len(d.Content.Messages) > maxMessages {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.messages\": %d messages, at most %d allowed", len(d.Content.Messages), maxMessages)
	}
	for i, msg := range d.Content.Messages {
		if !validRoles[msg.Role] {
			return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.messages[%d].role\": %q is not one of system, user, assistant, tool", i, truncate(msg.Role))
		}
	}
	if s := d.Content.Summary; s != nil && (s.Messages < 0 || s.Messages > len(d.Content.Messages)) {
		return apierr.Errorf(apierr.CodeInvalidArgument, "field \"content.summary.messages\": %d is not in 0..%d (the number of messages)", s.Messages, len(d.Content.Messages))
	}
	return nil
}

// decodeDocument reads and validates a context document from a request body.
func decodeDocument(body []byte, now time.Time) (*Document, error) {
	var d Document
	if err := decodeJSON(body, &d); err != nil {
		return nil, err
	}
	if err := d.normalize(now); err != nil {
		return nil, err
	}
	if err := d.Metadata.resolveExpiry(now); err != nil {
		return nil, err
	}
	return &d, nil
}

// topicRecordJSON renders a topic for the API and for storage.
func topicJSON(t *Topic) []byte {
	b, err := json.Marshal(t)
	if err != nil { // a struct of strings always marshals
		panic(fmt.Sprintf("marshal topic: %v", err))
	}
	return b
}
