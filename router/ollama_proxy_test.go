package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dropIn is the real Ollama client pointed at the router's drop-in
// endpoint for topic/id, as OLLAMA_HOST would point it.
func dropIn(t testing.TB, tc *testCluster, topic, id string) *api.Client {
	t.Helper()
	u, err := url.Parse(tc.URL + "/ollama/" + topic + "/" + id)
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(u, http.DefaultClient)
}

func chatWith(t testing.TB, c *api.Client, stream bool, msgs ...api.Message) (string, int) {
	t.Helper()
	var text strings.Builder
	chunks := 0
	err := c.Chat(context.Background(), &api.ChatRequest{Model: "chat-model", Messages: msgs, Stream: &stream}, func(r api.ChatResponse) error {
		text.WriteString(r.Message.Content)
		chunks++
		return nil
	})
	if err != nil {
		t.Fatalf("Chat(%v) = %v", msgs, err)
	}
	return text.String(), chunks
}

func TestDropInOllama(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	c := dropIn(t, tc, "cli", "session")
	ctx := context.Background()

	if err := c.Heartbeat(ctx); err != nil {
		t.Errorf("Heartbeat() = %v", err)
	}
	if v, err := c.Version(ctx); err != nil || v != ollamatest.Version {
		t.Errorf("Version() = %q, %v", v, err)
	}
	if l, err := c.List(ctx); err != nil || len(l.Models) != len(ollamatest.DefaultModels) {
		t.Errorf("List() = %+v, %v", l, err)
	}
	if s, err := c.Show(ctx, &api.ShowRequest{Model: "chat-model"}); err != nil || s.Details.Family != "fake" {
		t.Errorf("Show() = %+v, %v", s, err)
	}
	var se api.StatusError
	if _, err := c.Show(ctx, &api.ShowRequest{Model: "nope"}); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("Show(nope) = %v, want Ollama's 404", err)
	}
	if e, err := c.Embed(ctx, &api.EmbedRequest{Model: "embed-b", Input: "hi"}); err != nil || len(e.Embeddings) != 1 || len(e.Embeddings[0]) != 32 {
		t.Errorf("Embed() = %+v, %v", e, err)
	}
	var gen strings.Builder
	if err := c.Generate(ctx, &api.GenerateRequest{Model: "chat-model", Prompt: "why"}, func(r api.GenerateResponse) error {
		gen.WriteString(r.Response)
		return nil
	}); err != nil || gen.String() != "You said: why" {
		t.Errorf("Generate() = %q, %v", gen.String(), err)
	}
	if _, err := c.ListRunning(ctx); err != nil {
		t.Errorf("ListRunning() (a forwarded path) = %v", err)
	}

	// A conversation: each turn the client resends its history; the
	// router stores only what is new.
	u1 := api.Message{Role: "user", Content: "my name is Ada"}
	a1text, chunks := chatWith(t, c, true, u1)
	if a1text != "You said: my name is Ada" || chunks != 7 {
		t.Errorf("first turn = %q in %d chunks", a1text, chunks)
	}
	if d := documentOf(t, tc, "cli", "session"); len(d.Content.Messages) != 2 {
		t.Fatalf("after one turn the context holds %v", d.Content.Messages)
	}
	a1 := api.Message{Role: "assistant", Content: a1text}
	u2 := api.Message{Role: "user", Content: "what is my name"}
	a2text, _ := chatWith(t, c, false, api.Message{Role: "system", Content: "be kind"}, u1, a1, u2)
	got := messagesOf(t, tc, "cli", "session")
	want := []schema.Message{{Role: "user", Content: u1.Content}, {Role: "assistant", Content: a1text}, {Role: "user", Content: u2.Content}, {Role: "assistant", Content: a2text}}
	if len(got) != 4 || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("after two turns stored %v, want %v", got, want)
	}
	last := fake.ChatRequests()[len(fake.ChatRequests())-1]
	if len(last.Messages) != 4 || last.Messages[0].Content != "be kind" {
		t.Errorf("a client with the whole history got memory injected: %+v", last.Messages)
	}

	// A new client process (no history, its own system message) gets the
	// memory merged into its system message.
	c2 := dropIn(t, tc, "cli", "session")
	chatWith(t, c2, true, api.Message{Role: "system", Content: "You are Bob."}, api.Message{Role: "user", Content: "remind me"})
	last = fake.ChatRequests()[len(fake.ChatRequests())-1]
	if len(last.Messages) != 2 || last.Messages[0].Role != "system" || !strings.HasPrefix(last.Messages[0].Content, "You are Bob.") ||
		!strings.Contains(last.Messages[0].Content, "user: my name is Ada") || !strings.Contains(last.Messages[0].Content, "assistant: "+a2text) {
		t.Errorf("restarted client's request reached Ollama as %+v, want one system message with the memory merged in", last.Messages)
	}
	// Without a system message, one is put first.
	chatWith(t, c2, true, api.Message{Role: "user", Content: "again"})
	last = fake.ChatRequests()[len(fake.ChatRequests())-1]
	if len(last.Messages) != 2 || last.Messages[0].Role != "system" || !strings.Contains(last.Messages[0].Content, "my name is Ada") {
		t.Errorf("request without a system message reached Ollama as %+v", last.Messages)
	}
	if n := len(messagesOf(t, tc, "cli", "session")); n != 8 {
		t.Errorf("stored %d messages after four turns, want 8", n)
	}
	// The topic was created on first use.
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/cli", nil), 200, "topic created by the drop-in endpoint")
	// Like Ollama, the endpoint takes a body without a Content-Type.
	r := call(t, "POST", tc.URL+"/ollama/cli/raw/api/chat", `{"model":"chat-model","stream":false,"messages":[{"role":"user","content":"plain curl"}]}`, "Content-Type", "")
	if r.Status != 200 || r.JSON["done"] != true {
		t.Errorf("chat without Content-Type = %d %s", r.Status, r.Raw)
	}
	if got := messagesOf(t, tc, "cli", "raw"); len(got) != 2 || got[0].Content != "plain curl" {
		t.Errorf("stored %v", got)
	}
	if n := testutil.ToFloat64(tc.router.llm.Metrics().Requests.WithLabelValues("proxy_chat", "chat-model", "ok")); n != 5 {
		t.Errorf("requests_total{proxy_chat,chat-model,ok} = %v, want 5", n)
	}

	// Errors come back in Ollama's Shape, and store nothing.
	err := c.Chat(ctx, &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "x"}}}, func(api.ChatResponse) error { return nil })
	if !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("Chat(unknown model) = %v, want Ollama's 404", err)
	}
	fake.SetFailAfter(1)
	err = c.Chat(ctx, &api.ChatRequest{Model: "chat-model", Messages: []api.Message{{Role: "user", Content: "x y"}}}, func(api.ChatResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "unexpectedly stopped") {
		t.Errorf("Chat with an error mid-stream = %v, want Ollama's error", err)
	}
	fake.SetFailAfter(0)
	if n := len(messagesOf(t, tc, "cli", "session")); n != 8 {
		t.Errorf("failed chats stored messages: %d, want 8", n)
	}
	if err := dropIn(t, tc, "bad name", "x").Heartbeat(ctx); err == nil {
		t.Errorf("Heartbeat on a bad topic name = nil, want an error")
	}
}

