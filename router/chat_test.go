package router

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestChat(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "t")
	url := tc.URL + "/api/v1/topics/t/contexts/c/chat"

	r := must(t, call(t, "POST", url, `{"message":"hello there"}`), 200, "chat")
	var a struct {
		Message schema.Message
		Model   string
	}
	if err := json.Unmarshal(r.Raw, &a); err != nil {
		t.Fatalf("chat answer %s: %v", r.Raw, err)
	}
	if a.Message != (schema.Message{Role: "assistant", Content: "You said: hello there"}) || a.Model != "chat-model" {
		t.Errorf("chat = %s", r.Raw)
	}
	if r.JSON["prompt_tokens"] != float64(4+2) || r.JSON["completion_tokens"] != 4.0 || r.Header.Get("ETag") == "" {
		t.Errorf("chat = %s (ETag %q), want Ollama's counts 6 and 4 and an ETag", r.Raw, r.Header.Get("ETag"))
	}
	must(t, call(t, "POST", url, `{"message":"and again","model":"chat-model"}`), 200, "second chat")
	got := messagesOf(t, tc, "t", "c")
	want := []schema.Message{{Role: "user", Content: "hello there"}, {Role: "assistant", Content: "You said: hello there"}, {Role: "user", Content: "and again"}, {Role: "assistant", Content: "You said: and again"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored = %v, want %v", got, want)
	}
	// The second call sent the first exchange as history.
	sent := fake.ChatRequests()[1].Messages
	if len(sent) != 3 || sent[0].Content != "hello there" || sent[2].Content != "and again" {
		t.Errorf("Ollama received %+v, want the stored turns then the new one", sent)
	}

	m := tc.router.llm.Metrics()
	if n := testutil.ToFloat64(m.Requests.WithLabelValues("chat", "chat-model", "ok")); n != 2 {
		t.Errorf("ollama requests_total{chat,chat-model,ok} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(m.Tokens.WithLabelValues("chat-model", "out")); n != 4+4 {
		t.Errorf("ollama tokens_total{chat-model,out} = %v, want 8", n)
	}
	if n := testutil.ToFloat64(m.Requests.WithLabelValues("embed", "embed-a", "ok")); n != 2 {
		t.Errorf("ollama requests_total{embed,embed-a,ok} = %v, want 2 (each stored exchange is embedded)", n)
	}
	if problems, err := testutil.GatherAndLint(tc.reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}

	for _, tt := range []struct {
		body   string
		status int
	}{
		{`{"message":""}`, 400},
		{`{"message":"x","max_tokens":-1}`, 400},
		{`{"message":"x","model":"no-such-model"}`, 404},
		{`{"message":"x","model":"embed-a"}`, 400},
	} {
		if r := call(t, "POST", url, tt.body); r.Status != tt.status {
			t.Errorf("chat %s = %d %s, want %d", tt.body, r.Status, r.Raw, tt.status)
		}
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/none/contexts/c/chat", `{"message":"x"}`); r.Status != 404 {
		t.Errorf("chat in a missing topic = %d, want 404", r.Status)
	}
	if n := len(messagesOf(t, tc, "t", "c")); n != 4 {
		t.Errorf("failed chats stored messages: %d, want 4", n)
	}
}

func TestChatStream(t *testing.T) {
	tc, _ := newLLMCluster(t, 1, nil)
	tc.createTopic(t, "t")
	resp := postStream(t, context.Background(), tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"one two three","stream":true}`)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" {
		t.Fatalf("stream = %d %s", resp.StatusCode, ct)
	}
	lines := readLines(t, resp.Body)
	if len(lines) != 6 {
		t.Fatalf("got %d lines, want 5 pieces and a last line: %v", len(lines), lines)
	}
	var text string
	for _, l := range lines[:5] {
		msg := l["message"].(map[string]any)
		if l["done"] != false || msg["role"] != "assistant" {
			t.Errorf("piece %v", l)
		}
		text += msg["content"].(string)
	}
	last := lines[5]
	if text != "You said: one two three" || last["done"] != true || last["prompt_tokens"] != 7.0 || last["completion_tokens"] != 5.0 || last["etag"] == "" {
		t.Errorf("streamed %q, last line %v", text, last)
	}
	if got := messagesOf(t, tc, "t", "c"); len(got) != 2 || got[1].Content != text {
		t.Errorf("stored %v", got)
	}
}

// TestChatFailureStoresNothing: an error in the middle of the answer, or a
// client that goes away, leaves the conversation as it was.
func TestChatFailureStoresNothing(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "t")
	url := tc.URL + "/api/v1/topics/t/contexts/c/chat"
	must(t, call(t, "POST", url, `{"message":"first"}`), 200, "chat")

	fake.SetFailAfter(2)
	resp := postStream(t, context.Background(), url, `{"message":"a b c d","stream":true}`)
	lines := readLines(t, resp.Body)
	resp.Body.Close()
	if len(lines) != 3 || lines[2]["error"] == nil || lines[2]["done"] != nil {
		t.Errorf("stream with an error after 2 pieces = %v, want 2 pieces and an error line", lines)
	}
	r := call(t, "POST", url, `{"message":"a b c d"}`)
	if r.Status != 503 {
		t.Errorf("non-streamed chat with an error = %d %s, want 503", r.Status, r.Raw)
	}
	fake.SetFailAfter(0)

	fake.SetGap(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	resp = postStream(t, ctx, url, `{"message":"w x y z","stream":true}`)
	buf := make([]byte, 1)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("read the first piece: %v", err)
	}
	cancel()
	resp.Body.Close()
	errs := tc.router.llm.Metrics().Requests.WithLabelValues("chat", "chat-model", "error")
	waitFor(t, "the abandoned chat to end", func() bool { return testutil.ToFloat64(errs) == 3 })
	if got := messagesOf(t, tc, "t", "c"); len(got) != 2 {
		t.Errorf("after failures the context holds %d messages, want the first exchange only: %v", len(got), got)
	}
	// The gap before the second piece is an hour: only a cancelled
	// request ends now.
	waitFor(t, "Ollama to see the abandoned chat cancelled", func() bool {
		reqs := fake.Requests("/api/chat")
		last := reqs[len(reqs)-1]
		return last.Ended && !last.Finished
	})
}

// TestChatBudgetFolding: past its token budget a conversation's oldest
// turns are folded into a running summary by the summary model; what is
// sent fits the budget and the whole history stays stored.
func TestChatBudgetFolding(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"t","max_tokens":120}`), 201, "create topic")
	var msgs []string
	for i := range 20 {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		msgs = append(msgs, fmt.Sprintf(`{"role":%q,"content":"turn %d says something of moderate length here"}`, role, i))
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/messages", `{"messages":[{"role":"system","content":"You are terse."},`+strings.Join(msgs, ",")+`]}`), 200, "seed history")

	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"what did turn 0 say"}`), 200, "chat")
	var summaries, chats []int
	for i, r := range fake.ChatRequests() {
		if r.Model == "summary-model" {
			summaries = append(summaries, i)
		} else {
			chats = append(chats, i)
		}
	}
	if len(summaries) == 0 || len(chats) != 1 {
		t.Fatalf("Ollama saw %d summary and %d chat requests, want at least one summary then one chat", len(summaries), len(chats))
	}
	sent := fake.ChatRequests()[chats[0]].Messages
	if sent[0].Role != "system" || !strings.HasPrefix(sent[0].Content, "You are terse.") || !strings.Contains(sent[0].Content, memory.SummaryHeader) {
		t.Errorf("first message sent = %+v, want the system message with the summary merged in", sent[0])
	}
	var asBridge []llmbridge.Message
	for _, m := range sent {
		asBridge = append(asBridge, llmbridge.Message{Role: m.Role, Content: m.Content})
	}
	if n := memory.EstimateMessages(asBridge); n > 120 {
		t.Errorf("sent %d estimated tokens, budget 120", n)
	}
	if sent[len(sent)-1].Content != "what did turn 0 say" || len(sent) >= 22 {
		t.Errorf("sent %d messages ending %+v", len(sent), sent[len(sent)-1])
	}
	d := documentOf(t, tc, "t", "c")
	if len(d.Content.Messages) != 23 || d.Content.Summary == nil || d.Content.Summary.Messages == 0 || !strings.HasPrefix(d.Content.Summary.Text, "Summary:") {
		t.Errorf("stored %d messages, summary %+v; want all 23 and a summary", len(d.Content.Messages), d.Content.Summary)
	}
	// Ollama's own count teaches the estimate: the fake counts words.
	if _, ok := tc.router.llm.Tokens().Ratio("chat-model"); !ok {
		t.Errorf("no token calibration learnt from prompt_eval_count")
	}

	// A request's own max_tokens wins over the topic's: a large one
	// sends everything since the summary, without summarising again.
	before := len(fake.Requests("/api/chat"))
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"more","max_tokens":100000}`), 200, "chat")
	if n := len(fake.Requests("/api/chat")) - before; n != 1 {
		t.Errorf("a chat within budget made %d Ollama calls, want 1", n)
	}
	if !strings.Contains(ollamatest.Reply(fake.ChatRequests()[len(fake.ChatRequests())-1]), "more") {
		t.Errorf("last chat was not the new message")
	}
}

