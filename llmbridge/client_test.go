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
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
)

func newClient(t testing.TB, url string) *llmbridge.Client {
	t.Helper()
	c, err := llmbridge.New(url, llmbridge.Options{})
	if err != nil {
		t.Fatalf("New(%q) = %v", url, err)
	}
	return c
}

func TestDefaultURL(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"", "http://127.0.0.1:11434"},
		{"0.0.0.0:9999", "http://0.0.0.0:9999"},
		{"https://ollama.example", "https://ollama.example:443"},
	} {
		t.Setenv("OLLAMA_HOST", tt.env)
		if got := llmbridge.DefaultURL(); got != tt.want {
			t.Errorf("DefaultURL() with OLLAMA_HOST=%q = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"ftp://x:1", "http://", "http://a b"} {
		if _, err := llmbridge.New(u, llmbridge.Options{}); err == nil {
			t.Errorf("New(%q) = nil error, want one", u)
		}
	}
	if c := newClient(t, "127.0.0.1:11434/"); c.URL() != "http://127.0.0.1:11434" {
		t.Errorf("URL() = %q, want http://127.0.0.1:11434", c.URL())
	}
}

func TestEmbed(t *testing.T) {
	s := ollamatest.New(t)
	c := newClient(t, s.URL)
	ctx := context.Background()
	got, err := c.Embed(ctx, "embed-b", []string{"hello world", "bye"})
	if err != nil {
		t.Fatalf("Embed = %v", err)
	}
	if len(got.Vectors) != 2 || len(got.Vectors[0]) != 32 || got.Model != "embed-b" || got.PromptTokens != 3 {
		t.Fatalf("Embed = %+v, want 2 vectors of 32 from embed-b, 3 tokens", got)
	}
	want := ollamatest.Embed("hello world", 32)
	for i := range want {
		if got.Vectors[0][i] != want[i] {
			t.Fatalf("Embed(hello world)[%d] = %v, want %v", i, got.Vectors[0][i], want[i])
		}
	}
	_, err = c.Embed(ctx, "missing", []string{"x"})
	if !errors.Is(err, llmbridge.ErrModelNotFound) || !strings.Contains(err.Error(), s.URL) {
		t.Errorf("Embed(missing) = %v, want ErrModelNotFound naming %s", err, s.URL)
	}
	if _, err := c.Embed(ctx, "chat-model", []string{"x"}); !errors.Is(err, llmbridge.ErrInvalid) {
		t.Errorf("Embed(chat model) = %v, want ErrInvalid", err)
	}
}

func TestChat(t *testing.T) {
	s := ollamatest.New(t)
	c := newClient(t, s.URL)
	ctx := context.Background()
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "what is up"}}}
	var text string
	var last llmbridge.ChatChunk
	n := 0
	if err := c.Chat(ctx, req, func(ch llmbridge.ChatChunk) error {
		n++
		text += ch.Content
		last = ch
		return nil
	}); err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if text != "You said: what is up" || n != 6 || !last.Done || last.DoneReason != "stop" {
		t.Errorf("Chat streamed %q in %d chunks, last %+v", text, n, last)
	}
	if last.PromptTokens != 4+2+4+3 || last.CompletionTokens != 5 {
		t.Errorf("tokens = %d in, %d out; want 13, 5", last.PromptTokens, last.CompletionTokens)
	}
	sent := s.ChatRequests()[0]
	if len(sent.Messages) != 2 || sent.Messages[0].Content != "be brief" || sent.Stream == nil || !*sent.Stream {
		t.Errorf("Ollama received %+v", sent)
	}

	stop := errors.New("stop")
	n = 0
	if err := c.Chat(ctx, req, func(llmbridge.ChatChunk) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Chat with fn failing = %v after %d chunks, want the fn's error after 1", err, n)
	}
}

func TestChatFailures(t *testing.T) {
	s := ollamatest.New(t)
	c := newClient(t, s.URL)
	req := llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "user", Content: "a b c d"}}}
	nop := func(llmbridge.ChatChunk) error { return nil }

	t.Run("error mid-stream", func(t *testing.T) {
		s.SetFailAfter(2)
		defer s.SetFailAfter(0)
		var got []string
		err := c.Chat(context.Background(), req, func(ch llmbridge.ChatChunk) error { got = append(got, ch.Content); return nil })
		if !errors.Is(err, llmbridge.ErrUpstream) || len(got) != 2 {
			t.Errorf("Chat = %v after %q, want ErrUpstream after 2 pieces", err, got)
		}
	})
	t.Run("unknown model", func(t *testing.T) {
		err := c.Chat(context.Background(), llmbridge.ChatRequest{Model: "nope"}, nop)
		if !errors.Is(err, llmbridge.ErrModelNotFound) {
			t.Errorf("Chat = %v, want ErrModelNotFound", err)
		}
	})
	t.Run("connection dropped", func(t *testing.T) {
		s.SetDown(true)
		defer s.SetDown(false)
		if err := c.Chat(context.Background(), req, nop); !errors.Is(err, llmbridge.ErrUnavailable) {
			t.Errorf("Chat = %v, want ErrUnavailable", err)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		url := ollamatest.DeadURL(t)
		err := newClient(t, url).Chat(context.Background(), req, nop)
		if !errors.Is(err, llmbridge.ErrUnavailable) || !strings.Contains(err.Error(), url) {
			t.Errorf("Chat = %v, want ErrUnavailable naming %s", err, url)
		}
	})
	t.Run("slow", func(t *testing.T) {
		s.SetDelay(time.Hour)
		defer s.SetDelay(0)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := c.Chat(ctx, req, nop); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Chat = %v, want context.DeadlineExceeded", err)
		}
		if _, err := c.Embed(ctx, "embed-a", []string{"x"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Embed = %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestDo(t *testing.T) {
	s := ollamatest.New(t)
	c := newClient(t, s.URL)
	resp, err := c.Do(context.Background(), "GET", "/api/tags?x=1", http.Header{"Accept": {"application/json"}}, nil)
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"chat-model:latest"`) {
		t.Errorf("GET /api/tags = %d %s", resp.StatusCode, body)
	}
	resp, err = c.Do(context.Background(), "POST", "/api/nothing", nil, strings.NewReader("{}"))
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("POST /api/nothing = %v, %v; want the 404 relayed", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := newClient(t, ollamatest.DeadURL(t)).Do(context.Background(), "GET", "/", nil, nil); !errors.Is(err, llmbridge.ErrUnavailable) {
		t.Errorf("Do against nothing = %v, want ErrUnavailable", err)
	}
}

func TestModels(t *testing.T) {
	s := ollamatest.New(t)
	c := newClient(t, s.URL)
	got, err := c.Models(context.Background())
	if err != nil || strings.Join(got, ",") != "chat-model:latest,embed-a:latest,embed-b:latest,summary-model:latest" {
		t.Errorf("Models() = %v, %v; want the fake's four, tagged", got, err)
	}
	if c.Kind() != llmbridge.ProviderOllama {
		t.Errorf("Kind() = %q, want ollama", c.Kind())
	}
	s.SetDown(true)
	if _, err := c.Models(context.Background()); !errors.Is(err, llmbridge.ErrUnavailable) || !strings.Contains(err.Error(), s.URL) {
		t.Errorf("Models() while down = %v, want ErrUnavailable naming %s", err, s.URL)
	}
}
