package llmbridge_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
)

func open(t testing.TB, cfg llmbridge.Config) llmbridge.Provider {
	t.Helper()
	p, err := llmbridge.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v) = %v", cfg.Provider, err)
	}
	return p
}

func TestOpen(t *testing.T) {
	t.Setenv("OLLAMA_HOST", "")
	if p := open(t, llmbridge.Config{}); p.Kind() != llmbridge.ProviderOllama || p.URL() != "http://127.0.0.1:11434" {
		t.Errorf("Open(zero Config) = %s at %s, want ollama at its default URL", p.Kind(), p.URL())
	}
	if p := open(t, llmbridge.Config{Provider: "ollama", URL: "http://ollama:11434/"}); p.Kind() != llmbridge.ProviderOllama || p.URL() != "http://ollama:11434" {
		t.Errorf("Open(ollama) = %s at %s", p.Kind(), p.URL())
	}
	if p := open(t, llmbridge.Config{Provider: "openai", URL: "https://api.openai.com/v1", APIKey: "sk-x"}); p.Kind() != llmbridge.ProviderOpenAI || p.URL() != "https://api.openai.com/v1" {
		t.Errorf("Open(openai) = %s at %s", p.Kind(), p.URL())
	}
	for _, tt := range []struct {
		cfg  llmbridge.Config
		want string
	}{
		{llmbridge.Config{Provider: "anthropic"}, `llm provider "anthropic": want "ollama" or "openai"`},
		{llmbridge.Config{Provider: "OpenAI", URL: "https://api.openai.com/v1"}, `want "ollama" or "openai"`},
		{llmbridge.Config{Provider: "openai"}, "openai: a base URL ending in /v1 is required"},
		{llmbridge.Config{Provider: "openai", URL: "http://127.0.0.1:11434"}, "want the base URL ending in /v1"},
		{llmbridge.Config{Provider: "openai", URL: "http://h/v1", APIKey: "two words"}, "space"},
		{llmbridge.Config{Provider: "ollama", URL: "http://127.0.0.1:11434/v1"}, "use the openai provider"},
		{llmbridge.Config{Provider: "ollama", APIKey: "sk-x"}, "Ollama takes none"},
		{llmbridge.Config{Provider: "ollama", URL: "ftp://x:1"}, "want http://host:port"},
	} {
		p, err := llmbridge.Open(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || p != nil {
			t.Errorf("Open(%+v) = %v, %v; want no provider and an error saying %q", tt.cfg, p, err, tt.want)
		}
		if err != nil && tt.cfg.APIKey != "" && strings.Contains(err.Error(), tt.cfg.APIKey) {
			t.Errorf("Open error %q carries the API key", err)
		}
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct{ content, want string }{
		{"sk-abc\n", "sk-abc"},
		{"  sk-abc \r\nsecond line ignored\n", "sk-abc"},
		{"sk-abc", "sk-abc"},
	} {
		if got, err := llmbridge.ReadKeyFile(write("k", tt.content)); err != nil || got != tt.want {
			t.Errorf("ReadKeyFile(%q) = %q, %v; want %q", tt.content, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ content, want string }{
		{"", "the first line is empty"},
		{"\nsk-on-the-second-line\n", "the first line is empty"},
		{"sk-secret with-space\n", "space"},
	} {
		_, err := llmbridge.ReadKeyFile(write("k", tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "sk-") {
			t.Errorf("ReadKeyFile(%q) = %v, want an error saying %q, without the content", tt.content, err, tt.want)
		}
	}
	if _, err := llmbridge.ReadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadKeyFile(missing) = %v, want os.ErrNotExist", err)
	}
}

// TestProvidersAnswerAlike drives both providers, each against its fake,
// through the Provider interface: the router sees the same answers.
func TestProvidersAnswerAlike(t *testing.T) {
	ol := ollamatest.New(t)
	oa := openaitest.New(t)
	oa.SetAPIKey(routerKey)
	providers := []llmbridge.Provider{
		open(t, llmbridge.Config{Provider: "ollama", URL: ol.URL}),
		open(t, llmbridge.Config{Provider: "openai", URL: oa.URL, APIKey: routerKey}),
	}
	ctx := context.Background()
	type answer struct {
		text   string
		chunks int
		last   llmbridge.ChatChunk
		emb    llmbridge.Embedding
		models int
	}
	var answers []answer
	for _, p := range providers {
		var a answer
		err := p.Chat(ctx, llmbridge.ChatRequest{Model: "chat-model", Messages: []llmbridge.Message{{Role: "system", Content: "Summarise."}, {Role: "user", Content: "red apples and green pears"}}}, func(ch llmbridge.ChatChunk) error {
			a.text += ch.Content
			a.chunks++
			a.last = ch
			return nil
		})
		if err != nil {
			t.Fatalf("%s: Chat = %v", p.Kind(), err)
		}
		if a.emb, err = p.Embed(ctx, "embed-a", []string{"red apple", "blue sea"}); err != nil {
			t.Fatalf("%s: Embed = %v", p.Kind(), err)
		}
		models, err := p.Models(ctx)
		if err != nil {
			t.Fatalf("%s: Models = %v", p.Kind(), err)
		}
		a.models = len(models)
		answers = append(answers, a)
	}
	o, a := answers[0], answers[1]
	if o.text != "Summary: red apples and green pears" || a.text != o.text || a.chunks != o.chunks {
		t.Errorf("Chat = %q in %d chunks (ollama), %q in %d (openai); want the same summary", o.text, o.chunks, a.text, a.chunks)
	}
	if a.last.PromptTokens != o.last.PromptTokens || a.last.CompletionTokens != o.last.CompletionTokens || !a.last.Done || a.last.DoneReason != o.last.DoneReason {
		t.Errorf("last chunk = %+v (ollama), %+v (openai); want the same counts", o.last, a.last)
	}
	if a.emb.PromptTokens != o.emb.PromptTokens || len(a.emb.Vectors) != 2 || len(o.emb.Vectors) != 2 {
		t.Fatalf("Embed = %+v (ollama), %+v (openai)", o.emb, a.emb)
	}
	for i := range o.emb.Vectors {
		for j := range o.emb.Vectors[i] {
			if a.emb.Vectors[i][j] != o.emb.Vectors[i][j] {
				t.Fatalf("Embed[%d][%d] = %v (ollama), %v (openai); want the same", i, j, o.emb.Vectors[i][j], a.emb.Vectors[i][j])
			}
		}
	}
	if a.models != o.models || a.models != len(ollamatest.DefaultModels) {
		t.Errorf("Models = %d (ollama), %d (openai); want %d", o.models, a.models, len(ollamatest.DefaultModels))
	}
}

// TestDoNeverRelaysCredentials sends the caller's credentials through Do
// on both providers: neither server ever sees them.
func TestDoNeverRelaysCredentials(t *testing.T) {
	ol := ollamatest.New(t)
	oa := openaitest.New(t)
	for _, tt := range []struct {
		p    llmbridge.Provider
		path string
		reqs func() []http.Header
		auth string
	}{
		{open(t, llmbridge.Config{URL: ol.URL}), "/api/tags", func() (h []http.Header) {
			for _, r := range ol.Requests("") {
				h = append(h, r.Header)
			}
			return h
		}, ""},
		{open(t, llmbridge.Config{Provider: "openai", URL: oa.URL, APIKey: routerKey}), "/models", func() (h []http.Header) {
			for _, r := range oa.Requests("") {
				h = append(h, r.Header)
			}
			return h
		}, "Bearer " + routerKey},
	} {
		header := http.Header{
			"Authorization":       {"Bearer kvdb-secret-key"},
			"Proxy-Authorization": {"Basic kvdb-secret"},
			"Cookie":              {"kvdb=kvdb-secret"},
			"Api-Key":             {"kvdb-secret"},
			"X-Api-Key":           {"kvdb-secret"},
			"Accept":              {"application/json"},
		}
		resp, err := tt.p.Do(context.Background(), "GET", tt.path, header, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: Do(GET %s) = %v, %v", tt.p.Kind(), tt.path, resp, err)
		}
		resp.Body.Close()
		got := tt.reqs()
		if len(got) != 1 {
			t.Fatalf("%s: the server received %d requests, want 1", tt.p.Kind(), len(got))
		}
		for k, vs := range got[0] {
			if strings.Contains(strings.Join(vs, " "), "kvdb-secret") {
				t.Errorf("%s: the server received the caller's %s: %q", tt.p.Kind(), k, vs)
			}
		}
		if a := got[0].Get("Authorization"); a != tt.auth || got[0].Get("Accept") != "application/json" {
			t.Errorf("%s: Authorization = %q, Accept = %q; want %q and the caller's Accept", tt.p.Kind(), a, got[0].Get("Accept"), tt.auth)
		}
		if _, err := tt.p.Do(context.Background(), "GET", "/../x", nil, nil); !errors.Is(err, llmbridge.ErrInvalid) {
			t.Errorf("%s: Do(/../x) = %v, want ErrInvalid", tt.p.Kind(), err)
		}
	}
}