// TestChatReadsTheTail: on a long conversation stored as records, a chat
// reads only its end (back to twice the budget, or to where the summary
// ends), and the summary it stores counts messages of the whole
// conversation.
func TestChatReadsTheTail(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"t","max_tokens":120}`), 201, "create topic")
	const total = 400
	for b := range total / 100 {
		var msgs []string
		for i := b * 100; i < (b+1)*100; i++ {
			role := "user"
			if i%2 == 1 {
				role = "assistant"
			}
			msgs = append(msgs, fmt.Sprintf(`{"role":%q,"content":"turn %d says something of moderate length here"}`, role, i))
		}
		must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/messages", `{"messages":[`+strings.Join(msgs, ",")+`]}`), 200, "seed history")
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"what did we say last"}`), 200, "chat")
	for _, r := range fake.ChatRequests() {
		for _, m := range r.Messages {
			if strings.Contains(m.Content, "turn 5 says") {
				t.Errorf("a %s request carried turn 5: the chat read far past its budget", r.Model)
			}
		}
	}
	last := fake.ChatRequests()[len(fake.ChatRequests())-1]
	if r := ollamatest.Reply(last); !strings.Contains(r, "what did we say last") {
		t.Errorf("the chat request was not the new message: %q", r)
	}
	joined := ""
	for _, m := range last.Messages {
		joined += m.Content + "\n"
	}
	if !strings.Contains(joined, "turn 399 says") {
		t.Errorf("the chat request lacks the latest turn: %s", joined)
	}
	d := documentOf(t, tc, "t", "c")
	if len(d.Content.Messages) != total+2 || d.Content.Summary == nil || d.Content.Summary.Messages <= total-50 || d.Content.Summary.Messages > total {
		t.Fatalf("stored %d messages, summary %+v; want %d and a summary ending near the end", len(d.Content.Messages), d.Content.Summary, total+2)
	}
	first := d.Content.Summary.Messages

	// The next chat reads back to the summary's end and folds from there.
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/contexts/c/chat", `{"message":"and now"}`), 200, "second chat")
	d = documentOf(t, tc, "t", "c")
	if d.Content.Summary == nil || d.Content.Summary.Messages < first || d.Content.Summary.Messages > total+2 {
		t.Errorf("after the second chat the summary is %+v; want it at %d..%d", d.Content.Summary, first, total+2)
	}
}
