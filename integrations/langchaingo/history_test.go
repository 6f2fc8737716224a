package langchaingo_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/integrations/langchaingo"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/fake"
	"github.com/tmc/langchaingo/memory"
)

// recordingLLM is langchaingo's fake LLM that also records the prompts it
// is given, so a test can see what a chain sent.
type recordingLLM struct {
	*fake.LLM
	mu      sync.Mutex // guards prompts
	prompts []string
}

func newRecordingLLM(responses ...string) *recordingLLM {
	return &recordingLLM{LLM: fake.NewFakeLLM(responses)}
}

func (l *recordingLLM) GenerateContent(ctx context.Context, msgs []llms.MessageContent, opts ...llms.CallOption) (*llms.ContentResponse, error) {
	var b strings.Builder
	for _, m := range msgs {
		for _, p := range m.Parts {
			if t, ok := p.(llms.TextContent); ok {
				b.WriteString(t.Text)
			}
		}
	}
	l.mu.Lock()
	l.prompts = append(l.prompts, b.String())
	l.mu.Unlock()
	return l.LLM.GenerateContent(ctx, msgs, opts...)
}

func (l *recordingLLM) prompt(t testing.TB, i int) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.prompts) {
		t.Fatalf("the LLM got %d prompts, want at least %d", len(l.prompts), i+1)
	}
	return l.prompts[i]
}

func newHistory(t testing.TB, c *client.Client, topic, id string) *langchaingo.History {
	t.Helper()
	h, err := langchaingo.NewHistory(c, topic, id)
	if err != nil {
		t.Fatalf("NewHistory(%q, %q): %v", topic, id, err)
	}
	return h
}

// storedMessages reads a conversation through the client, not the history.
func storedMessages(t testing.TB, c *client.Client, topic, id string) []client.Message {
	t.Helper()
	msgs, _, err := c.Messages(t.Context(), topic, id, 0)
	if err != nil {
		t.Fatalf("Messages(%q, %q): %v", topic, id, err)
	}
	// Every message comes back numbered, 1 for the first: checked here,
	// then dropped, to compare with what was written.
	for i := range msgs {
		if msgs[i].Seq != uint64(i+1) {
			t.Errorf("stored message %d has seq %d, want %d", i, msgs[i].Seq, i+1)
		}
		msgs[i].Seq = 0
	}
	return msgs
}

func historyMessages(t testing.TB, h *langchaingo.History) []llms.ChatMessage {
	t.Helper()
	msgs, err := h.Messages(t.Context())
	if err != nil {
		t.Fatalf("History(%s/%s).Messages: %v", h.Topic(), h.ID(), err)
	}
	return msgs
}

