package openaitest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
)

// client is the official client pointed at s, without retries so that a
// failure is one request.
func client(t testing.TB, s *openaitest.Server, key string) *openai.Client {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(s.URL), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

func userMessage(text string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}
}

func post(t testing.TB, url, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s = %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestWireFormat reads a raw stream: one "data:" line per event, blank-line
// separated, usage null until the usage chunk, then [DONE].
func TestWireFormat(t *testing.T) {
	s := openaitest.New(t)
	resp := post(t, s.URL+"/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true}}`)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/event-stream; charset=utf-8", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	events := openaitest.Events(t, body)
	// role, "You ", "said: ", "hello ", "there", finish, usage, [DONE]
	if len(events) != 8 || events[7] != "[DONE]" {
		t.Fatalf("got %d events, want 8 ending in [DONE]:\n%s", len(events), body)
	}
	var chunks []map[string]any
	for _, e := range events[:7] {
		var c map[string]any
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("event %q: %v", e, err)
		}
		if c["object"] != "chat.completion.chunk" || c["model"] != "chat-model" {
			t.Errorf("event %s: want a chat.completion.chunk of chat-model", e)
		}
		chunks = append(chunks, c)
	}
	delta := func(c map[string]any) map[string]any {
		return c["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	}
	if d := delta(chunks[0]); d["role"] != "assistant" || d["content"] != "" {
		t.Errorf("first delta = %v, want the role and empty content", d)
	}
	var text string
	for _, c := range chunks[1:5] {
		text += delta(c)["content"].(string)
		if v, ok := c["usage"]; !ok || v != nil {
			t.Errorf("chunk %v: usage = %v, want null before the usage chunk", c, v)
		}
	}
	if text != "You said: hello there" {
		t.Errorf("streamed text = %q, want %q", text, "You said: hello there")
	}
	if fr := chunks[5]["choices"].([]any)[0].(map[string]any)["finish_reason"]; fr != "stop" {
		t.Errorf("finish_reason = %v, want stop", fr)
	}
	last := chunks[6]
	usage, _ := last["usage"].(map[string]any)
	if len(last["choices"].([]any)) != 0 || usage["prompt_tokens"] != float64(4+2) || usage["completion_tokens"] != float64(4) || usage["total_tokens"] != float64(10) {
		t.Errorf("usage chunk = %v, want no choices and 6+4=10 tokens", last)
	}

	// Without include_usage there is no usage chunk and no usage field.
	resp = post(t, s.URL+"/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	body, _ = io.ReadAll(resp.Body)
	events = openaitest.Events(t, body)
	if len(events) != 6 || strings.Contains(string(body), "usage") { // role, 3 pieces, finish, [DONE]
		t.Errorf("stream without include_usage = %s, want 6 events and no usage", body)
	}
}

// TestFlushedOneAtATime reads the first event while the server waits an
// hour before the second: only a flushed event can arrive.
func TestFlushedOneAtATime(t *testing.T) {
	s := openaitest.New(t)
	s.SetGap(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/chat/completions", strings.NewReader(`{"model":"chat-model","messages":[{"role":"user","content":"x"}],"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") || !strings.Contains(line, `"role":"assistant"`) {
		t.Errorf("first line = %q, %v; want the role chunk", line, err)
	}
}

func TestChatWithOfficialClient(t *testing.T) {
	s := openaitest.New(t)
	c := client(t, s, "sk-test")
	ctx := context.Background()

	got, err := c.Chat.Completions.New(ctx, userMessage("what is up"))
	if err != nil {
		t.Fatalf("Chat.Completions.New = %v", err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != "You said: what is up" || got.Choices[0].FinishReason != "stop" {
		t.Errorf("Chat.Completions.New = %s, want one choice saying %q", got.RawJSON(), "You said: what is up")
	}
	if got.Object != "chat.completion" || got.Usage.PromptTokens != 4+3 || got.Usage.CompletionTokens != 5 || got.Usage.TotalTokens != 12 {
		t.Errorf("usage = %+v, want 7 in, 5 out, 12 total", got.Usage)
	}

	params := userMessage("a b c")
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	n := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		n++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream.Err() = %v", err)
	}
	if n != 1+5+1+1 || acc.Choices[0].Message.Content != "You said: a b c" || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("stream = %d chunks, %q (%s); want 8 chunks saying %q", n, acc.Choices[0].Message.Content, acc.Choices[0].FinishReason, "You said: a b c")
	}
	if acc.Usage.PromptTokens != 4+3 || acc.Usage.CompletionTokens != 5 {
		t.Errorf("streamed usage = %+v, want 7 in, 5 out", acc.Usage)
	}

	params = userMessage("one two three four")
	params.MaxTokens = openai.Int(2)
	if got, err := c.Chat.Completions.New(ctx, params); err != nil || got.Choices[0].Message.Content != "You said: " || got.Choices[0].FinishReason != "length" {
		t.Errorf("Chat with max_tokens 2 = %v, %v; want %q cut for length", got, err, "You said: ")
	}

	// The fake answers what the client sent: system first, parts joined.
	s.SetReply(func(req openaitest.ChatRequest) string {
		return req.Messages[0].Content + "|" + req.Messages[1].Content
	})
	parts := []openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("left "), openai.TextContentPart("right")}
	got, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("sys"), openai.UserMessage(parts)}})
	if err != nil || got.Choices[0].Message.Content != "sys|left right" {
		t.Errorf("Chat with content parts = %v, %v; want %q", got, err, "sys|left right")
	}
	s.SetReply(nil)

	reqs := s.ChatRequests()
	if len(reqs) != 4 || reqs[0].Stream || !reqs[1].Stream || !reqs[1].IncludeUsage || reqs[2].MaxTokens != 2 {
		t.Errorf("recorded %+v, want 4 requests, the second streamed with usage, the third with max_tokens 2", reqs)
	}
	rec := s.Requests("/v1/chat/completions")[0]
	if rec.Header.Get("Authorization") != "Bearer sk-test" || !strings.HasPrefix(rec.Header.Get("User-Agent"), "OpenAI/Go") || !rec.Finished {
		t.Errorf("recorded headers %v, finished %v; want the bearer key and the official client's User-Agent", rec.Header, rec.Finished)
	}
}

