package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// routerKey is the router's own key to the OpenAI-compatible server.
const routerKey = "sk-router-own-key-4242"

// keygen makes an API key for the auth file at path.
func keygen(t testing.TB, path, name, role, topics string) string {
	t.Helper()
	out, err := exec.Command(bin.router, "keygen", "-auth-file="+path, "-name="+name, "-role="+role, "-topics="+topics).Output()
	if err != nil {
		t.Fatalf("router keygen -name=%s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// oaRouter starts a single-node router with an auth file in front of an
// OpenAI-compatible fake that accepts only the router's own key. It
// returns the fake, a writer's key, the router's start arguments and its
// URL.
type oaRouter struct {
	fake   *openaitest.Server
	writer string
	db     string
	args   []string
	p      *proc
	base   string
}

func startOARouter(t *testing.T) *oaRouter {
	t.Helper()
	fake := openaitest.New(t)
	fake.SetAPIKey(routerKey)
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth.toml")
	r := &oaRouter{fake: fake, writer: keygen(t, authFile, "app", "writer", "*"), db: filepath.Join(dir, "kvdb.db")}
	r.args = []string{"-auth-file=" + authFile, "-llm-provider=openai", "-llm-url=" + fake.URL,
		"-llm-api-key-file=" + writeFile(t, dir, "openai.key", routerKey+"\n"),
		"-chat-model=chat-model", "-embed-model=embed-a", "-summary-model=summary-model"}
	r.p, r.base = startSingle(t, r.db, r.args...)
	return r
}

func (r *oaRouter) restart(t *testing.T) {
	t.Helper()
	r.p.stopClean(t)
	r.p, r.base = startSingle(t, r.db, r.args...)
}

// checkCredentials fails t if any request the fake saw carried a
// Go-KVDB secret, or lacked the router's own key.
func checkCredentials(t *testing.T, fake *openaitest.Server, secrets ...string) {
	t.Helper()
	reqs := fake.Requests("")
	if len(reqs) == 0 {
		t.Fatalf("the fake saw no request")
	}
	for _, req := range reqs {
		if got := req.Header.Get("Authorization"); got != "Bearer "+routerKey {
			t.Errorf("%s %s reached the provider with Authorization %q, want the router's own key", req.Method, req.Path, got)
		}
		for _, s := range secrets {
			for k, vs := range req.Header {
				if slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(v, s) }) {
					t.Errorf("%s %s: the provider saw a Go-KVDB key in %s", req.Method, req.Path, k)
				}
			}
			if strings.Contains(string(req.Body), s) {
				t.Errorf("%s %s: the provider saw a Go-KVDB key in the body", req.Method, req.Path)
			}
		}
	}
}

// TestOpenAIProvider runs every LLM feature of the REST API on a real
// router whose provider is an OpenAI-compatible server: auto-embedding on
// PUT, search by query, chat with memory, window folding with the summary
// model, token counts from usage.
func TestOpenAIProvider(t *testing.T) {
	t.Parallel()
	r := startOARouter(t)
	auth := []string{"Authorization", "Bearer " + r.writer}

	mustStatus(t, do(t, "POST", r.base+"/api/v1/topics", map[string]any{"name": "docs"}, auth...), 201)
	for id, text := range map[string]string{"fox": "the quick brown fox", "sea": "waves on a grey sea"} {
		mustStatus(t, do(t, "PUT", r.base+"/api/v1/topics/docs/contexts/"+id, map[string]any{"content": map[string]any{"text": text}}, auth...), 201)
	}
	got := do(t, "GET", r.base+"/api/v1/topics/docs/contexts/fox", nil, auth...)
	mustStatus(t, got, 200)
	if m := field(got.Body, "metadata", "embedding_model"); m != "embed-a" {
		t.Errorf("GET fox: embedding_model %v, want embed-a (auto-embedded on PUT)", m)
	}
	if e, _ := field(got.Body, "content", "embeddings").([]any); len(e) != 64 {
		t.Errorf("GET fox: %d embedding values, want the fake's 64", len(e))
	}
	if n := len(r.fake.Requests("/v1/embeddings")); n < 2 {
		t.Errorf("the provider saw %d embedding requests, want one per PUT", n)
	}

	s := do(t, "POST", r.base+"/api/v1/topics/docs/search", map[string]any{"query": "the quick brown fox", "k": 1}, auth...)
	mustStatus(t, s, 200)
	if res, _ := s.Body["results"].([]any); len(res) != 1 || field(res[0], "metadata", "id") != "fox" {
		t.Errorf("search by query = %s, want fox first", s.Raw)
	}

	chat := r.base + "/api/v1/topics/docs/contexts/talk/chat"
	a := do(t, "POST", chat, map[string]any{"message": "hello there"}, auth...)
	mustStatus(t, a, 200)
	if c := field(a.Body, "message", "content"); c != "You said: hello there" {
		t.Errorf("chat = %s, want the fake's answer", a.Raw)
	}
	wantPrompt := openaitest.Tokens([]openaitest.Message{{Role: "user", Content: "hello there"}})
	if a.Body["prompt_tokens"] != float64(wantPrompt) || a.Body["completion_tokens"] == float64(0) {
		t.Errorf("chat = %s, want prompt_tokens %d and completion_tokens from the provider's usage", a.Raw, wantPrompt)
	}
	mustStatus(t, do(t, "POST", chat, map[string]any{"message": "and again"}, auth...), 200)
	sent := r.fake.ChatRequests()
	if last := sent[len(sent)-1].Messages; len(last) != 3 || last[0].Content != "hello there" || last[2].Content != "and again" {
		t.Errorf("second chat sent %+v, want the stored exchange then the new turn", last)
	}

	// Window folding: a topic with a small budget and a long history
	// asks the summary model before the chat.
	mustStatus(t, do(t, "POST", r.base+"/api/v1/topics", map[string]any{"name": "small", "max_tokens": 120}, auth...), 201)
	var msgs []map[string]string
	for i := range 20 {
		role := []string{"user", "assistant"}[i%2]
		msgs = append(msgs, map[string]string{"role": role, "content": fmt.Sprintf("turn %d says something of moderate length here", i)})
	}
	mustStatus(t, do(t, "POST", r.base+"/api/v1/topics/small/contexts/c/messages", map[string]any{"messages": msgs}, auth...), 200)
	before := len(r.fake.ChatRequests())
	mustStatus(t, do(t, "POST", r.base+"/api/v1/topics/small/contexts/c/chat", map[string]any{"message": "what did turn 0 say"}, auth...), 200)
	var summaries int
	var final openaitest.ChatRequest
	for _, req := range r.fake.ChatRequests()[before:] {
		if req.Model == "summary-model" {
			summaries++
		} else {
			final = req
		}
	}
	if summaries == 0 || len(final.Messages) == 0 || final.Messages[0].Role != "system" || !strings.Contains(final.Messages[0].Content, memory.SummaryHeader) {
		t.Errorf("folding: %d summary requests, chat sent %+v; want a summary merged into the system message", summaries, final.Messages)
	}
	d := do(t, "GET", r.base+"/api/v1/topics/small/contexts/c", nil, auth...)
	if sum, _ := field(d.Body, "content", "summary", "text").(string); !strings.HasPrefix(sum, "Summary:") {
		t.Errorf("folded context = %s, want a stored summary", d.Raw)
	}

	checkCredentials(t, r.fake, r.writer)
}

// TestOpenAIDropIn drives the drop-in OpenAI endpoint with the official
// openai-go client against a real router (an OpenAI-compatible provider
// behind it): not streamed and streamed, the conversation stored and
// surviving a restart, memory injected for a client that resends nothing,
// /models and /embeddings relayed, errors in OpenAI's shape, and the
// provider never seeing the client's key.
func TestOpenAIDropIn(t *testing.T) {
	t.Parallel()
	r := startOARouter(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := func(key string) openai.Client {
		// Besides the key where the SDK puts it, the client's secret
		// where a careless client might: none of it may reach the
		// provider.
		return openai.NewClient(option.WithBaseURL(r.base+"/openai/oa/session/v1"), option.WithAPIKey(key), option.WithMaxRetries(0),
			option.WithHeader("Cookie", "kvdb_session="+key), option.WithHeader("X-Api-Key", key), option.WithHeader("Proxy-Authorization", "Basic "+key))
	}
	c := client(r.writer)

	first, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "chat-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
	})
	if err != nil {
		t.Fatalf("Chat.Completions.New = %v", err)
	}
	if len(first.Choices) != 1 || first.Choices[0].Message.Content != "You said: hello there" || first.Usage.PromptTokens == 0 || first.Object != "chat.completion" {
		t.Fatalf("Chat.Completions.New = %+v, want the fake's answer with usage", first)
	}

	// Streamed, with the history resent as clients do: only the last turn
	// is new.
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "chat-model",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.UserMessage("hello there"), openai.AssistantMessage(first.Choices[0].Message.Content), openai.UserMessage("tell me more"),
		},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("streamed chat: %v", err)
	}
	if chunks < 3 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != "You said: tell me more" || acc.Usage.CompletionTokens == 0 {
		t.Errorf("streamed chat: %d chunks, %+v; want several chunks of the fake's answer and usage", chunks, acc.ChatCompletion)
	}
	auth := []string{"Authorization", "Bearer " + r.writer}
	wantStored := []string{"user: hello there", "assistant: You said: hello there", "user: tell me more", "assistant: You said: tell me more"}
	if got := storedTurns(t, r.base, "oa", "session", auth); !slices.Equal(got, wantStored) {
		t.Errorf("stored = %q, want %q (the resent history stored once)", got, wantStored)
	}

	// A restart: the conversation survives, and a client that sends only
	// its new turn gets the earlier turns as memory.
	r.restart(t)
	c = client(r.writer)
	again, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "chat-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("what did I ask first")},
	})
	if err != nil {
		t.Fatalf("Chat.Completions.New after a restart = %v", err)
	}
	if again.Choices[0].Message.Content != "You said: what did I ask first" {
		t.Errorf("after a restart = %q", again.Choices[0].Message.Content)
	}
	sent := r.fake.ChatRequests()
	last := sent[len(sent)-1].Messages
	if len(last) != 2 || last[0].Role != "system" || !strings.Contains(last[0].Content, "hello there") || !strings.Contains(last[0].Content, "tell me more") {
		t.Errorf("after a restart the provider was sent %+v, want a system message holding the stored turns", last)
	}
	if got := storedTurns(t, r.base, "oa", "session", auth); len(got) != 6 || got[4] != "user: what did I ask first" {
		t.Errorf("stored after a restart = %q, want 6 turns ending with the new exchange", got)
	}

	// Relayed: the model list and embeddings.
	models, err := c.Models.List(ctx)
	if err != nil || !slices.ContainsFunc(models.Data, func(m openai.Model) bool { return m.ID == "chat-model" }) {
		t.Errorf("Models.List = %+v, %v; want chat-model listed", models, err)
	}
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-a", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hi")}})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 64 {
		t.Errorf("Embeddings.New = %v; want one vector of 64", err)
	}

	// Errors in OpenAI's shape, read by the official client.
	var apiErr *openai.Error
	stranger := client("kvdb_not_a_key")
	_, err = stranger.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type != "authentication_error" || apiErr.Code != "unauthenticated" || apiErr.Message == "" {
		t.Errorf("chat with an unknown key = %v, want a 401 authentication_error", err)
	}
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type != "invalid_request_error" || !strings.Contains(apiErr.Message, "messages") {
		t.Errorf("chat without messages = %v, want a 400 invalid_request_error naming messages", err)
	}
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "not_found" {
		t.Errorf("chat with a missing model = %v, want a 404 not_found", err)
	}
	if got := storedTurns(t, r.base, "oa", "session", auth); len(got) != 6 {
		t.Errorf("failed chats stored turns: %q", got)
	}
	// A provider stream cut short: the client's stream ends with an
	// error event (no [DONE]) and nothing is stored.
	r.fake.SetCutAfter(3)
	cut := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "chat-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long question that will be cut short")}})
	pieces := 0
	for cut.Next() {
		pieces++
	}
	if cut.Err() == nil {
		t.Errorf("a cut stream ended without an error after %d chunks", pieces)
	}
	r.fake.SetCutAfter(0)
	if got := storedTurns(t, r.base, "oa", "session", auth); len(got) != 6 {
		t.Errorf("a cut stream stored turns: %q", got)
	}

	// A path the endpoint does not serve answers in OpenAI's shape too.
	if nf := do(t, "GET", r.base+"/openai/oa/session/v1/assistants", nil, auth...); nf.Status != 404 || field(nf.Body, "error", "type") != "invalid_request_error" {
		t.Errorf("%s = %d %s, want 404 in OpenAI's shape", nf.Req, nf.Status, nf.Raw)
	}

	// The same memory on /ollama/{t}/{c}/v1/chat/completions.
	oc := openai.NewClient(option.WithBaseURL(r.base+"/ollama/oa/other/v1"), option.WithAPIKey(r.writer), option.WithMaxRetries(0))
	if _, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("on the ollama path")}}); err != nil {
		t.Errorf("chat on /ollama/…/v1 = %v", err)
	}
	if got := storedTurns(t, r.base, "oa", "other", auth); !slices.Equal(got, []string{"user: on the ollama path", "assistant: You said: on the ollama path"}) {
		t.Errorf("stored on /ollama/…/v1 = %q", got)
	}

	// Ollama's own API has no OpenAI-compatible server to go to: a
	// clear 503, nothing relayed.
	before := len(r.fake.Requests(""))
	for _, p := range []string{"/api/chat", "/api/tags"} {
		or := do(t, "POST", r.base+"/ollama/oa/other"+p, `{"model":"chat-model","messages":[]}`, auth...)
		if msg, _ := or.Body["error"].(string); or.Status != 503 || !strings.Contains(msg, "/openai/") {
			t.Errorf("%s with the openai provider = %d %s, want 503 pointing to /openai/", or.Req, or.Status, or.Raw)
		}
	}
	if n := len(r.fake.Requests("")) - before; n != 0 {
		t.Errorf("Ollama's API reached the OpenAI-compatible server %d times", n)
	}

	checkCredentials(t, r.fake, r.writer, "kvdb_not_a_key")
}