// TestConversationChainKeepsItsMemoryInKVDB runs langchaingo's
// conversation chain with its buffer memory on a History: the turns are
// stored in Go-KVDB, the second prompt carries the first turn, and a
// fresh history on a restarted router carries the whole conversation on.
func TestConversationChainKeepsItsMemoryInKVDB(t *testing.T) {
	r := startRouter(t, routerOpts{})
	const topic, id = "assistant", "conv-1" // neither exists yet
	llm := newRecordingLLM("Nice to meet you, Ada.", "Your name is Ada.")
	chain := chains.NewConversation(llm, memory.NewConversationBuffer(memory.WithChatHistory(newHistory(t, r.Client, topic, id))))

	if got, err := chains.Run(t.Context(), chain, "Hi, I am Ada."); err != nil || got != "Nice to meet you, Ada." {
		t.Fatalf("Run(turn 1) = %q, %v, want %q, nil", got, err, "Nice to meet you, Ada.")
	}
	if got, err := chains.Run(t.Context(), chain, "What is my name?"); err != nil || got != "Your name is Ada." {
		t.Fatalf("Run(turn 2) = %q, %v, want %q, nil", got, err, "Your name is Ada.")
	}
	if p := llm.prompt(t, 0); strings.Contains(p, "Nice to meet you") || !strings.Contains(p, "Human: Hi, I am Ada.") {
		t.Errorf("prompt 1 = %q, want the first question and no earlier turn", p)
	}
	wantTurn1 := "Human: Hi, I am Ada.\nAI: Nice to meet you, Ada.\nHuman: What is my name?"
	if p := llm.prompt(t, 1); !strings.Contains(p, wantTurn1) {
		t.Errorf("prompt 2 = %q, want it to contain %q", p, wantTurn1)
	}

	want := []client.Message{
		{Role: "user", Content: "Hi, I am Ada."},
		{Role: "assistant", Content: "Nice to meet you, Ada."},
		{Role: "user", Content: "What is my name?"},
		{Role: "assistant", Content: "Your name is Ada."},
	}
	if got := storedMessages(t, r.Client, topic, id); !slices.Equal(got, want) {
		t.Errorf("stored messages = %v, want %v", got, want)
	}

	// The conversation is in the database, not in the process: restart
	// the router on the same file and go on with new objects.
	r.Stop(t)
	r2 := startRouter(t, routerOpts{db: r.DB})
	fresh := newHistory(t, r2.Client, topic, id)
	wantLC := []llms.ChatMessage{
		llms.HumanChatMessage{Content: "Hi, I am Ada."},
		llms.AIChatMessage{Content: "Nice to meet you, Ada."},
		llms.HumanChatMessage{Content: "What is my name?"},
		llms.AIChatMessage{Content: "Your name is Ada."},
	}
	if got := historyMessages(t, fresh); !equalMessages(got, wantLC) {
		t.Errorf("fresh History.Messages = %#v, want %#v", got, wantLC)
	}
	llm2 := newRecordingLLM("You asked my name.")
	chain2 := chains.NewConversation(llm2, memory.NewConversationBuffer(memory.WithChatHistory(fresh)))
	if _, err := chains.Run(t.Context(), chain2, "What did I ask?"); err != nil {
		t.Fatalf("Run(turn 3) after restart: %v", err)
	}
	wantAll := wantTurn1 + "\nAI: Your name is Ada.\nHuman: What did I ask?"
	if p := llm2.prompt(t, 0); !strings.Contains(p, wantAll) {
		t.Errorf("prompt 3 = %q, want it to contain %q", p, wantAll)
	}
	if got := storedMessages(t, r2.Client, topic, id); len(got) != 6 || got[5] != (client.Message{Role: "assistant", Content: "You asked my name."}) {
		t.Errorf("stored messages after turn 3 = %v, want 6 ending with the new answer", got)
	}
}

func equalMessages(a, b []llms.ChatMessage) bool {
	return len(a) == len(b) && reflect.DeepEqual(a, b)
}

// TestHistoryRoles maps every langchaingo message type the API can hold to
// its role and back, and refuses the others without writing anything.
func TestHistoryRoles(t *testing.T) {
	r := startRouter(t, routerOpts{})
	h := newHistory(t, r.Client, "roles", "c1")
	in := []llms.ChatMessage{
		llms.SystemChatMessage{Content: "be brief"},
		llms.HumanChatMessage{Content: "hello"},
		llms.AIChatMessage{Content: "hi"},
		llms.ToolChatMessage{Content: `{"temp":21}`},
		llms.GenericChatMessage{Role: "user", Content: "generic user"},
		llms.GenericChatMessage{Role: "ai", Content: "generic ai"},
		&llms.HumanChatMessage{Content: "by pointer"},
	}
	for _, m := range in {
		if err := h.AddMessage(t.Context(), m); err != nil {
			t.Fatalf("AddMessage(%#v): %v", m, err)
		}
	}
	if err := h.AddUserMessage(t.Context(), "user text"); err != nil {
		t.Fatalf("AddUserMessage: %v", err)
	}
	if err := h.AddAIMessage(t.Context(), "ai text"); err != nil {
		t.Fatalf("AddAIMessage: %v", err)
	}
	wantStored := []client.Message{
		{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi"},
		{Role: "tool", Content: `{"temp":21}`}, {Role: "user", Content: "generic user"}, {Role: "assistant", Content: "generic ai"},
		{Role: "user", Content: "by pointer"}, {Role: "user", Content: "user text"}, {Role: "assistant", Content: "ai text"},
	}
	if got := storedMessages(t, r.Client, "roles", "c1"); !slices.Equal(got, wantStored) {
		t.Errorf("stored messages = %v, want %v", got, wantStored)
	}
	wantRead := []llms.ChatMessage{
		llms.SystemChatMessage{Content: "be brief"}, llms.HumanChatMessage{Content: "hello"}, llms.AIChatMessage{Content: "hi"},
		llms.ToolChatMessage{Content: `{"temp":21}`}, llms.HumanChatMessage{Content: "generic user"}, llms.AIChatMessage{Content: "generic ai"},
		llms.HumanChatMessage{Content: "by pointer"}, llms.HumanChatMessage{Content: "user text"}, llms.AIChatMessage{Content: "ai text"},
	}
	if got := historyMessages(t, h); !equalMessages(got, wantRead) {
		t.Errorf("Messages = %#v, want %#v", got, wantRead)
	}

	refused := []llms.ChatMessage{
		nil,
		llms.FunctionChatMessage{Name: "get_weather", Content: "21"},
		llms.ToolChatMessage{ID: "call_1", Content: "21"},
		llms.AIChatMessage{Content: "", ToolCalls: []llms.ToolCall{{ID: "call_1", Type: "function", FunctionCall: &llms.FunctionCall{Name: "get_weather", Arguments: "{}"}}}},
		llms.AIChatMessage{FunctionCall: &llms.FunctionCall{Name: "f"}},
		&llms.AIChatMessage{ReasoningContent: "thinking"},
		llms.GenericChatMessage{Role: "narrator", Content: "once upon a time"},
		llms.GenericChatMessage{Role: "user", Name: "ada", Content: "named"},
	}
	for _, m := range refused {
		err := h.AddMessage(t.Context(), m)
		if !errors.Is(err, langchaingo.ErrUnsupportedMessage) || !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("AddMessage(%#v) = %v, want ErrUnsupportedMessage (and client.ErrInvalidArgument)", m, err)
		}
		if err := h.SetMessages(t.Context(), []llms.ChatMessage{llms.HumanChatMessage{Content: "ok"}, m}); !errors.Is(err, langchaingo.ErrUnsupportedMessage) {
			t.Errorf("SetMessages([ok, %#v]) = %v, want ErrUnsupportedMessage", m, err)
		}
	}
	if got := storedMessages(t, r.Client, "roles", "c1"); !slices.Equal(got, wantStored) {
		t.Errorf("stored messages after refused writes = %v, want them unchanged: %v", got, wantStored)
	}
}

