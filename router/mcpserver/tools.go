package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/docstore"
	"github.com/go-kvdb/go-kvdb/router/llm"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Limits as the REST API has them (router/httpapi/list.go).
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
	// topicDescription is given to a topic a tool creates on first use.
	topicDescription = "created by the MCP server"
)

// searchModes are the search modes the REST search accepts.
var searchModes = map[string]bool{"": true, llm.ModeVector: true, llm.ModeKeyword: true, llm.ModeHybrid: true}

// ---- inputs and outputs: their JSON schemas are inferred from these ----

type ListTopicsIn struct {
	Cursor string `json:"cursor,omitempty" jsonschema:"the next_cursor of the previous page, to read the next one"`
}

type TopicsOut struct {
	Topics     []schema.Topic `json:"topics"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

type ListContextsIn struct {
	Topic  string `json:"topic" jsonschema:"the topic name"`
	Tag    string `json:"tag,omitempty" jsonschema:"only contexts carrying this tag"`
	Limit  int    `json:"limit,omitempty" jsonschema:"at most this many contexts (1 to 1000, default 100)"`
	Cursor string `json:"cursor,omitempty" jsonschema:"the next_cursor of the previous page, to read the next one"`
}

type ContextsOut struct {
	Contexts   []schema.Metadata `json:"contexts"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

type ContextIn struct {
	Topic string `json:"topic" jsonschema:"the topic name"`
	ID    string `json:"id" jsonschema:"the context id"`
}

// Content is a context's content as the tools return it: without its
// embedding vector, which an agent has no use for.
type Content struct {
	Text     string           `json:"text,omitempty"`
	Messages []schema.Message `json:"messages,omitempty"`
	Summary  *schema.Summary  `json:"summary,omitempty"`
}

type ContextOut struct {
	Metadata schema.Metadata `json:"metadata"`
	Content  Content         `json:"content"`
	Version  string          `json:"version" jsonschema:"the context's entity tag, as the REST API's ETag"`
}

type StoreContextIn struct {
	Topic string   `json:"topic" jsonschema:"the topic name; created on first use"`
	ID    string   `json:"id,omitempty" jsonschema:"the context id; a new one is made when absent. An existing context of that id is replaced"`
	Text  string   `json:"text" jsonschema:"the text to remember"`
	Tags  []string `json:"tags,omitempty" jsonschema:"tags to filter lists and searches by"`
	Model string   `json:"model,omitempty" jsonschema:"the model the text belongs to, if any"`
}

type StoreContextOut struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	Created bool   `json:"created" jsonschema:"false when an existing context was replaced"`
}

// madeID names the context a call made, for its Call when the input
// named none.
func (o StoreContextOut) madeID() string { return o.ID }

type AppendMessagesIn struct {
	Topic    string           `json:"topic" jsonschema:"the topic name; created on first use"`
	ID       string           `json:"id" jsonschema:"the conversation's context id; created on first use"`
	Messages []schema.Message `json:"messages" jsonschema:"the new turns, oldest first; role is system, user, assistant or tool"`
}

type AppendMessagesOut struct {
	MessagesCount int    `json:"messages_count" jsonschema:"how many messages the conversation holds now"`
	Version       string `json:"version"`
}

type GetMessagesIn struct {
	Topic string `json:"topic" jsonschema:"the topic name"`
	ID    string `json:"id" jsonschema:"the conversation's context id"`
	Last  *int   `json:"last,omitempty" jsonschema:"only the last this many messages (all when absent)"`
}

type MessagesOut struct {
	Messages []schema.Message `json:"messages"`
	Version  string           `json:"version"`
}

type SearchMemoryIn struct {
	Topic string `json:"topic" jsonschema:"the topic name"`
	Query string `json:"query" jsonschema:"what to look for, in words; embedded with the router's embedding model"`
	K     int    `json:"k,omitempty" jsonschema:"at most this many results (1 to 100, default 10)"`
	Mode  string `json:"mode,omitempty" jsonschema:"the search mode, as the REST search accepts it: vector, keyword or hybrid (the default: hybrid with an embedding model, keyword without)"`
}

