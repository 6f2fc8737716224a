package llmbridge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
)

const routerKey = "sk-router-key-0123456789"

func newOpenAI(t testing.TB, url, key string) *llmbridge.OpenAI {
	t.Helper()
	c, err := llmbridge.NewOpenAI(url, key, llmbridge.Options{})
	if err != nil {
		t.Fatalf("NewOpenAI(%q) = %v", url, err)
	}
	return c
}

// keyed starts a fake that wants routerKey, and a client that has it.
func keyed(t testing.TB) (*openaitest.Server, *llmbridge.OpenAI) {
	t.Helper()
	s := openaitest.New(t)
	s.SetAPIKey(routerKey)
	return s, newOpenAI(t, s.URL, routerKey)
}

func TestNewOpenAIRejectsBadURL(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"http://127.0.0.1:8000", "ending in /v1"},
		{"http://127.0.0.1:8000/v1/chat", "ending in /v1"},
		{"ftp://host/v1", "want http(s)"},
		{"http:///v1", "want http(s)"},
		{"http://a b/v1", "invalid character"},
		{"http://host/v1?x=1", "no query"},
		{"http://user:hunter2@host/v1", "user information"},
	} {
		_, err := llmbridge.NewOpenAI(tt.url, "", llmbridge.Options{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewOpenAI(%q) = %v, want an error saying %q", tt.url, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("NewOpenAI(%q) = %v: the password is in the error", tt.url, err)
		}
	}
	if c := newOpenAI(t, "https://api.example/v1/", ""); c.URL() != "https://api.example/v1" || c.Kind() != llmbridge.ProviderOpenAI {
		t.Errorf("URL(), Kind() = %q, %q; want https://api.example/v1, openai", c.URL(), c.Kind())
	}
	if c := newOpenAI(t, "http://127.0.0.1:8080/openai/t/c/v1", ""); c.URL() != "http://127.0.0.1:8080/openai/t/c/v1" {
		t.Errorf("URL() = %q, want the path kept", c.URL())
	}
	if c := newOpenAI(t, "127.0.0.1:8000/v1", ""); c.URL() != "http://127.0.0.1:8000/v1" {
		t.Errorf("URL() = %q, want http://127.0.0.1:8000/v1", c.URL())
	}
	const badKey = "sk-two\nlines"
	if _, err := llmbridge.NewOpenAI("http://h/v1", badKey, llmbridge.Options{}); err == nil || strings.Contains(err.Error(), "lines") {
		t.Errorf("NewOpenAI(key with a newline) = %v, want an error without the key", err)
	}
}

func TestOpenAIChat(t *testing.T) {
	s, c := keyed(t)
	ctx := context.Background()
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "what is up"}}}
	var text string
	var last llmbridge.ChatChunk
	n := 0
	if err := c.Chat(ctx, req, func(ch llmbridge.ChatChunk) error {
		n++
		text += ch.Content
		last = ch
		if !ch.Done && (ch.Content == "" || ch.Model != "chat-model") {
			t.Errorf("piece %+v, want text and the model", ch)
		}
		return nil
	}); err != nil {
		t.Fatalf("Chat = %v", err)
	}
	// The same answer, in as many chunks, as the Ollama client gives.
	if text != "You said: what is up" || n != 6 || !last.Done || last.DoneReason != "stop" || last.Model != "chat-model" {
		t.Errorf("Chat streamed %q in %d chunks, last %+v", text, n, last)
	}
	if last.PromptTokens != 4+2+4+3 || last.CompletionTokens != 5 {
		t.Errorf("tokens = %d in, %d out; want 13, 5 (from usage)", last.PromptTokens, last.CompletionTokens)
	}
	sent := s.ChatRequests()[0]
	if len(sent.Messages) != 2 || sent.Messages[0] != (openaitest.Message{Role: "system", Content: "be brief"}) || !sent.Stream || !sent.IncludeUsage {
		t.Errorf("the server received %+v, want both messages, streamed, usage asked for", sent)
	}
	if h := s.Requests("/v1/chat/completions")[0].Header.Get("Authorization"); h != "Bearer "+routerKey {
		t.Errorf("Authorization = %q, want the router's key", h)
	}

	stop := errors.New("stop")
	n = 0
	if err := c.Chat(ctx, req, func(llmbridge.ChatChunk) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Chat with fn failing = %v after %d chunks, want the fn's error after 1", err, n)
	}
	var done llmbridge.ChatChunk
	if err := c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "x"}}}, func(ch llmbridge.ChatChunk) error {
		if ch.Done {
			done = ch
		}
		return stop
	}); !errors.Is(err, stop) || done.Done {
		t.Errorf("Chat with fn failing = %v, done chunk %+v; want the fn's error and no done chunk", err, done)
	}
}

