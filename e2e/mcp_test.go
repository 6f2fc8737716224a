package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/mcpserver"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer sends every request with a Go-KVDB API key.
type bearer struct{ secret string }

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.secret)
	return http.DefaultTransport.RoundTrip(req)
}

// mcpSession connects the SDK's client to a router's /mcp with secret
// ("" sends no key).
func mcpSession(t *testing.T, base, secret string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Timeout: 20 * time.Second}
	if secret != "" {
		hc.Transport = bearer{secret}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "kvdb-e2e", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect to %s/mcp: %v", base, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callTool calls a tool; a tool error is returned as its text, with ok false.
func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, out any) (msg string, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("CallTool(%s, %v): protocol error %v, want a result", name, args, err)
	}
	if res.IsError {
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				msg += tc.Text
			}
		}
		return msg, false
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("CallTool(%s): structured result %s: %v", name, b, err)
		}
	}
	return "", true
}

// mustTool calls a tool that must succeed.
func mustTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, out any) {
	t.Helper()
	if msg, ok := callTool(t, cs, name, args, out); !ok {
		t.Fatalf("CallTool(%s, %v) = tool error %q, want success", name, args, msg)
	}
}

// wantToolError calls a tool that must fail with a tool error containing
// each of substrs.
func wantToolError(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, substrs ...string) {
	t.Helper()
	msg, ok := callTool(t, cs, name, args, nil)
	if ok {
		t.Errorf("CallTool(%s, %v) succeeded, want a tool error containing %q", name, args, substrs)
		return
	}
	for _, s := range substrs {
		if !strings.Contains(msg, s) {
			t.Errorf("CallTool(%s, %v) = tool error %q, want it to contain %q", name, args, msg, s)
		}
	}
}