// Match is one search result, best first.
type Match struct {
	Metadata schema.Metadata `json:"metadata"`
	Content  Content         `json:"content"`
	Score    float64         `json:"score" jsonschema:"the cosine similarity (vector), the BM25 score (keyword) or the fused reciprocal rank score (hybrid)"`
}

type SearchOut struct {
	Results []Match `json:"results"`
}

type DeleteOut struct {
	Deleted bool `json:"deleted"`
}

// ---- the tools ----

func (s *Server) addTools(ms *mcp.Server) {
	const (
		read  = authfile.AccessRead
		write = authfile.AccessWrite
	)
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true}
	addTool(s, ms, &mcp.Tool{Name: "list_topics", Description: "List the topics (the key may see), a page at a time.", Annotations: ro},
		read, func(ListTopicsIn) (string, string) { return "", "" }, s.listTopics)
	addTool(s, ms, &mcp.Tool{Name: "list_contexts", Description: "List a topic's contexts (their metadata), a page at a time, optionally only those with a tag.", Annotations: ro},
		read, func(in ListContextsIn) (string, string) { return in.Topic, "" }, s.listContexts)
	addTool(s, ms, &mcp.Tool{Name: "get_context", Description: "Read one context: its metadata and content (text, messages, summary).", Annotations: ro},
		read, func(in ContextIn) (string, string) { return in.Topic, in.ID }, s.getContext)
	addTool(s, ms, &mcp.Tool{Name: "store_context", Description: "Store a text as a context of a topic (the topic is created on first use); returns its id. With an id, replaces that context."},
		write, func(in StoreContextIn) (string, string) { return in.Topic, in.ID }, s.storeContext)
	addTool(s, ms, &mcp.Tool{Name: "append_messages", Description: "Append turns to a conversation (the topic and the conversation are created on first use)."},
		write, func(in AppendMessagesIn) (string, string) { return in.Topic, in.ID }, s.appendMessages)
	addTool(s, ms, &mcp.Tool{Name: "get_messages", Description: "Read a conversation's messages, oldest first, or only its last ones.", Annotations: ro},
		read, func(in GetMessagesIn) (string, string) { return in.Topic, in.ID }, s.getMessages)
	addTool(s, ms, &mcp.Tool{Name: "search_memory", Description: "Search a topic by meaning and by words (hybrid; by words only when the router has no embedding model): the contexts that best match the query, best first, with their scores.", Annotations: ro},
		read, func(in SearchMemoryIn) (string, string) { return in.Topic, "" }, s.searchMemory)
	destructive := true
	addTool(s, ms, &mcp.Tool{Name: "delete_context", Description: "Delete one context.", Annotations: &mcp.ToolAnnotations{DestructiveHint: &destructive}},
		write, func(in ContextIn) (string, string) { return in.Topic, in.ID }, s.deleteContext)
}

// addTool registers a tool whose calls need the access need on the topic
// target names: it checks the caller, runs the tool, counts and records
// the call, and turns a failure into a tool error.
func addTool[In, Out any](s *Server, ms *mcp.Server, t *mcp.Tool, need authfile.Access, target func(In) (topic, id string),
	run func(context.Context, Caller, In) (Out, error)) {
	mcp.AddTool(ms, t, func(ctx context.Context, _ *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		c := callerOf(ctx)
		topic, id := target(in)
		var out Out
		err := c.allow(need, topic)
		if err == nil {
			out, err = run(ctx, c, in)
		}
		if m, ok := any(out).(interface{ madeID() string }); ok && id == "" && err == nil {
			id = m.madeID()
		}
		call := Call{Tool: t.Name, Topic: schema.Truncate(topic), ID: schema.Truncate(id), Mutating: need >= authfile.AccessWrite, Status: http.StatusOK}
		outcome := "ok"
		if err != nil {
			var apiErr *apierr.Error
			apiErr, err = s.toolError(t.Name, err)
			call.Status, outcome = apiErr.Status(), string(apiErr.Code)
		}
		s.m.ToolCalls.WithLabelValues(t.Name, outcome).Inc()
		if c.Record != nil {
			c.Record(call)
		}
		if err != nil {
			var zero Out
			return nil, zero, err
		}
		return nil, out, nil
	})
}