func TestOpenAIChatOptions(t *testing.T) {
	s, c := keyed(t)
	ctx := context.Background()
	msgs := []llmbridge.Message{{Role: "user", Content: "one two three"}}
	var text string
	var last llmbridge.ChatChunk
	err := c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{
		"temperature": 0.25, "top_p": 0.5, "seed": float64(7), "num_predict": 2, "stop": []any{"END"},
		"frequency_penalty": 0.1, "presence_penalty": 0.2,
	}}, func(ch llmbridge.ChatChunk) error { text += ch.Content; last = ch; return nil })
	if err != nil {
		t.Fatalf("Chat with options = %v", err)
	}
	if text != "You said: " || last.DoneReason != "length" || last.CompletionTokens != 2 {
		t.Errorf("Chat with num_predict 2 = %q, %+v; want %q cut for length", text, last, "You said: ")
	}
	raw := s.ChatRequests()[0].Raw
	for k, want := range map[string]any{"temperature": 0.25, "top_p": 0.5, "seed": float64(7), "max_tokens": float64(2), "frequency_penalty": 0.1, "presence_penalty": 0.2} {
		if raw[k] != want {
			t.Errorf("sent %s = %v, want %v", k, raw[k], want)
		}
	}
	if st, _ := raw["stop"].([]any); len(st) != 1 || st[0] != "END" {
		t.Errorf("sent stop = %v, want [END]", raw["stop"])
	}
	if err := c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"num_predict": -1, "max_completion_tokens": 3, "stop": "x"}}, func(llmbridge.ChatChunk) error { return nil }); err != nil {
		t.Errorf("Chat with num_predict -1 = %v", err)
	}
	raw = s.ChatRequests()[1].Raw
	if _, ok := raw["max_tokens"]; ok || raw["max_completion_tokens"] != float64(3) || raw["stop"] != "x" {
		t.Errorf("sent %v, want no max_tokens, max_completion_tokens 3, stop x", raw)
	}

	for _, tt := range []struct {
		name string
		req  llmbridge.ChatRequest
		want string
	}{
		{"ollama-only option", llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"num_ctx": 4096, "temperature": 1}}, `"num_ctx" has no OpenAI counterpart`},
		{"not a number", llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"temperature": "hot"}}, "want a number"},
		{"not an integer", llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"seed": 1.5}}, "want an integer"},
		{"zero tokens", llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"max_tokens": 0}}, "positive"},
		{"bad stop", llmbridge.ChatRequest{Model: "chat-model", Messages: msgs, Options: map[string]any{"stop": []any{1}}}, "want strings"},
		{"unknown role", llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "tool", Content: "x"}}}, `role "tool"`},
	} {
		err := c.Chat(ctx, tt.req, func(llmbridge.ChatChunk) error { return nil })
		if !errors.Is(err, llmbridge.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Chat(%s) = %v, want ErrInvalid saying %q", tt.name, err, tt.want)
		}
	}
	if n := len(s.Requests("")); n != 2 {
		t.Errorf("the server received %d requests, want 2: a refused request is never sent", n)
	}
}