// TestHistorySetMessagesAndClear replaces and clears a conversation that
// also has a text and tags of its own, which both keep.
func TestHistorySetMessagesAndClear(t *testing.T) {
	r := startRouter(t, routerOpts{embed: true})
	c := r.Client
	if _, err := c.CreateTopic(t.Context(), client.Topic{Name: "support"}); err != nil {
		t.Fatal(err)
	}
	doc := client.Document{
		Metadata: client.Metadata{Tags: []string{"billing"}, Model: "llama3"},
		Content:  client.Content{Text: "Customer 42", Messages: []client.Message{{Role: "user", Content: "old question"}}},
	}
	if _, err := c.PutContext(t.Context(), "support", "t-1", doc, nil); err != nil {
		t.Fatal(err)
	}
	h := newHistory(t, c, "support", "t-1")
	set := []llms.ChatMessage{llms.SystemChatMessage{Content: "You are support."}, llms.HumanChatMessage{Content: "new question"}, llms.AIChatMessage{Content: "new answer"}}
	if err := h.SetMessages(t.Context(), set); err != nil {
		t.Fatalf("SetMessages: %v", err)
	}
	if got := historyMessages(t, h); !equalMessages(got, set) {
		t.Errorf("Messages after SetMessages = %#v, want %#v", got, set)
	}
	got, err := c.GetContext(t.Context(), "support", "t-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Content.Text != "Customer 42" || !slices.Equal(got.Metadata.Tags, []string{"billing"}) || got.Metadata.Model != "llama3" {
		t.Errorf("GetContext after SetMessages = text %q tags %v model %q, want the context's own kept", got.Content.Text, got.Metadata.Tags, got.Metadata.Model)
	}
	// The old embedding described "old question"; the router embeds the
	// context again from what it holds now.
	if got.Metadata.EmbeddingModel != "embed-a" || len(got.Content.Embeddings) == 0 {
		t.Errorf("GetContext after SetMessages: embedding model %q, %d values, want the router's new embedding", got.Metadata.EmbeddingModel, len(got.Content.Embeddings))
	}

	if err := h.Clear(t.Context()); err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if got := historyMessages(t, h); len(got) != 0 {
		t.Errorf("Messages after Clear = %v, want none", got)
	}
	if got := storedMessages(t, c, "support", "t-1"); len(got) != 0 {
		t.Errorf("stored messages after Clear = %v, want none", got)
	}
	if got, err := c.GetContext(t.Context(), "support", "t-1"); err != nil || got.Content.Text != "Customer 42" || !slices.Equal(got.Metadata.Tags, []string{"billing"}) {
		t.Errorf("GetContext after Clear = %+v, %v, want the context kept with its text and tags", got, err)
	}
	// The history goes on after a Clear.
	if err := h.AddUserMessage(t.Context(), "again"); err != nil {
		t.Fatal(err)
	}
	if got := storedMessages(t, c, "support", "t-1"); !slices.Equal(got, []client.Message{{Role: "user", Content: "again"}}) {
		t.Errorf("stored messages after Clear and AddUserMessage = %v, want the one new message", got)
	}

	// Clearing a conversation that does not exist creates nothing.
	missing := newHistory(t, c, "no-such-topic", "nobody")
	if err := missing.Clear(t.Context()); err != nil {
		t.Errorf("Clear(missing) = %v, want nil", err)
	}
	if got := historyMessages(t, missing); len(got) != 0 {
		t.Errorf("Messages(missing) = %v, want none", got)
	}
	if _, err := c.Topic(t.Context(), "no-such-topic"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Topic(no-such-topic) after Clear = %v, want ErrNotFound", err)
	}
	// SetMessages creates the topic and the conversation.
	if err := missing.SetMessages(t.Context(), set[1:]); err != nil {
		t.Fatalf("SetMessages(missing): %v", err)
	}
	if got := storedMessages(t, c, "no-such-topic", "nobody"); len(got) != 2 {
		t.Errorf("stored messages after SetMessages(missing) = %v, want 2", got)
	}
}