func (s *Server) listTopics(ctx context.Context, c Caller, in ListTopicsIn) (TopicsOut, error) {
	var after string
	if in.Cursor != "" {
		var err error
		if after, err = schema.DecodeCursor(in.Cursor, schema.ValidName); err != nil {
			return TopicsOut{}, err
		}
	}
	var keep func(storage.Record) bool
	if k := c.Key; k.Scoped() {
		keep = func(rec storage.Record) bool { return k.TopicAllowed(string(rec.Key)) }
	}
	body, err := s.docs.ListTopics(ctx, "", after, maxPageLimit, keep)
	if err != nil {
		return TopicsOut{}, err
	}
	out := TopicsOut{Topics: []schema.Topic{}}
	return out, decode(body, &out)
}

func (s *Server) listContexts(ctx context.Context, _ Caller, in ListContextsIn) (ContextsOut, error) {
	if err := schema.CheckName(in.Topic); err != nil {
		return ContextsOut{}, err
	}
	limit := in.Limit
	switch {
	case limit == 0:
		limit = defaultPageLimit
	case limit < 1 || limit > maxPageLimit:
		return ContextsOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"limit\": %d is not in 1..%d", limit, maxPageLimit)
	}
	var f docstore.ContextFilter
	if in.Tag != "" {
		if len(in.Tag) > schema.MaxTagLen {
			return ContextsOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"tag\": a tag has 1 to %d bytes", schema.MaxTagLen)
		}
		f.Tags = []string{in.Tag}
	}
	var after string
	if in.Cursor != "" {
		var err error
		if after, err = schema.DecodeCursor(in.Cursor, schema.ValidID); err != nil {
			return ContextsOut{}, err
		}
	}
	body, err := s.docs.ListContexts(ctx, in.Topic, after, limit, false, f)
	if err != nil {
		return ContextsOut{}, err
	}
	var page struct {
		Contexts []struct {
			Metadata schema.Metadata `json:"metadata"`
		} `json:"contexts"`
		NextCursor string `json:"next_cursor"`
	}
	if err := decode(body, &page); err != nil {
		return ContextsOut{}, err
	}
	out := ContextsOut{Contexts: make([]schema.Metadata, len(page.Contexts)), NextCursor: page.NextCursor}
	for i, c := range page.Contexts {
		out.Contexts[i] = c.Metadata
	}
	return out, nil
}

func checkContext(topic, id string) error {
	if err := schema.CheckName(topic); err != nil {
		return err
	}
	return schema.CheckID(id)
}

func (s *Server) getContext(ctx context.Context, _ Caller, in ContextIn) (ContextOut, error) {
	if err := checkContext(in.Topic, in.ID); err != nil {
		return ContextOut{}, err
	}
	body, v, _, err := s.docs.Context(ctx, in.Topic, in.ID)
	if err != nil {
		return ContextOut{}, err
	}
	out := ContextOut{Version: schema.ETag(v)}
	return out, decode(body, &out)
}

func (s *Server) storeContext(ctx context.Context, _ Caller, in StoreContextIn) (StoreContextOut, error) {
	if err := schema.CheckName(in.Topic); err != nil {
		return StoreContextOut{}, err
	}
	if in.Text == "" {
		return StoreContextOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"text\": an empty text has nothing to remember")
	}
	now := time.Now().UTC()
	// The REST API's rules (schema.DecodeDocument): Normalize checks the
	// id, tags and model, and stamps the times.
	doc := &schema.Document{
		Metadata: schema.Metadata{ID: in.ID, Tags: in.Tags, Model: in.Model},
		Content:  schema.Content{Text: in.Text},
	}
	if err := doc.Normalize(now); err != nil {
		return StoreContextOut{}, err
	}
	if err := doc.Metadata.ResolveExpiry(now); err != nil {
		return StoreContextOut{}, err
	}
	cond := storage.CondNone // an id names the context to write, new or not (PUT)
	if doc.Metadata.ID == "" {
		doc.Metadata.ID, cond = newID(now), storage.CondAbsent // a new context (POST)
	}
	if err := s.docs.EnsureTopic(ctx, in.Topic, topicDescription); err != nil {
		return StoreContextOut{}, err
	}
	id := doc.Metadata.ID
	w, err := s.docs.Put(ctx, in.Topic, doc, cond, 0, func(res storage.Result) error {
		return docstore.PreconditionFailed(in.Topic, id, cond, 0, res)
	})
	if err != nil {
		return StoreContextOut{}, err
	}
	return StoreContextOut{ID: id, Version: schema.ETag(w.Version), Created: w.Created}, nil
}