func TestOpenAIChatFailures(t *testing.T) {
	s, c := keyed(t)
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "a b c d"}}}
	nop := func(llmbridge.ChatChunk) error { return nil }

	t.Run("error mid-stream", func(t *testing.T) {
		s.SetFailAfter(2)
		defer s.SetFailAfter(0)
		var got []string
		err := c.Chat(context.Background(), req, func(ch llmbridge.ChatChunk) error { got = append(got, ch.Content); return nil })
		if !errors.Is(err, llmbridge.ErrUpstream) || len(got) != 2 || !strings.Contains(err.Error(), "had an error") {
			t.Errorf("Chat = %v after %q, want ErrUpstream with the server's message after 2 pieces", err, got)
		}
	})
	// A stream cut anywhere before [DONE] (role chunk, 6 pieces, finish,
	// usage: 9 events) is ErrUnavailable, and no done chunk is sent,
	// even once the finish_reason and the usage went by.
	for _, cut := range []int{1, 4, 8, 9} {
		s.SetCutAfter(cut)
		var done bool
		err := c.Chat(context.Background(), req, func(ch llmbridge.ChatChunk) error { done = done || ch.Done; return nil })
		if !errors.Is(err, llmbridge.ErrUnavailable) || done || !strings.Contains(err.Error(), "[DONE]") {
			t.Errorf("Chat cut after %d events = %v (done chunk %v), want ErrUnavailable and no done chunk", cut, err, done)
		}
	}
	s.SetCutAfter(0)
	if err := c.Chat(context.Background(), req, nop); err != nil {
		t.Errorf("Chat after the cuts = %v", err)
	}
	t.Run("unknown model", func(t *testing.T) {
		err := c.Chat(context.Background(), llmbridge.ChatRequest{Model: "nope", Messages: req.Messages}, nop)
		if !errors.Is(err, llmbridge.ErrModelNotFound) || !strings.Contains(err.Error(), s.URL) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Chat = %v, want ErrModelNotFound naming %s and saying why", err, s.URL)
		}
	})
	t.Run("embedding model", func(t *testing.T) {
		err := c.Chat(context.Background(), llmbridge.ChatRequest{Model: "embed-a", Messages: req.Messages}, nop)
		if !errors.Is(err, llmbridge.ErrInvalid) {
			t.Errorf("Chat = %v, want ErrInvalid", err)
		}
	})
	t.Run("connection dropped", func(t *testing.T) {
		s.SetDown(true)
		defer s.SetDown(false)
		if err := c.Chat(context.Background(), req, nop); !errors.Is(err, llmbridge.ErrUnavailable) {
			t.Errorf("Chat = %v, want ErrUnavailable", err)
		}
	})
	t.Run("dropped mid-stream", func(t *testing.T) {
		s.SetDropAfter(3) // role, "You ", "said: ", then the connection drops
		defer s.SetDropAfter(0)
		var got []string
		err := c.Chat(context.Background(), req, func(ch llmbridge.ChatChunk) error { got = append(got, ch.Content); return nil })
		if !errors.Is(err, llmbridge.ErrUnavailable) || len(got) != 2 {
			t.Errorf("Chat = %v after %q, want ErrUnavailable after 2 pieces", err, got)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		url := openaitest.DeadURL(t)
		err := newOpenAI(t, url, routerKey).Chat(context.Background(), req, nop)
		if !errors.Is(err, llmbridge.ErrUnavailable) || !strings.Contains(err.Error(), url) {
			t.Errorf("Chat = %v, want ErrUnavailable naming %s", err, url)
		}
	})
}

func TestOpenAISlow(t *testing.T) {
	s, c := keyed(t)
	s.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "x"}}}
	if err := c.Chat(ctx, req, func(llmbridge.ChatChunk) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Chat = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Embed(ctx, "embed-a", []string{"x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Embed = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Models(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Models = %v, want context.DeadlineExceeded", err)
	}
	// Slow between pieces: the deadline ends the stream mid-answer.
	s.SetDelay(0)
	s.SetGap(time.Hour)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	n := 0
	if err := c.Chat(ctx2, req, func(llmbridge.ChatChunk) error { n++; return nil }); !errors.Is(err, context.DeadlineExceeded) || n != 0 {
		t.Errorf("Chat with a slow stream = %v after %d chunks, want context.DeadlineExceeded", err, n)
	}
}