// storedTurns is a context's messages as "role: content".
func storedTurns(t testing.TB, base, topic, id string, auth []string) []string {
	t.Helper()
	r := do(t, "GET", base+"/api/v1/topics/"+topic+"/contexts/"+id+"/messages", nil, auth...)
	mustStatus(t, r, 200)
	var out []string
	msgs, _ := r.Body["messages"].([]any)
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%v: %v", field(m, "role"), field(m, "content")))
	}
	return out
}

// TestOpenAIDropInOllama drives the drop-in OpenAI endpoint with Ollama
// behind it: the chat is asked through the provider interface (Ollama's
// /api/chat) and answered in OpenAI's format, streamed and not.
func TestOpenAIDropInOllama(t *testing.T) {
	t.Parallel()
	fake := ollamatest.New(t)
	p, base := startSingle(t, filepath.Join(t.TempDir(), "kvdb.db"), "-ollama-url="+fake.URL, "-chat-model=chat-model")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := openai.NewClient(option.WithBaseURL(base+"/openai/t/c/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	a, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi ollama")}})
	if err != nil || a.Choices[0].Message.Content != "You said: hi ollama" {
		t.Fatalf("Chat.Completions.New = %+v, %v", a, err)
	}
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("and streamed")}})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil || acc.Choices[0].Message.Content != "You said: and streamed" {
		t.Errorf("streamed = %+v, %v", acc.ChatCompletion, err)
	}
	sent := fake.ChatRequests()
	if last := sent[len(sent)-1].Messages; len(last) != 2 || last[0].Role != "system" || !strings.Contains(last[0].Content, "hi ollama") {
		t.Errorf("Ollama was sent %+v, want the stored exchange as memory, then the new turn", last)
	}
	if got := storedTurns(t, base, "t", "c", nil); len(got) != 4 {
		t.Errorf("stored = %q, want both exchanges", got)
	}
	// Single-node mode has no storage daemons to warn about.
	if log := p.stderr.String(); strings.Contains(log, "no cluster token") || !strings.Contains(log, "single-node mode") {
		t.Errorf("single-node router logged %q, want no cluster-token warning", log)
	}
}

// TestOpenAIProviderFlags: the provider flags' usage errors exit 2 with a
// message naming the mistake.
func TestOpenAIProviderFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-llm-provider=openai"}, "-llm-url"},
		{[]string{"-llm-provider=openai", "-llm-url=http://127.0.0.1:9/v1", "-llm-api-key-file=" + filepath.Join(dir, "missing.key")}, "-llm-api-key-file"},
		{[]string{"-llm-provider=anthropic"}, "anthropic"},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin.router, append([]string{"-db-location=" + filepath.Join(dir, "x.db"), "-http-addr=127.0.0.1:0"}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("router %s = %v, output %q; want exit status 2 and a message naming %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}
