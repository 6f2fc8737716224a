package llm

import (
	"context"
	"strings"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

// Recall scopes: where a chat looks for earlier turns relevant to the new
// message, besides the summary and the recent turns.
const (
	RecallConversation = "conversation" // the default
	RecallTopic        = "topic"
	RecallOff          = "off"
)

const (
	// recallCandidates is how many messages a recall asks the index for.
	recallCandidates = 8
	// minRecallScore is the cosine similarity below which an earlier turn
	// is not worth its tokens.
	minRecallScore = 0.35
)

// checkRecall validates a request's recall scope.
func checkRecall(s string) error {
	switch s {
	case "", RecallConversation, RecallTopic, RecallOff:
		return nil
	}
	return apierr.Errorf(apierr.CodeInvalidArgument, "field \"recall\": %q is not one of \"conversation\", \"topic\", \"off\"", schema.Truncate(s))
}

// recallBudget is the share of a chat's token budget recalled turns may
// take: a quarter (of 4,096 tokens without a budget).
func recallBudget(budget int) int {
	if budget <= 0 {
		return 1024
	}
	return budget / 4
}

// recallTurns finds the messages of the conversation topic/id (of the
// whole topic with scope RecallTopic) most relevant to query, best first,
// that keep allows (those the window does not send already): a hybrid
// message search (keyword alone without an embedding model), keeping what
// the keyword leg found or the vector leg found at a cosine of at least
// minRecallScore. When a shard or the model fails it recalls nothing
// (logged): recall never fails a chat.
func (l *Service) recallTurns(ctx context.Context, topic, id, scope, query string, keep func(id string, seq uint64) bool) []llmbridge.Message {
	if scope == RecallOff || strings.TrimSpace(query) == "" {
		return nil
	}
	req := SearchRequest{Query: query, K: recallCandidates, Scope: ScopeMessages}
	if scope != RecallTopic {
		req.Context = id
	}
	mode := ModeKeyword
	if l.cfg.EmbedModel != "" && l.cfg.Client != nil {
		mode = ModeHybrid
	}
	hits, byKey, _, _, err := l.messageHits(ctx, topic, req, mode)
	if err != nil {
		l.log.Warn("no recall: message search failed", "topic", topic, "err", err)
		return nil
	}
	var out []llmbridge.Message
	for _, h := range hits {
		m := byKey[string(h.key)]
		relevant := h.legs[1].rank > 0 || (h.legs[0].rank > 0 && h.legs[0].score >= minRecallScore)
		if !relevant || m.msg.Role == "system" || !keep(m.id, m.seq) {
			continue
		}
		content := m.msg.Content
		if m.id != id {
			content = "(in conversation " + m.id + ") " + content
		}
		out = append(out, llmbridge.Message{Role: m.msg.Role, Content: content})
	}
	return out
}