func TestEmbeddingsWithOfficialClient(t *testing.T) {
	s := openaitest.New(t)
	c := client(t, s, "")
	ctx := context.Background()
	inputs := []string{"red apple", "red apple pie", "blue ocean"}
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{"", openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		got, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-a", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs}, EncodingFormat: format})
		if err != nil {
			t.Fatalf("Embeddings.New(%q) = %v", format, err)
		}
		if len(got.Data) != 3 || got.Model != "embed-a" || got.Usage.PromptTokens != 2+3+2 || got.Usage.TotalTokens != 7 {
			t.Fatalf("Embeddings.New(%q) = %d vectors of %s, usage %+v; want 3 of embed-a, 7 tokens", format, len(got.Data), got.Model, got.Usage)
		}
		for i, d := range got.Data {
			want := ollamatest.Embed(inputs[i], 64)
			if d.Index != int64(i) || len(d.Embedding) != 64 {
				t.Fatalf("Embeddings.New(%q).Data[%d] = index %d, %d floats; want index %d, 64", format, i, d.Index, len(d.Embedding), i)
			}
			for j := range want {
				if float32(d.Embedding[j]) != want[j] {
					t.Fatalf("Embeddings.New(%q).Data[%d][%d] = %v, want %v", format, i, j, d.Embedding[j], want[j])
				}
			}
		}
	}
	if body := s.Requests("/v1/embeddings")[2].Body; !strings.Contains(string(body), `"encoding_format":"base64"`) {
		t.Errorf("third embedding request = %s, want base64 asked for", body)
	}
	if body := s.Requests("/v1/embeddings")[0].Body; strings.Contains(string(body), "encoding_format") {
		t.Errorf("the official client sent %s: it asks for an encoding by default", body)
	}
	one, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-b", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("bye")}})
	if err != nil || len(one.Data) != 1 || len(one.Data[0].Embedding) != 32 {
		t.Errorf("Embeddings.New(one string) = %v, %v; want one vector of 32", one, err)
	}
}

