package llm

import (
	"context"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// FoldMemory keeps a drop-in conversation's memory within its budget by
// folding the oldest turns the client lacks into the summary, as
// memory.PlanFold plans it. It returns the new summary, or nil when none
// is needed or the summary model fails (the memory then holds the most
// recent turns only).
func (l *Service) FoldMemory(ctx context.Context, stored []llmbridge.Message, sum memory.Summary, missing []llmbridge.Message, budget int) *schema.Summary {
	if l.cfg.SummaryModel == "" {
		return nil
	}
	fold, end, ok := memory.PlanFold(stored, sum, missing, budget)
	if !ok {
		return nil
	}
	text, err := l.summarize(ctx, sum.Text, fold, memory.SummaryTokens(budget))
	if err != nil {
		l.log.Warn("drop-in memory not summarised; sending the latest turns only", "err", err)
		return nil
	}
	return &schema.Summary{Text: text, Messages: end}
}

// DropInTurn is what Recall found of a drop-in chat turn: the memory to
// inject into the client's request, and what Remember must store once the
// model has answered.
type DropInTurn struct {
	// Memory is the text to inject (the running summary and the earlier
	// turns the client did not send, within the budget); "" for none.
	Memory string

	topic, id string
	fresh     []llmbridge.Message // the client's turns new to the conversation
	folded    *schema.Summary     // a new running summary; nil when unchanged
}

// Recall prepares a drop-in chat turn of the conversation topic/id (both
// created on first use): sent is the client's history (roles the context
// stores), which is compared with what is stored (memory.SplitNew); the
// turns the client lacks are folded into the summary when they overflow
// the budget, and rendered as the memory to inject.
func (l *Service) Recall(ctx context.Context, topic, id string, sent []llmbridge.Message) (*DropInTurn, error) {
	if err := l.docs.EnsureTopic(ctx, topic, "created by a drop-in endpoint (Ollama or OpenAI)"); err != nil {
		return nil, err
	}
	budget := memory.Budget(l.docs.TopicMaxTokens(ctx, topic), l.cfg.MaxTokens)
	// The stored tail must be as long as the client's history, to find
	// where that history ends in it.
	doc, offset, sum, err := l.readTail(ctx, topic, id, budget, len(sent)+1)
	if err != nil {
		return nil, err
	}
	stored := bridgeMessages(doc.Content.Messages)
	fresh, missing := memory.SplitNew(stored, sent)
	// Earlier turns relevant to the client's new message, older than what
	// was read (the client's own history and the missing turns rendered
	// come from there), within a quarter of the budget.
	var query string
	for i := len(sent) - 1; i >= 0; i-- {
		if sent[i].Role == "user" {
			query = sent[i].Content
			break
		}
	}
	recalled := l.recallTurns(ctx, topic, id, RecallConversation, query, func(cid string, seq uint64) bool { return cid == id && seq <= offset })
	block, recallTokens := memory.RecallBlock(recalled, recallBudget(budget))
	budget = max(1, budget-recallTokens)
	folded := l.FoldMemory(ctx, stored, sum, missing, budget)
	if folded != nil {
		sum = memory.Summary(*folded)
		folded.Messages += int(offset) // stored in the conversation's terms
	}
	mem := memory.Render(stored, sum, missing, budget)
	switch {
	case block == "":
	case mem == "":
		mem = "Memory of this conversation so far (kept by Go-KVDB):\n" + block
	default:
		mem += "\n" + block
	}
	return &DropInTurn{Memory: mem, topic: topic, id: id, fresh: fresh, folded: folded}, nil
}

// Remember stores a drop-in turn once the model answered: the client's new
// turns, the answer, and the folded summary, in one append. A failure is
// logged: the answer is the client's either way.
func (l *Service) Remember(ctx context.Context, t *DropInTurn, answer string) {
	turns := make([]schema.Message, 0, len(t.fresh)+1)
	for _, m := range t.fresh {
		turns = append(turns, schema.Message{Role: m.Role, Content: m.Content})
	}
	turns = append(turns, schema.Message{Role: "assistant", Content: answer})
	_, err := l.docs.Append(ctx, t.topic, t.id, turns, 0, func(d *schema.Document) {
		if t.folded != nil && (d.Content.Summary == nil || d.Content.Summary.Messages < t.folded.Messages) {
			d.Content.Summary = t.folded
		}
	})
	if err != nil {
		l.log.Error("drop-in chat answered but its turns were not stored", "topic", t.topic, "id", t.id, "err", err)
	}
}

// DropInChat asks the provider to continue req for a drop-in endpoint
// (the OpenAI one, which renders the answer itself), recording the call
// and its tokens as a proxied chat.
func (l *Service) DropInChat(ctx context.Context, req llmbridge.ChatRequest, fn func(llmbridge.ChatChunk) error) error {
	return l.chat(ctx, "proxy_chat", req, fn)
}