// TestHistoryConcurrentAppendsAllLand: several Histories on one
// conversation, appending at once, lose nothing.
func TestHistoryConcurrentAppendsAllLand(t *testing.T) {
	r := startRouter(t, routerOpts{})
	const writers, each = 4, 10
	var wg sync.WaitGroup
	for w := range writers {
		h := newHistory(t, r.Client, "busy", "shared")
		wg.Go(func() {
			for i := range each {
				if err := h.AddUserMessage(t.Context(), strings.Repeat("x", w+1)+string(rune('a'+i))); err != nil {
					t.Errorf("writer %d: AddUserMessage: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := storedMessages(t, r.Client, "busy", "shared"); len(got) != writers*each {
		t.Errorf("stored %d messages, want %d", len(got), writers*each)
	}
}

// TestHistoryHostileInput: bad names and ids fail when the history is
// made; a cancelled context and a router that is gone fail the call and
// write nothing.
func TestHistoryHostileInput(t *testing.T) {
	r := startRouter(t, routerOpts{})
	for _, tc := range []struct{ topic, id string }{
		{"", "c1"}, {"t", ""}, {"bad topic", "c1"}, {"t", "a/b"}, {"../x", "c1"}, {"t", ".."},
		{"t", "-leading-dash"}, {strings.Repeat("t", 129), "c1"}, {"t", strings.Repeat("i", 257)},
	} {
		h, err := langchaingo.NewHistory(r.Client, tc.topic, tc.id)
		if h != nil || !errors.Is(err, langchaingo.ErrInvalidArgument) || !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("NewHistory(%q, %q) = %v, %v, want nil, ErrInvalidArgument", truncate(tc.topic), truncate(tc.id), h, err)
		}
	}
	if _, err := langchaingo.NewHistory(nil, "t", "c1"); !errors.Is(err, langchaingo.ErrInvalidArgument) {
		t.Errorf("NewHistory(nil client) = %v, want ErrInvalidArgument", err)
	}

	h := newHistory(t, r.Client, "hostile", "c1")
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := h.AddUserMessage(cancelled, "lost"); !errors.Is(err, context.Canceled) {
		t.Errorf("AddUserMessage(cancelled ctx) = %v, want context.Canceled", err)
	}
	if err := h.SetMessages(cancelled, []llms.ChatMessage{llms.HumanChatMessage{Content: "lost"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("SetMessages(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := h.Messages(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Messages(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := r.Client.Topic(t.Context(), "hostile"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Topic(hostile) after cancelled calls = %v, want ErrNotFound (nothing written)", err)
	}

	r.Stop(t)
	if err := h.AddUserMessage(t.Context(), "nobody listens"); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("AddUserMessage(router stopped) = %v, want client.ErrUnavailable", err)
	}
	if _, err := h.Messages(t.Context()); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Messages(router stopped) = %v, want client.ErrUnavailable", err)
	}
}

func truncate(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}