func TestModelsWithOfficialClient(t *testing.T) {
	s := openaitest.New(t)
	c := client(t, s, "")
	ctx := context.Background()
	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatalf("Models.List = %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "openaitest" || m.Created != openaitest.Created {
			t.Errorf("model %s, want a model object", m.RawJSON())
		}
	}
	if strings.Join(ids, ",") != "chat-model,embed-a,embed-b,summary-model" {
		t.Errorf("Models.List = %v, want the default models in order", ids)
	}
	if m, err := c.Models.Get(ctx, "embed-a"); err != nil || m.ID != "embed-a" {
		t.Errorf("Models.Get(embed-a) = %v, %v", m, err)
	}
	var apiErr *openai.Error
	if _, err := c.Models.Get(ctx, "nope"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("Models.Get(nope) = %v, want a 404 model_not_found", err)
	}
}

// TestErrorsWithOfficialClient checks that every error the fake answers
// parses into openai.Error with its status, type, code and param.
func TestErrorsWithOfficialClient(t *testing.T) {
	s := openaitest.New(t)
	ctx := context.Background()
	c := client(t, s, "sk-right-key-0000")
	check := func(name string, err error, status int, typ, code, param string) {
		t.Helper()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Errorf("%s = %v, want an *openai.Error", name, err)
			return
		}
		if apiErr.StatusCode != status || apiErr.Type != typ || apiErr.Code != code || apiErr.Param != param || apiErr.Message == "" {
			t.Errorf("%s = %d %q code %q param %q (%q), want %d %q code %q param %q and a message", name, apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Param, apiErr.Message, status, typ, code, param)
		}
	}
	nope := userMessage("x")
	nope.Model = "nope"
	_, err := c.Chat.Completions.New(ctx, nope)
	check("Chat(nope)", err, 404, "invalid_request_error", "model_not_found", "")
	stream := c.Chat.Completions.NewStreaming(ctx, nope)
	for stream.Next() {
	}
	check("streamed Chat(nope)", stream.Err(), 404, "invalid_request_error", "model_not_found", "")
	embedChat := userMessage("x")
	embedChat.Model = "embed-a"
	_, err = c.Chat.Completions.New(ctx, embedChat)
	check("Chat(embedding model)", err, 400, "invalid_request_error", "", "model")
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "chat-model"})
	check("Chat(no messages)", err, 400, "invalid_request_error", "", "messages")
	_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "chat-model", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	check("Embed(chat model)", err, 400, "invalid_request_error", "", "model")
	_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-a", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}, Dimensions: openai.Int(8)})
	check("Embed(dimensions)", err, 400, "invalid_request_error", "", "dimensions")

	s.SetAPIKey("sk-right-key-0000")
	if _, err := c.Models.List(ctx); err != nil {
		t.Errorf("Models.List with the right key = %v", err)
	}
	anon := openai.NewClient(option.WithBaseURL(s.URL), option.WithMaxRetries(0))
	_, err = anon.Models.List(ctx)
	check("Models.List without a key", err, 401, "invalid_request_error", "", "")
	_, err = client(t, s, "sk-wrong-key-1234").Models.List(ctx)
	check("Models.List with a wrong key", err, 401, "invalid_request_error", "invalid_api_key", "")
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && (strings.Contains(apiErr.Message, "sk-wrong-key-1234") || !strings.Contains(apiErr.Message, "sk-**********1234")) {
		t.Errorf("wrong key message = %q, want the key masked as OpenAI masks it", apiErr.Message)
	}
	s.SetAPIKey("")

	s.SetFailAfter(2)
	_, err = c.Chat.Completions.New(ctx, userMessage("a b c"))
	check("Chat failing", err, 500, "server_error", "", "")
	stream = c.Chat.Completions.NewStreaming(ctx, userMessage("a b c"))
	var text string
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			text += ch.Choices[0].Delta.Content
		}
	}
	var se *ssestream.StreamError
	if !errors.As(stream.Err(), &se) || !strings.Contains(se.Message, "server_error") || text != "You said: " {
		t.Errorf("stream failing after 2 pieces = %q, %v; want 2 pieces and a StreamError", text, stream.Err())
	}
	s.SetFailAfter(0)

	s.SetError(429, "")
	_, err = c.Models.List(ctx)
	check("Models.List rate limited", err, 429, "requests", "rate_limit_exceeded", "")
	s.SetError(503, "")
	_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed-a", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	check("Embed overloaded", err, 503, "server_error", "", "")
	s.SetError(502, "")
	_, err = c.Models.List(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || apiErr.Message != "" {
		t.Errorf("Models.List behind a failing proxy = %v, want a 502 without a message", err)
	}
	s.SetError(0, "")

	resp := post(t, s.URL+"/nothing", "{}")
	var wire struct {
		Error map[string]any `json:"error"`
	}
	if json.NewDecoder(resp.Body).Decode(&wire); resp.StatusCode != 404 || wire.Error["message"] != "Invalid URL (POST /v1/nothing)" {
		t.Errorf("POST /v1/nothing = %d %v, want OpenAI's 404", resp.StatusCode, wire)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := wire.Error[k]; !ok {
			t.Errorf("error object %v has no %q", wire.Error, k)
		}
	}
}