// TestMCPTools drives every tool of a real router's MCP server with the
// SDK's client over streamable HTTP, with the fake Ollama as the
// embedding model: each tool's happy path and its bad input.
func TestMCPTools(t *testing.T) {
	t.Parallel()
	fake := ollamatest.New(t)
	dir := t.TempDir()
	_, base := startSingle(t, filepath.Join(dir, "kvdb.db"), "-ollama-url="+fake.URL, "-embed-model=embed-a", "-max-body-size=1048576")
	cs := mcpSession(t, base, "") // no -auth-file: open on loopback, like the REST API

	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatalf("ListTools: %v", err)
	}
	names := map[string]bool{}
	for _, tl := range tools.Tools {
		names[tl.Name] = true
		if tl.InputSchema == nil || tl.OutputSchema == nil {
			t.Errorf("tool %s: input schema %v, output schema %v, want both", tl.Name, tl.InputSchema, tl.OutputSchema)
		}
	}
	for _, n := range []string{"list_topics", "list_contexts", "get_context", "store_context", "append_messages", "get_messages", "search_memory", "delete_context"} {
		if !names[n] {
			t.Errorf("ListTools lacks %s; has %v", n, names)
		}
	}

	// store_context creates the topic, and an id when none is given.
	var st mcpserver.StoreContextOut
	mustTool(t, cs, "store_context", map[string]any{"topic": "notes", "text": "the cat sat on the mat", "tags": []string{"pets"}}, &st)
	if st.ID == "" || !st.Created || st.Version == "" {
		t.Errorf("store_context without id = %+v, want a new id, created, a version", st)
	}
	var st2 mcpserver.StoreContextOut
	mustTool(t, cs, "store_context", map[string]any{"topic": "notes", "id": "rocket", "text": "rockets fly to orbit on fuel", "model": "m1"}, &st2)
	if st2.ID != "rocket" || !st2.Created {
		t.Errorf("store_context with id = %+v, want id rocket, created", st2)
	}
	// The REST API sees what the tool stored.
	r := do(t, "GET", base+"/api/v1/topics/notes/contexts/"+st.ID, nil)
	if got := field(r.Body, "content", "text"); got != "the cat sat on the mat" {
		t.Errorf("REST GET of the stored context: text = %v, want the stored text; body %s", got, r.Raw)
	}

	var got mcpserver.ContextOut
	mustTool(t, cs, "get_context", map[string]any{"topic": "notes", "id": "rocket"}, &got)
	if got.Content.Text != "rockets fly to orbit on fuel" || got.Metadata.Model != "m1" || got.Version != st2.Version {
		t.Errorf("get_context = %+v, want the stored text, model m1, version %s", got, st2.Version)
	}

	var topics mcpserver.TopicsOut
	mustTool(t, cs, "list_topics", map[string]any{}, &topics)
	if len(topics.Topics) != 1 || topics.Topics[0].Name != "notes" {
		t.Errorf("list_topics = %+v, want [notes]", topics)
	}

	var list mcpserver.ContextsOut
	mustTool(t, cs, "list_contexts", map[string]any{"topic": "notes"}, &list)
	if len(list.Contexts) != 2 {
		t.Errorf("list_contexts = %+v, want 2 contexts", list)
	}
	mustTool(t, cs, "list_contexts", map[string]any{"topic": "notes", "tag": "pets", "limit": 10}, &list)
	if len(list.Contexts) != 1 || list.Contexts[0].ID != st.ID {
		t.Errorf("list_contexts tag=pets = %+v, want only %s", list, st.ID)
	}

	var app mcpserver.AppendMessagesOut
	mustTool(t, cs, "append_messages", map[string]any{"topic": "chats", "id": "c1", "messages": []map[string]string{
		{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}}}, &app)
	mustTool(t, cs, "append_messages", map[string]any{"topic": "chats", "id": "c1", "messages": []map[string]string{
		{"role": "user", "content": "how are you"}}}, &app)
	if app.MessagesCount != 3 {
		t.Errorf("append_messages: messages_count = %d, want 3", app.MessagesCount)
	}
	var msgs mcpserver.MessagesOut
	mustTool(t, cs, "get_messages", map[string]any{"topic": "chats", "id": "c1", "last": 2}, &msgs)
	if len(msgs.Messages) != 2 || msgs.Messages[0].Content != "hi there" || msgs.Messages[1].Content != "how are you" {
		t.Errorf("get_messages last=2 = %+v, want the last two turns", msgs.Messages)
	}
	mustTool(t, cs, "get_messages", map[string]any{"topic": "chats", "id": "c1"}, &msgs)
	if len(msgs.Messages) != 3 {
		t.Errorf("get_messages = %d messages, want 3", len(msgs.Messages))
	}

	// search_memory embeds the query with the fake Ollama's embed-a.
	var found mcpserver.SearchOut
	mustTool(t, cs, "search_memory", map[string]any{"topic": "notes", "query": "rockets fly to orbit", "k": 2}, &found)
	if len(found.Results) != 2 || found.Results[0].Metadata.ID != "rocket" || found.Results[0].Content.Text == "" ||
		!(found.Results[0].Score > found.Results[1].Score) {
		t.Errorf("search_memory = %+v, want rocket first with its text, then the other with a lower score", found.Results)
	}
	if reqs := fake.Requests("/api/embed"); len(reqs) == 0 {
		t.Errorf("the fake Ollama saw no /api/embed request")
	}
	mustTool(t, cs, "search_memory", map[string]any{"topic": "notes", "query": "cat", "mode": "vector", "k": 1}, &found)
	if len(found.Results) != 1 || found.Results[0].Metadata.ID != st.ID {
		t.Errorf("search_memory mode=vector k=1 = %+v, want only %s", found.Results, st.ID)
	}

	var del mcpserver.DeleteOut
	mustTool(t, cs, "delete_context", map[string]any{"topic": "notes", "id": "rocket"}, &del)
	if !del.Deleted {
		t.Errorf("delete_context = %+v, want deleted", del)
	}
	wantToolError(t, cs, "get_context", map[string]any{"topic": "notes", "id": "rocket"}, "not_found")
	wantToolError(t, cs, "delete_context", map[string]any{"topic": "notes", "id": "rocket"}, "not_found")

	// Bad input: a tool error naming the problem, and nothing stored.
	bad := []struct {
		tool string
		args map[string]any
		want []string
	}{
		{"list_contexts", map[string]any{"topic": "no such topic"}, []string{"invalid_argument", "topic name"}},
		{"list_contexts", map[string]any{"topic": "notes", "limit": 5000}, []string{"invalid_argument", "limit"}},
		{"list_contexts", map[string]any{"topic": "missing"}, []string{"not_found"}},
		{"list_topics", map[string]any{"cursor": "%%%"}, []string{"invalid_argument", "cursor"}},
		{"get_context", map[string]any{"topic": "notes", "id": "bad/id"}, []string{"invalid_argument", "context id"}},
		{"get_context", map[string]any{"topic": "notes"}, []string{"id"}}, // the input schema requires it
		{"store_context", map[string]any{"topic": "bad topic!", "text": "x"}, []string{"invalid_argument", "topic name"}},
		{"store_context", map[string]any{"topic": "fresh", "text": ""}, []string{"invalid_argument", "text"}},
		{"store_context", map[string]any{"topic": "fresh", "text": "x", "tags": []string{""}}, []string{"invalid_argument", "tags[0]"}},
		{"store_context", map[string]any{"topic": "fresh", "text": "x", "model": strings.Repeat("m", 300)}, []string{"invalid_argument", "model"}},
		{"store_context", map[string]any{"topic": "fresh", "text": 42}, []string{"text"}}, // wrong type
		{"append_messages", map[string]any{"topic": "fresh", "id": "c", "messages": []map[string]string{}}, []string{"invalid_argument", "at least one"}},
		{"append_messages", map[string]any{"topic": "fresh", "id": "c", "messages": []map[string]string{{"role": "wizard", "content": "x"}}}, []string{"invalid_argument", "messages[0].role"}},
		{"get_messages", map[string]any{"topic": "chats", "id": "c1", "last": -1}, []string{"invalid_argument", "last"}},
		{"search_memory", map[string]any{"topic": "notes", "query": ""}, []string{"invalid_argument", "query"}},
		{"search_memory", map[string]any{"topic": "notes", "query": "cat", "k": 1000}, []string{"invalid_argument", "k"}},
		{"search_memory", map[string]any{"topic": "notes", "query": "cat", "mode": "psychic"}, []string{"invalid_argument", "mode"}},
		{"search_memory", map[string]any{"topic": "missing", "query": "cat"}, []string{"not_found"}},
	}
	for _, b := range bad {
		wantToolError(t, cs, b.tool, b.args, b.want...)
	}
	if r := do(t, "GET", base+"/api/v1/topics/fresh", nil); r.Status != http.StatusNotFound {
		t.Errorf("after bad store_context/append_messages calls, GET topic fresh = %d, want 404 (nothing stored)", r.Status)
	}

	// What the transport refuses comes in the API's error shape.
	accept := []string{"Accept", "application/json, text/event-stream"}
	wantError(t, do(t, "GET", base+"/mcp", nil, accept...), http.StatusMethodNotAllowed, "method_not_allowed", "POST")
	wantError(t, do(t, "POST", base+"/mcp", "x", append(accept, "Content-Type", "text/plain")...), http.StatusUnsupportedMediaType, "unsupported_media_type")
	huge := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"store_context","arguments":{"topic":"fresh","text":"` + strings.Repeat("x", 2<<20) + `"}}}`
	wantError(t, do(t, "POST", base+"/mcp", huge, accept...), http.StatusRequestEntityTooLarge, "payload_too_large")

	// Tool calls are counted by tool and outcome.
	m := do(t, "GET", base+"/metrics", nil)
	for _, want := range []string{
		`kvdb_mcp_tool_calls_total{outcome="ok",tool="store_context"} 2`,
		`kvdb_mcp_tool_calls_total{outcome="not_found",tool="get_context"} 1`,
		`kvdb_mcp_tool_calls_total{outcome="invalid_argument",tool="search_memory"} 3`,
	} {
		if !strings.Contains(string(m.Raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestMCPAuth is the auth matrix of the MCP server on a router with an
// auth file: no key, a reader, a writer limited to topics a*, a writer of
// every topic; and the audit lines of the writes.
func TestMCPAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth.toml")
	keygen := func(name, role, topics string) string {
		out, err := exec.Command(bin.router, "keygen", "-auth-file="+authFile, "-name="+name, "-role="+role, "-topics="+topics).Output()
		if err != nil {
			t.Fatalf("router keygen -name=%s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	reader, scoped, writer := keygen("reader", "reader", ""), keygen("scoped", "writer", "a*"), keygen("writer", "writer", "")
	auditFile := filepath.Join(dir, "audit.log")
	_, base := startSingle(t, filepath.Join(dir, "kvdb.db"), "-auth-file="+authFile, "-audit-log="+auditFile)

	// No key, or an unknown one: 401 in the API's error shape, before MCP.
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	accept := []string{"Accept", "application/json, text/event-stream"}
	wantError(t, do(t, "POST", base+"/mcp", init, accept...), http.StatusUnauthorized, "unauthenticated")
	wantError(t, do(t, "POST", base+"/mcp", init, append(accept, "Authorization", "Bearer kvdb_nope")...), http.StatusUnauthorized, "unauthenticated")

	w, s, rd := mcpSession(t, base, writer), mcpSession(t, base, scoped), mcpSession(t, base, reader)
	mustTool(t, w, "store_context", map[string]any{"topic": "alpha", "id": "x", "text": "in alpha"}, nil)
	mustTool(t, w, "store_context", map[string]any{"topic": "beta", "id": "y", "text": "in beta"}, nil)

	// A reader reads and lists, but never writes.
	var got mcpserver.ContextOut
	mustTool(t, rd, "get_context", map[string]any{"topic": "beta", "id": "y"}, &got)
	if got.Content.Text != "in beta" {
		t.Errorf("reader get_context = %+v, want the text", got)
	}
	mustTool(t, rd, "list_contexts", map[string]any{"topic": "alpha"}, nil)
	mustTool(t, rd, "get_messages", map[string]any{"topic": "beta", "id": "y"}, nil)
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"store_context", map[string]any{"topic": "alpha", "text": "no"}},
		{"append_messages", map[string]any{"topic": "alpha", "id": "x", "messages": []map[string]string{{"role": "user", "content": "no"}}}},
		{"delete_context", map[string]any{"topic": "alpha", "id": "x"}},
	} {
		wantToolError(t, rd, c.tool, c.args, "permission_denied", `"reader"`)
	}

	// A key limited to a* works in alpha, and cannot touch beta at all.
	mustTool(t, s, "store_context", map[string]any{"topic": "alpha", "id": "z", "text": "scoped write"}, nil)
	var made mcpserver.StoreContextOut
	mustTool(t, s, "store_context", map[string]any{"topic": "alpha", "text": "a new id"}, &made)
	mustTool(t, s, "append_messages", map[string]any{"topic": "alpha", "id": "conv", "messages": []map[string]string{{"role": "user", "content": "hi"}}}, nil)
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"get_context", map[string]any{"topic": "beta", "id": "y"}},
		{"list_contexts", map[string]any{"topic": "beta"}},
		{"get_messages", map[string]any{"topic": "beta", "id": "y"}},
		{"search_memory", map[string]any{"topic": "beta", "query": "x"}},
		{"store_context", map[string]any{"topic": "beta", "text": "no"}},
		{"append_messages", map[string]any{"topic": "beta", "id": "y", "messages": []map[string]string{{"role": "user", "content": "no"}}}},
		{"delete_context", map[string]any{"topic": "beta", "id": "y"}},
	} {
		wantToolError(t, s, c.tool, c.args, "permission_denied", `topic "beta"`)
	}
	var topics mcpserver.TopicsOut
	mustTool(t, s, "list_topics", map[string]any{}, &topics)
	if len(topics.Topics) != 1 || topics.Topics[0].Name != "alpha" {
		t.Errorf("scoped list_topics = %+v, want only alpha", topics.Topics)
	}
	mustTool(t, rd, "list_topics", map[string]any{}, &topics)
	if len(topics.Topics) != 2 {
		t.Errorf("reader list_topics = %+v, want alpha and beta", topics.Topics)
	}
	// beta is untouched.
	mustTool(t, w, "get_context", map[string]any{"topic": "beta", "id": "y"}, &got)
	if got.Content.Text != "in beta" {
		t.Errorf("beta/y after the refused calls = %+v, want it unchanged", got)
	}
	mustTool(t, w, "delete_context", map[string]any{"topic": "alpha", "id": "z"}, nil)

	// Refused tool calls count as the REST API's refusals do.
	m := do(t, "GET", base+"/metrics", nil)
	for _, want := range []string{`kvdb_auth_failures_total{reason="role"} 3`, `kvdb_auth_failures_total{reason="topic"} 7`,
		`kvdb_mcp_tool_calls_total{outcome="permission_denied",tool="delete_context"} 2`} {
		if !strings.Contains(string(m.Raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The audit trail has a line per write tool call and per refusal.
	type line struct{ Event, Key, Tool, Topic, Context string }
	var lines []line
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatalf("open the audit log: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			Event, Key, Tool, Topic string
			Context                 string `json:"context_id"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Tool != "" {
			lines = append(lines, line{l.Event, l.Key, l.Tool, l.Topic, l.Context})
		}
	}
	has := func(want line) {
		t.Helper()
		for _, l := range lines {
			if l == want {
				return
			}
		}
		t.Errorf("audit log lacks %+v; tool lines: %+v", want, lines)
	}
	has(line{"mutation", "writer", "store_context", "beta", "y"})
	has(line{"mutation", "writer", "delete_context", "alpha", "z"})
	has(line{"mutation", "scoped", "append_messages", "alpha", "conv"})
	has(line{"mutation", "scoped", "store_context", "alpha", made.ID}) // the id it made
	has(line{"auth_failure", "reader", "delete_context", "alpha", "x"})
	has(line{"auth_failure", "scoped", "get_context", "beta", "y"})
	for _, l := range lines {
		if l.Event == "mutation" && l.Tool == "get_context" {
			t.Errorf("audit log has a read as a mutation: %+v", l)
		}
	}
}
