package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// ---- topics ----

// CreateTopic creates t (its Name, Description, MaxTokens and
// DefaultTTLSeconds) and returns it as stored. ErrAlreadyExists if taken.
func (c *Client) CreateTopic(ctx context.Context, t Topic) (*Topic, error) {
	in := struct {
		Name              string `json:"name"`
		Description       string `json:"description,omitempty"`
		MaxTokens         int    `json:"max_tokens,omitempty"`
		DefaultTTLSeconds int64  `json:"default_ttl_seconds,omitempty"`
	}{t.Name, t.Description, t.MaxTokens, t.DefaultTTLSeconds}
	var out Topic
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("topics"), nil, in, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// Topic returns the topic called name.
func (c *Client) Topic(ctx context.Context, name string) (*Topic, error) {
	var out Topic
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("topics", name), nil, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTopics returns one page of topics whose names begin with prefix.
func (c *Client) ListTopics(ctx context.Context, prefix string, limit int, cursor string) (*TopicPage, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out TopicPage
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("topics"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// Topics iterates over every topic whose name begins with prefix, in name
// order, a page at a time. An error ends the iteration.
func (c *Client) Topics(ctx context.Context, prefix string) iter.Seq2[Topic, error] {
	return func(yield func(Topic, error) bool) {
		cursor := ""
		for {
			page, err := c.ListTopics(ctx, prefix, 0, cursor)
			if err != nil {
				yield(Topic{}, err)
				return
			}
			for _, t := range page.Topics {
				if !yield(t, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			cursor = page.NextCursor
		}
	}
}

// DeleteTopic deletes a topic and every context in it.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	_, _, err := c.do(ctx, http.MethodDelete, pathOf("topics", name), nil, nil, nil, nil)
	return err
}

// ---- contexts ----

func (o *WriteOptions) header() http.Header {
	h := http.Header{}
	if o == nil {
		return h
	}
	if o.IfMatch != "" {
		h.Set("If-Match", o.IfMatch)
	}
	if o.IfNoneMatch {
		h.Set("If-None-Match", "*")
	}
	return h
}

// CreateContext stores doc as a new context of topic (POST); an empty
// doc.Metadata.ID is generated. ErrAlreadyExists if the id is taken.
func (c *Client) CreateContext(ctx context.Context, topic string, doc Document) (*Document, error) {
	return c.writeContext(ctx, http.MethodPost, pathOf("topics", topic, "contexts"), doc, nil)
}

// PutContext stores doc as the context id of topic, creating or replacing
// it; opts (may be nil) make it conditional (ErrFailedPrecondition).
func (c *Client) PutContext(ctx context.Context, topic, id string, doc Document, opts *WriteOptions) (*Document, error) {
	return c.writeContext(ctx, http.MethodPut, pathOf("topics", topic, "contexts", id), doc, opts)
}

func (c *Client) writeContext(ctx context.Context, method, path string, doc Document, opts *WriteOptions) (*Document, error) {
	var out Document
	h, status, err := c.do(ctx, method, path, nil, doc, &out, opts.header())
	if err != nil {
		return nil, err
	}
	out.ETag, out.Created = h.Get("ETag"), status == http.StatusCreated
	return &out, nil
}

// PutContexts stores up to 1,000 documents in topic in one request (POST
// …/contexts/_bulk), each as PutContext without options would: every
// doc.Metadata.ID must be set, once. One invalid document refuses them all
// (*Error, nothing written). When some are not stored (a shard down) it
// returns the result of each with the *Error of the first failure: the
// rest were stored, and calling it again with the same documents is safe.
func (c *Client) PutContexts(ctx context.Context, topic string, docs []Document) (*BulkResult, error) {
	b, err := json.Marshal(map[string][]Document{"contexts": docs})
	if err != nil {
		return nil, fmt.Errorf("kvdb POST bulk: encode request: %w", err)
	}
	path := pathOf("topics", topic, "contexts", "_bulk")
	resp, err := c.send(ctx, request{method: http.MethodPost, path: path, body: bytes.NewReader(b), ctype: "application/json", partial: true})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("kvdb POST %s: read answer: %w: %w", path, ErrUnavailable, err)
	}
	var out BulkResult
	derr := json.Unmarshal(raw, &out)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		e := errorOfBody(resp, raw)
		if derr != nil || out.Results == nil { // no bulk answer: a plain error (400, 404, a proxy's)
			return nil, e
		}
		return &out, e
	}
	if derr != nil {
		return nil, fmt.Errorf("kvdb POST %s: decode answer: %w", path, derr)
	}
	return &out, nil
}

// GetContext returns the context id of topic, with its ETag.
func (c *Client) GetContext(ctx context.Context, topic, id string) (*Document, error) {
	var out Document
	h, _, err := c.do(ctx, http.MethodGet, pathOf("topics", topic, "contexts", id), nil, nil, &out, nil)
	if err != nil {
		return nil, err
	}
	out.ETag = h.Get("ETag")
	return &out, nil
}

// DeleteContext deletes the context id of topic; opts.IfMatch (opts may
// be nil) deletes only that version.
func (c *Client) DeleteContext(ctx context.Context, topic, id string, opts *WriteOptions) error {
	_, _, err := c.do(ctx, http.MethodDelete, pathOf("topics", topic, "contexts", id), nil, nil, nil, opts.header())
	return err
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	for _, t := range o.Tags {
		q.Add("tag", t)
	}
	if o.Model != "" {
		q.Set("model", o.Model)
	}
	if o.IncludeContent {
		q.Set("include", "content")
	}
	return q
}

// ListContexts returns one page of a topic's contexts, sorted by id. With
// Tags or Model a page may hold fewer than Limit while more follow: go on
// until NextCursor is empty (or use Contexts).
func (c *Client) ListContexts(ctx context.Context, topic string, opts ListOptions) (*ContextPage, error) {
	var out ContextPage
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("topics", topic, "contexts"), opts.query(), nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// Contexts iterates over every context of topic that opts select, in id
// order, following the pages' cursors from opts.Cursor. An error ends the
// iteration.
func (c *Client) Contexts(ctx context.Context, topic string, opts ListOptions) iter.Seq2[Document, error] {
	return func(yield func(Document, error) bool) {
		for {
			page, err := c.ListContexts(ctx, topic, opts)
			if err != nil {
				yield(Document{}, err)
				return
			}
			for _, d := range page.Contexts {
				if !yield(d, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			opts.Cursor = page.NextCursor
		}
	}
}

// ---- messages, search, chat ----

// AppendMessages appends msgs to a conversation, creating the context if
// it does not exist (the topic must). It returns the conversation's new
// length and ETag. ifMatch, when not empty, appends only to that version.
func (c *Client) AppendMessages(ctx context.Context, topic, id string, msgs []Message, ifMatch string) (count int, etag string, err error) {
	var out struct {
		Count int `json:"messages_count"`
	}
	h := http.Header{}
	if ifMatch != "" {
		h.Set("If-Match", ifMatch)
	}
	hdr, _, err := c.do(ctx, http.MethodPost, pathOf("topics", topic, "contexts", id, "messages"), nil,
		map[string]any{"messages": msgs}, &out, h)
	if err != nil {
		return 0, "", err
	}
	return out.Count, hdr.Get("ETag"), nil
}

// Messages returns the last n messages of a conversation, oldest first
// (all of them when n <= 0), and its ETag.
func (c *Client) Messages(ctx context.Context, topic, id string, n int) ([]Message, string, error) {
	q := url.Values{}
	if n > 0 {
		q.Set("last", strconv.Itoa(n))
	}
	var out struct {
		Messages []Message `json:"messages"`
	}
	hdr, _, err := c.do(ctx, http.MethodGet, pathOf("topics", topic, "contexts", id, "messages"), q, nil, &out, nil)
	if err != nil {
		return nil, "", err
	}
	return out.Messages, hdr.Get("ETag"), nil
}

// AppendMessagesWith appends msgs to a conversation as AppendMessages
// does, with the options o, and returns the seqs stored.
func (c *Client) AppendMessagesWith(ctx context.Context, topic, id string, msgs []Message, o AppendOptions) (Appended, error) {
	var out Appended
	h := http.Header{}
	if o.IfMatch != "" {
		h.Set("If-Match", o.IfMatch)
	}
	if o.IdempotencyKey != "" {
		h.Set("Idempotency-Key", o.IdempotencyKey)
	}
	hdr, _, err := c.do(ctx, http.MethodPost, pathOf("topics", topic, "contexts", id, "messages"), nil,
		map[string]any{"messages": msgs}, &out, h)
	if err != nil {
		return Appended{}, err
	}
	out.ETag, out.Replayed = hdr.Get("ETag"), hdr.Get("Idempotent-Replayed") == "true"
	return out, nil
}

// MessagePage is a page of a conversation, oldest first.
type MessagePage struct {
	Messages   []Message `json:"messages"`
	Count      uint64    `json:"messages_count"`
	NextCursor string    `json:"next_cursor"`
}

// MessagesPage reads a page of at most limit messages of a conversation
// (0: the router's default, 100), oldest first, after cursor (a
// NextCursor; "" for the first page).
func (c *Client) MessagesPage(ctx context.Context, topic, id string, limit int, cursor string) (*MessagePage, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	} else {
		q.Set("limit", "100")
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out MessagePage
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("topics", topic, "contexts", id, "messages"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// History iterates over a whole conversation, oldest first, a page of
// limit messages at a time: each page costs its size, however long the
// conversation. An error ends the iteration.
func (c *Client) History(ctx context.Context, topic, id string, limit int) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		cursor := ""
		for {
			page, err := c.MessagesPage(ctx, topic, id, limit, cursor)
			if err != nil {
				yield(Message{}, err)
				return
			}
			for _, m := range page.Messages {
				if !yield(m, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			cursor = page.NextCursor
		}
	}
}

// Search returns the contexts of topic most similar to the request, best
// first.
func (c *Client) Search(ctx context.Context, topic string, req SearchRequest) ([]SearchResult, error) {
	q := url.Values{}
	if req.IncludeContent {
		q.Set("include", "content")
	}
	var out struct {
		Results []SearchResult `json:"results"`
	}
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("topics", topic, "search"), q, req, &out, nil); err != nil {
		return nil, err
	}
	return out.Results, nil
}

type chatBody struct {
	ChatRequest
	Stream bool `json:"stream"`
}

// Chat sends a message to the conversation id of topic (created if
// absent) and returns the model's whole answer, stored with the message.
func (c *Client) Chat(ctx context.Context, topic, id string, req ChatRequest) (*ChatAnswer, error) {
	var out ChatAnswer
	h, _, err := c.do(ctx, http.MethodPost, pathOf("topics", topic, "contexts", id, "chat"), nil, chatBody{req, false}, &out, nil)
	if err != nil {
		return nil, err
	}
	out.ETag = h.Get("ETag")
	return &out, nil
}

// ChatStream is Chat with the answer streamed: it iterates over the
// pieces as the model writes them; the last has Done set, with the token
// counts and the conversation's ETag. Nothing is stored unless the answer
// completes. A failure, before or during the stream, is the iteration's
// last error. Stopping the iteration early abandons the chat.
func (c *Client) ChatStream(ctx context.Context, topic, id string, req ChatRequest) iter.Seq2[ChatChunk, error] {
	return func(yield func(ChatChunk, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b, err := json.Marshal(chatBody{req, true})
		if err != nil {
			yield(ChatChunk{}, err)
			return
		}
		path := pathOf("topics", topic, "contexts", id, "chat")
		resp, err := c.send(ctx, request{method: http.MethodPost, path: path, body: bytes.NewReader(b), ctype: "application/json"})
		if err != nil {
			yield(ChatChunk{}, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var ch struct {
				ChatChunk
				Error *struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(line, &ch); err != nil {
				yield(ChatChunk{}, fmt.Errorf("kvdb chat stream: %w", err))
				return
			}
			if ch.Error != nil {
				e := &Error{StatusCode: http.StatusOK, Code: ch.Error.Code, Message: ch.Error.Message}
				if s, ok := codes[e.Code]; ok {
					for st, se := range statuses {
						if se == s {
							e.StatusCode = st
							break
						}
					}
				}
				yield(ChatChunk{}, e)
				return
			}
			if !yield(ch.ChatChunk, nil) || ch.Done {
				return
			}
		}
		err = sc.Err()
		if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("kvdb chat stream: %w: the answer ended before its last line", ErrUnavailable)
		}
		yield(ChatChunk{}, err)
	}
}

// ---- operations ----

// Health returns nil while the router answers /healthz.
func (c *Client) Health(ctx context.Context) error {
	_, _, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil, nil)
	return err
}

// Ready returns nil when every key can be read and written (/readyz).
func (c *Client) Ready(ctx context.Context) error {
	_, _, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil, nil)
	return err
}

// Cluster returns the router's view of the cluster: its shape, the
// shards' states, and the last repair and rebalance.
func (c *Client) Cluster(ctx context.Context) (*Cluster, error) {
	var out Cluster
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("cluster"), nil, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// Repair starts an anti-entropy pass; with wait it runs it and returns
// its outcome.
func (c *Client) Repair(ctx context.Context, wait bool) (*SyncStatus, error) {
	q := url.Values{}
	if wait {
		q.Set("wait", "true")
	}
	var out struct {
		Repair *SyncStatus `json:"repair"`
	}
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("admin", "repair"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	return out.Repair, nil
}

// Reload makes the router re-read its configuration and rebalance if the
// shards or replicas changed. ErrFailedPrecondition without a config file.
func (c *Client) Reload(ctx context.Context) (*Cluster, error) {
	var out Cluster
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("admin", "reload"), nil, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveShard drains a shard found by DNS and removes it for good
// (discovery mode only: ErrFailedPrecondition otherwise).
func (c *Client) RemoveShard(ctx context.Context, name string) (*Cluster, error) {
	var out Cluster
	if _, _, err := c.do(ctx, http.MethodDelete, pathOf("admin", "shards", name), nil, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// Reencrypt rewrites every record not sealed with the router's current
// encryption key under it; with wait it runs the pass and returns its
// outcome, as the router reports it (JSON).
func (c *Client) Reencrypt(ctx context.Context, wait bool) (json.RawMessage, error) {
	q := url.Values{}
	if wait {
		q.Set("wait", "true")
	}
	var out json.RawMessage
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("admin", "reencrypt"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// Compression returns the router's compression state: the current
// dictionary and the dictionaries it holds.
func (c *Client) Compression(ctx context.Context) (*CompressionStatus, error) {
	var out CompressionStatus
	if _, _, err := c.do(ctx, http.MethodGet, pathOf("admin", "compression"), nil, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// TrainCompression trains a zstd dictionary on stored context bodies,
// stores it on every shard and makes it current; with rewrite, existing
// contexts are then re-encoded with it (the outcome is in Rewrite).
// ErrFailedPrecondition when too few contexts are stored (or the
// dictionary would not help), ErrUnavailable when a shard is down.
func (c *Client) TrainCompression(ctx context.Context, rewrite bool) (*TrainResult, error) {
	q := url.Values{}
	if rewrite {
		q.Set("rewrite", "true")
	}
	var out TrainResult
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("admin", "compression", "train"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}

// RewriteCompression re-encodes every context not compressed with the
// current dictionary, in place at the same version. With wait it runs the
// pass and returns its outcome; without, it starts it and returns nil.
// ErrFailedPrecondition when no dictionary is current.
func (c *Client) RewriteCompression(ctx context.Context, wait bool) (*RewriteResult, error) {
	q := url.Values{}
	if wait {
		q.Set("wait", "true")
	}
	var out RewriteResult
	if _, _, err := c.do(ctx, http.MethodPost, pathOf("admin", "compression", "rewrite"), q, nil, &out, nil); err != nil {
		return nil, err
	}
	if !wait {
		return nil, nil
	}
	return &out, nil
}

// OpenAPI returns the router's OpenAPI description (YAML).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/openapi.yaml"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
