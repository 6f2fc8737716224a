package ollamatest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/ollama/ollama/api"
)

func client(t testing.TB, s *ollamatest.Server) *api.Client {
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(u, http.DefaultClient)
}

// TestWireFormat reads the raw stream: one compact JSON object a line, the
// last with done, done_reason and the metrics in nanoseconds.
func TestWireFormat(t *testing.T) {
	s := ollamatest.New(t)
	resp, err := http.Post(s.URL+"/api/chat", "application/json", strings.NewReader(`{"model":"chat-model","messages":[{"role":"user","content":"hello there"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type = %q, want application/x-ndjson", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	lines := ollamatest.DecodeLines(t, body)
	if len(lines) != 5 { // "You ", "said: ", "hello ", "there", done
		t.Fatalf("got %d lines, want 5: %s", len(lines), body)
	}
	var text string
	for _, l := range lines[:4] {
		if l["done"] != false {
			t.Errorf("line %v: done = %v, want false", l, l["done"])
		}
		text += l["message"].(map[string]any)["content"].(string)
	}
	if text != "You said: hello there" {
		t.Errorf("streamed text = %q, want %q", text, "You said: hello there")
	}
	last := lines[4]
	if last["done"] != true || last["done_reason"] != "stop" {
		t.Errorf("last line = %v, want done and done_reason stop", last)
	}
	if n, _ := last["prompt_eval_count"].(float64); n != 4+2 {
		t.Errorf("prompt_eval_count = %v, want 6", last["prompt_eval_count"])
	}
	if n, _ := last["eval_count"].(float64); n != 4 {
		t.Errorf("eval_count = %v, want 4", last["eval_count"])
	}
	if d, _ := last["eval_duration"].(float64); d != 4e6 { // 4 ms in ns
		t.Errorf("eval_duration = %v, want 4000000 (ns)", last["eval_duration"])
	}
}

// TestFlushedOneAtATime reads the first line while the server waits an
// hour before the second: only a flushed line can arrive.
func TestFlushedOneAtATime(t *testing.T) {
	s := ollamatest.New(t)
	s.SetReply(func(api.ChatRequest) string { return "one two" })
	s.SetGap(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/api/chat", strings.NewReader(`{"model":"chat-model","messages":[]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"content":"one "`) {
		t.Errorf("first line = %q, %v; want the first piece", line, err)
	}
}

func TestClientAgainstFake(t *testing.T) {
	s := ollamatest.New(t)
	c := client(t, s)
	ctx := context.Background()

	if err := c.Heartbeat(ctx); err != nil {
		t.Errorf("Heartbeat() = %v, want nil", err)
	}
	if v, err := c.Version(ctx); err != nil || v != ollamatest.Version {
		t.Errorf("Version() = %q, %v; want %q", v, err, ollamatest.Version)
	}
	list, err := c.List(ctx)
	if err != nil || len(list.Models) != len(ollamatest.DefaultModels) {
		t.Errorf("List() = %+v, %v; want %d models", list, err, len(ollamatest.DefaultModels))
	}
	if _, err := c.Show(ctx, &api.ShowRequest{Model: "chat-model"}); err != nil {
		t.Errorf("Show(chat-model) = %v, want nil", err)
	}

	var pieces []string
	var last api.ChatResponse
	err = c.Chat(ctx, &api.ChatRequest{Model: "chat-model", Messages: []api.Message{{Role: "user", Content: "a b c"}}}, func(r api.ChatResponse) error {
		pieces = append(pieces, r.Message.Content)
		last = r
		return nil
	})
	if err != nil || len(pieces) != 6 || !last.Done || last.EvalCount != 5 || last.PromptEvalCount != 7 {
		t.Errorf("Chat = %q, last %+v, %v; want 5 pieces and a done line with counts", pieces, last, err)
	}

	emb, err := c.Embed(ctx, &api.EmbedRequest{Model: "embed-a", Input: []string{"red apple", "red apple pie", "blue ocean"}})
	if err != nil || len(emb.Embeddings) != 3 || len(emb.Embeddings[0]) != 64 {
		t.Fatalf("Embed = %+v, %v; want 3 vectors of 64", emb, err)
	}
	dot := func(a, b []float32) (s float32) {
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	if n := dot(emb.Embeddings[0], emb.Embeddings[0]); n < 0.9999 || n > 1.0001 {
		t.Errorf("|v|² = %v, want 1", n)
	}
	if dot(emb.Embeddings[0], emb.Embeddings[1]) <= dot(emb.Embeddings[0], emb.Embeddings[2]) {
		t.Errorf("similar texts do not score higher than unrelated ones")
	}

	var se api.StatusError
	err = c.Chat(ctx, &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "x"}}}, func(api.ChatResponse) error { return nil })
	if !errors.As(err, &se) || se.StatusCode != 404 || !strings.Contains(se.ErrorMessage, "not found") {
		t.Errorf("Chat(unknown model) = %v, want a 404 StatusError", err)
	}
	if _, err := c.Embed(ctx, &api.EmbedRequest{Model: "chat-model", Input: "x"}); !errors.As(err, &se) || se.StatusCode != 400 {
		t.Errorf("Embed(chat model) = %v, want a 400 StatusError", err)
	}

	s.SetFailAfter(2)
	var got int
	err = c.Chat(ctx, &api.ChatRequest{Model: "chat-model", Messages: []api.Message{{Role: "user", Content: "a b c"}}}, func(api.ChatResponse) error { got++; return nil })
	if err == nil || !strings.Contains(err.Error(), "unexpectedly stopped") || got != 2 {
		t.Errorf("Chat with an error after 2 pieces = %d pieces, %v; want 2 and the error", got, err)
	}
	s.SetFailAfter(0)

	s.SetDown(true)
	if err := c.Heartbeat(ctx); err == nil {
		t.Errorf("Heartbeat() while down = nil, want an error")
	}
	s.SetDown(false)
	if len(s.Requests("/api/chat")) != 3 || len(s.ChatRequests()) != 3 {
		t.Errorf("recorded %d chat requests, want 3", len(s.Requests("/api/chat")))
	}
}