func (s *Server) appendMessages(ctx context.Context, _ Caller, in AppendMessagesIn) (AppendMessagesOut, error) {
	if err := checkContext(in.Topic, in.ID); err != nil {
		return AppendMessagesOut{}, err
	}
	if len(in.Messages) == 0 {
		return AppendMessagesOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages\": at least one message is required")
	}
	for i, m := range in.Messages {
		if !schema.ValidRoles[m.Role] {
			return AppendMessagesOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"messages[%d].role\": %q is not one of system, user, assistant, tool", i, schema.Truncate(m.Role))
		}
	}
	if err := s.docs.EnsureTopic(ctx, in.Topic, topicDescription); err != nil {
		return AppendMessagesOut{}, err
	}
	res, err := s.docs.Append(ctx, in.Topic, in.ID, in.Messages, 0, nil)
	if err != nil {
		return AppendMessagesOut{}, err
	}
	return AppendMessagesOut{MessagesCount: int(res.Count), Version: schema.ETag(res.Version)}, nil
}

func (s *Server) getMessages(ctx context.Context, _ Caller, in GetMessagesIn) (MessagesOut, error) {
	if err := checkContext(in.Topic, in.ID); err != nil {
		return MessagesOut{}, err
	}
	if in.Last != nil && (*in.Last < 0 || *in.Last > schema.MaxMessages) {
		return MessagesOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"last\": %d is not in 0..%d", *in.Last, schema.MaxMessages)
	}
	if in.Last != nil {
		p, err := s.docs.LastMessages(ctx, in.Topic, in.ID, *in.Last)
		if err != nil {
			return MessagesOut{}, err
		}
		return MessagesOut{Messages: p.Messages, Version: schema.ETag(p.Version)}, nil
	}
	doc, v, err := s.docs.ReadContext(ctx, in.Topic, in.ID)
	if err != nil {
		return MessagesOut{}, err
	}
	msgs := doc.Content.Messages
	if msgs == nil {
		msgs = []schema.Message{}
	}
	return MessagesOut{Messages: msgs, Version: schema.ETag(v)}, nil
}

func (s *Server) searchMemory(ctx context.Context, _ Caller, in SearchMemoryIn) (SearchOut, error) {
	if err := schema.CheckName(in.Topic); err != nil {
		return SearchOut{}, err
	}
	if in.Query == "" {
		return SearchOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"query\": say what to look for")
	}
	if !searchModes[in.Mode] {
		return SearchOut{}, apierr.Errorf(apierr.CodeInvalidArgument, "field \"mode\": %q is not a search mode of this router (vector, keyword, hybrid)", schema.Truncate(in.Mode))
	}
	req := llm.SearchRequest{Query: in.Query, K: in.K, Mode: in.Mode}
	if err := req.Validate(); err != nil {
		return SearchOut{}, err
	}
	body, err := s.llm.Search(ctx, in.Topic, req, true)
	if err != nil {
		return SearchOut{}, err
	}
	out := SearchOut{Results: []Match{}}
	return out, decode(body, &out)
}

func (s *Server) deleteContext(ctx context.Context, _ Caller, in ContextIn) (DeleteOut, error) {
	if err := checkContext(in.Topic, in.ID); err != nil {
		return DeleteOut{}, err
	}
	if err := s.docs.Delete(ctx, in.Topic, in.ID, storage.CondExists, 0); err != nil {
		return DeleteOut{}, err
	}
	return DeleteOut{Deleted: true}, nil
}

// decode reads an answer the store rendered for the REST API.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return &apierr.Error{Code: apierr.CodeInternal, Message: "a stored answer cannot be decoded", Err: fmt.Errorf("decode: %w", err)}
	}
	return nil
}

// newID makes a context id that sorts by creation time, as the REST API's
// POST does: 12 hex digits of milliseconds, then 16 random hex digits.
func newID(now time.Time) string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%012x%s", now.UnixMilli(), hex.EncodeToString(b[:]))
}