func TestOpenAIEmbed(t *testing.T) {
	s, c := keyed(t)
	ctx := context.Background()
	inputs := []string{"hello world", "bye", "hello there world"}
	got, err := c.Embed(ctx, "embed-b", inputs)
	if err != nil {
		t.Fatalf("Embed = %v", err)
	}
	if len(got.Vectors) != 3 || got.Model != "embed-b" || got.PromptTokens != 2+1+3 {
		t.Fatalf("Embed = %d vectors from %s, %d tokens; want 3 from embed-b, 6 tokens", len(got.Vectors), got.Model, got.PromptTokens)
	}
	for i, in := range inputs {
		want := openaitest.Embed(in, 32)
		if len(got.Vectors[i]) != 32 {
			t.Fatalf("Embed(%q) has %d dimensions, want 32", in, len(got.Vectors[i]))
		}
		for j := range want {
			if got.Vectors[i][j] != want[j] {
				t.Fatalf("Embed(%q)[%d] = %v, want %v", in, j, got.Vectors[i][j], want[j])
			}
		}
	}
	if body := string(s.Requests("/v1/embeddings")[0].Body); !strings.Contains(body, `"input":["hello world","bye","hello there world"]`) || !strings.Contains(body, `"encoding_format":"base64"`) {
		t.Errorf("sent %s, want the inputs as a list, in order, and base64 asked for", body)
	}
	if e, err := c.Embed(ctx, "embed-b", nil); err != nil || len(e.Vectors) != 0 || len(s.Requests("/v1/embeddings")) != 1 {
		t.Errorf("Embed(nothing) = %+v, %v; want no vectors and no request", e, err)
	}

	_, err = c.Embed(ctx, "missing", []string{"x"})
	if !errors.Is(err, llmbridge.ErrModelNotFound) || !strings.Contains(err.Error(), s.URL) {
		t.Errorf("Embed(missing) = %v, want ErrModelNotFound naming %s", err, s.URL)
	}
	if _, err := c.Embed(ctx, "chat-model", []string{"x"}); !errors.Is(err, llmbridge.ErrInvalid) {
		t.Errorf("Embed(chat model) = %v, want ErrInvalid", err)
	}
}