// TestCutAndDown shows what a client sees of a stream cut before [DONE]
// (nothing wrong, to the official client: the caller must notice), of one
// dropped mid-answer, and of a server that drops connections.
func TestCutAndDown(t *testing.T) {
	s := openaitest.New(t)
	c := client(t, s, "")
	ctx := context.Background()
	s.SetCutAfter(3) // role, "You ", "said: "
	stream := c.Chat.Completions.NewStreaming(ctx, userMessage("a b c"))
	n := 0
	for stream.Next() {
		n++
	}
	if stream.Err() != nil || n != 3 {
		t.Errorf("cut stream = %d chunks, %v; want 3 and no error", n, stream.Err())
	}
	if r := s.Requests("/v1/chat/completions")[0]; !r.Ended || r.Finished {
		t.Errorf("cut request recorded ended=%v finished=%v, want ended and not finished", r.Ended, r.Finished)
	}
	s.SetCutAfter(0)

	s.SetDropAfter(2) // role, "You ", then the connection drops
	stream = c.Chat.Completions.NewStreaming(ctx, userMessage("a b c"))
	n = 0
	for stream.Next() {
		n++
	}
	if !errors.Is(stream.Err(), io.ErrUnexpectedEOF) || n != 2 {
		t.Errorf("dropped stream = %d chunks, %v; want 2 and an unexpected EOF", n, stream.Err())
	}
	if r := s.Requests("/v1/chat/completions")[1]; !r.Ended || r.Finished {
		t.Errorf("dropped request recorded ended=%v finished=%v, want ended and not finished", r.Ended, r.Finished)
	}
	s.SetDropAfter(0)

	s.SetDown(true)
	_, err := c.Models.List(ctx)
	var apiErr *openai.Error
	if err == nil || errors.As(err, &apiErr) {
		t.Errorf("Models.List while down = %v, want a connection error", err)
	}
	s.SetDown(false)
	if _, err := c.Models.List(ctx); err != nil {
		t.Errorf("Models.List after down = %v", err)
	}
}

func TestMalformedIsReported(t *testing.T) {
	ft := &fakeT{TB: t}
	s := openaitest.New(ft)
	resp := post(t, s.URL+"/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"x"}],"num_ctx":4096}`)
	if got := ft.reports(); resp.StatusCode != 400 || len(got) != 1 || !strings.Contains(got[0], `"num_ctx"`) {
		t.Errorf("unknown argument = %d, reported %q; want 400 and one report naming it", resp.StatusCode, got)
	}
	resp = post(t, s.URL+"/embeddings", `{"model":`)
	if got := ft.reports(); resp.StatusCode != 400 || len(got) != 2 {
		t.Errorf("bad JSON = %d, reported %q; want 400 and a second report", resp.StatusCode, got)
	}
}

// fakeT collects Errorf calls, made from the fake's handler, so that a
// test can check what the fake reports.
type fakeT struct {
	testing.TB
	mu     sync.Mutex // guards errors
	errors []string
}

func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *fakeT) reports() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.errors)
}