// TestDropInMemoryFolding: a restarted client of a long conversation gets
// a summary of the oldest turns and the latest ones, within the budget.
func TestDropInMemoryFolding(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"cli","max_tokens":200}`), 201, "create topic") // memory: 100 tokens
	var msgs []string
	for i := range 16 {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, fmt.Sprintf(`{"role":%q,"content":"turn %d carries a fact worth keeping around"}`, role, i))
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/cli/contexts/long/messages", `{"messages":[`+strings.Join(msgs, ",")+`]}`), 200, "seed")

	chatWith(t, dropIn(t, tc, "cli", "long"), true, api.Message{Role: "user", Content: "what do you remember"})
	reqs := fake.ChatRequests()
	if len(reqs) != 2 || reqs[0].Model != "summary-model" {
		t.Fatalf("Ollama saw %d chat requests (first %q), want a summary then the chat", len(reqs), reqs[0].Model)
	}
	sys := reqs[1].Messages[0]
	_, turns, _ := strings.Cut(sys.Content, "Earlier turns:")
	if sys.Role != "system" || !strings.Contains(sys.Content, memory.SummaryHeader+"Summary:") || !strings.Contains(turns, "turn 15 carries") || strings.Contains(turns, "turn 0 carries") {
		t.Errorf("memory sent = %q, want the summary and the latest turns only", sys.Content)
	}
	if n := memory.EstimateTokens(sys.Content); n > 100+32 {
		t.Errorf("memory of %d tokens, budget 100", n)
	}
	d := documentOf(t, tc, "cli", "long")
	if len(d.Content.Messages) != 18 || d.Content.Summary == nil || d.Content.Summary.Messages == 0 {
		t.Errorf("stored %d messages and summary %+v, want 18 and a summary", len(d.Content.Messages), d.Content.Summary)
	}
}