// TestOpenAIEmbedChecksTheAnswer answers with too few vectors, or with an
// index twice: both are the server's fault.
func TestOpenAIEmbedChecksTheAnswer(t *testing.T) {
	s, c := keyed(t)
	for _, tt := range []struct{ body, want string }{
		{`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,0]}],"model":"embed-a","usage":{"prompt_tokens":1,"total_tokens":1}}`, "1 vectors for 2 inputs"},
		{`{"object":"list","data":[{"object":"embedding","index":1,"embedding":[1,0]},{"object":"embedding","index":1,"embedding":[0,1]}],"model":"embed-a","usage":{"prompt_tokens":1,"total_tokens":1}}`, "index 1 repeated"},
		{`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1,0]},{"object":"embedding","index":5,"embedding":[0,1]}],"model":"embed-a","usage":{"prompt_tokens":1,"total_tokens":1}}`, "index 5"},
	} {
		s.SetError(200, tt.body)
		_, err := c.Embed(context.Background(), "embed-a", []string{"a", "b"})
		if !errors.Is(err, llmbridge.ErrUpstream) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Embed answered %s = %v, want ErrUpstream saying %q", tt.body, err, tt.want)
		}
	}
	// A server that ignores encoding_format answers floats: read as well.
	s.SetError(200, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]},{"object":"embedding","index":1,"embedding":[1,0]}],"model":"embed-a","usage":{"prompt_tokens":2,"total_tokens":2}}`)
	got, err := c.Embed(context.Background(), "embed-a", []string{"a", "b"})
	if err != nil || len(got.Vectors) != 2 || got.Vectors[0][0] != 0.5 || got.Vectors[0][1] != -0.25 || got.Vectors[1][0] != 1 {
		t.Errorf("Embed answered floats = %v, %v; want them read", got.Vectors, err)
	}
	// Answered out of order: each vector goes where its index says.
	s.SetError(200, `{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0,1]},{"object":"embedding","index":0,"embedding":[1,0]}],"model":"embed-a","usage":{"prompt_tokens":2,"total_tokens":2}}`)
	got, err = c.Embed(context.Background(), "embed-a", []string{"a", "b"})
	if err != nil || got.Vectors[0][0] != 1 || got.Vectors[1][1] != 1 {
		t.Errorf("Embed answered out of order = %v, %v; want the vectors in input order", got.Vectors, err)
	}
}

func TestOpenAIModels(t *testing.T) {
	s, c := keyed(t)
	got, err := c.Models(context.Background())
	if err != nil || strings.Join(got, ",") != "chat-model,embed-a,embed-b,summary-model" {
		t.Errorf("Models() = %v, %v; want the fake's four", got, err)
	}
	s.AddModel("extra", 8)
	if got, _ := c.Models(context.Background()); len(got) != 5 {
		t.Errorf("Models() after AddModel = %v, want 5", got)
	}
}

// TestOpenAIErrorMapping sorts every error status into its sentinel, with
// OpenAI's bodies and with bodies of other shapes.
func TestOpenAIErrorMapping(t *testing.T) {
	s, c := keyed(t)
	ctx := context.Background()
	for _, tt := range []struct {
		status int
		body   string
		want   error
		says   string
	}{
		{400, "", llmbridge.ErrInvalid, "Bad Request"},
		{403, "", llmbridge.ErrUpstream, "the API key was refused (403 Forbidden)"},
		{404, "", llmbridge.ErrModelNotFound, "Not Found"},
		{408, "", llmbridge.ErrUnavailable, "Request Timeout"},
		{422, "", llmbridge.ErrInvalid, "Unprocessable Entity"},
		{429, "", llmbridge.ErrUnavailable, "Rate limit reached"},
		{500, "", llmbridge.ErrUpstream, "had an error"},
		{502, "", llmbridge.ErrUnavailable, "Bad Gateway"},
		{503, "", llmbridge.ErrUnavailable, "overloaded"},
		{504, "", llmbridge.ErrUnavailable, "Gateway Timeout"},
		{400, `{"error":{"message":"no such model","type":"invalid_request_error","param":"model","code":"model_not_found"}}`, llmbridge.ErrModelNotFound, "no such model"},
		{400, `{"error":"context length exceeded"}`, llmbridge.ErrInvalid, "context length exceeded (400)"},
		{404, `{"detail":"Not Found"}`, llmbridge.ErrModelNotFound, "Not Found (404)"},
		{500, `{"message":"boom"}`, llmbridge.ErrUpstream, "boom"},
		{200, `{"object":`, llmbridge.ErrUpstream, "error parsing response json"},
	} {
		s.SetError(tt.status, tt.body)
		errs := map[string]error{}
		_, errs["Embed"] = c.Embed(ctx, "embed-a", []string{"x"})
		_, errs["Models"] = c.Models(ctx)
		if tt.status != 200 {
			errs["Chat"] = c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "x"}}}, func(llmbridge.ChatChunk) error { return nil })
		}
		for call, err := range errs {
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), s.URL) {
				t.Errorf("%s answered %d %s = %v, want %v saying %q and naming %s", call, tt.status, tt.body, err, tt.want, tt.says, s.URL)
			}
		}
	}
	s.SetError(200, `{"object":"chat.completion"}`)
	err := c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "x"}}}, func(llmbridge.ChatChunk) error { return nil })
	if !errors.Is(err, llmbridge.ErrUpstream) || !strings.Contains(err.Error(), "want an event stream") {
		t.Errorf("Chat answered JSON = %v, want ErrUpstream saying it is not a stream", err)
	}
}

// TestOpenAIKeyNeverInErrors gives the server a key it refuses, and one
// that it quotes in its error message.
func TestOpenAIKeyNeverInErrors(t *testing.T) {
	s := openaitest.New(t)
	s.SetAPIKey("sk-the-right-one-0000")
	const wrong = "sk-wrong-key-9876543210"
	c := newOpenAI(t, s.URL, wrong)
	ctx := context.Background()
	errs := []error{c.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "x"}}}, func(llmbridge.ChatChunk) error { return nil })}
	_, err := c.Embed(ctx, "embed-a", []string{"x"})
	errs = append(errs, err)
	_, err = c.Models(ctx)
	errs = append(errs, err)
	for _, err := range errs {
		if !errors.Is(err, llmbridge.ErrUpstream) || !strings.Contains(err.Error(), "the API key was refused (401 Unauthorized)") {
			t.Errorf("call with a wrong key = %v, want ErrUpstream saying the key was refused", err)
		}
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), "3210") || strings.Contains(err.Error(), "Incorrect") {
			t.Errorf("error %q carries the key or the server's message about it", err)
		}
	}
	if _, err := newOpenAI(t, s.URL, "").Models(ctx); !errors.Is(err, llmbridge.ErrUpstream) || !strings.Contains(err.Error(), "wants an API key") {
		t.Errorf("Models without a key = %v, want ErrUpstream saying a key is wanted", err)
	}

	s.SetAPIKey("")
	s.SetError(400, `{"error":{"message":"bad key `+wrong+` in request","type":"invalid_request_error","param":null,"code":null}}`)
	_, err = c.Models(ctx)
	if !errors.Is(err, llmbridge.ErrInvalid) || strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "bad key [api key] in request") {
		t.Errorf("Models with the key quoted = %v, want ErrInvalid with the key redacted", err)
	}
}

// TestOpenAIDo relays raw requests under the base URL with the router's
// own key, never the caller's credentials.
func TestOpenAIDo(t *testing.T) {
	s, c := keyed(t)
	ctx := context.Background()
	clientHeader := http.Header{
		"Authorization":       {"Bearer kvdb-secret-of-the-caller"},
		"Cookie":              {"session=kvdb-secret-cookie"},
		"Proxy-Authorization": {"Basic a3ZkYi1zZWNyZXQ="},
		"x-api-key":           {"kvdb-secret-x"}, // not canonical: still dropped
		"Content-Type":        {"application/json"},
		"Accept":              {"text/event-stream"},
		"User-Agent":          {"my-app/1.0"},
	}
	resp, err := c.Do(ctx, "POST", "/chat/completions", clientHeader, strings.NewReader(`{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("POST /chat/completions = %d %s, want the stream relayed", resp.StatusCode, body)
	}
	resp, err = c.Do(ctx, "GET", "/models?limit=2", http.Header{"Authorization": {"Bearer kvdb-secret-2"}}, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /models = %v, %v", resp, err)
	}
	resp.Body.Close()
	resp, err = c.Do(ctx, "POST", "/nothing", nil, strings.NewReader("{}"))
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("POST /nothing = %v, %v; want the 404 relayed", resp, err)
	} else {
		resp.Body.Close()
	}

	reqs := s.Requests("")
	if len(reqs) != 3 || reqs[0].Path != "/v1/chat/completions" || reqs[1].Path != "/v1/models" || reqs[2].Path != "/v1/nothing" {
		t.Fatalf("the server received %+v, want three requests under /v1", reqs)
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+routerKey {
			t.Errorf("%s %s: Authorization = %q, want the router's key", r.Method, r.Path, got)
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, "kvdb-secret") {
					t.Errorf("%s %s carries the caller's credential %s: %s", r.Method, r.Path, k, v)
				}
			}
		}
	}
	if h := reqs[0].Header; h.Get("Content-Type") != "application/json" || h.Get("Accept") != "text/event-stream" || h.Get("User-Agent") != "my-app/1.0" {
		t.Errorf("relayed headers = %v, want the caller's other headers kept", h)
	}
	if _, ok := clientHeader["Authorization"]; !ok {
		t.Errorf("Do changed the caller's header map")
	}

	for _, p := range []string{"/../admin", "/models/../../x", "/./models"} {
		if _, err := c.Do(ctx, "GET", p, nil, nil); !errors.Is(err, llmbridge.ErrInvalid) {
			t.Errorf("Do(%q) = %v, want ErrInvalid (the path climbs out of /v1)", p, err)
		}
	}
	if n := len(s.Requests("")); n != 3 {
		t.Errorf("the server received %d requests, want 3: refused paths are never sent", n)
	}

	// Without a key of its own, the client sends none, and still drops the
	// caller's.
	bare := newOpenAI(t, s.URL, "")
	s.SetAPIKey("")
	resp, err = bare.Do(ctx, "GET", "/models", http.Header{"Authorization": {"Bearer kvdb-secret-3"}}, nil)
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
	resp.Body.Close()
	if h := s.Requests("")[3].Header; h.Get("Authorization") != "" {
		t.Errorf("Authorization = %q, want none", h.Get("Authorization"))
	}
	if _, err := newOpenAI(t, openaitest.DeadURL(t), routerKey).Do(ctx, "GET", "/models", nil, nil); !errors.Is(err, llmbridge.ErrUnavailable) || strings.Contains(err.Error(), routerKey) {
		t.Errorf("Do against nothing = %v, want ErrUnavailable without the key", err)
	}
}
