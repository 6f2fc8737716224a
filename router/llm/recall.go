package llm

import (
	"context"
	"strings"

	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/router/apierr"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
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
// whole topic with scope RecallTopic) most similar to query, best first,
// that keep allows (those the window does not send already). It searches
// the message vectors auto-embedding writes; without an embedding model,
// or when the model or a shard fails, it recalls nothing (logged): recall
// never fails a chat.
func (l *Service) recallTurns(ctx context.Context, topic, id, scope, query string, keep func(id string, seq uint64) bool) []llmbridge.Message {
	model := l.cfg.EmbedModel
	if scope == RecallOff || model == "" || l.cfg.Client == nil || strings.TrimSpace(query) == "" {
		return nil
	}
	ectx, cancel := context.WithTimeout(ctx, l.cfg.EmbedTimeout)
	vecs, err := l.embed(ectx, "embed_query", model, []string{query})
	cancel()
	if err != nil || len(vecs) != 1 {
		l.log.Warn("no recall: the new message could not be embedded", "model", model, "err", err)
		return nil
	}
	prefix := schema.MessagePrefix(topic, id)
	if scope == RecallTopic {
		prefix = []byte(topic + schema.KeySep)
	}
	found, err := l.coord.TopKIn(ctx, schema.BucketMessageVectors, storage.TopKQuery{Prefix: prefix, Query: vecs[0], K: recallCandidates, Model: model})
	if err != nil {
		l.log.Warn("no recall: message search failed", "topic", topic, "err", err)
		return nil
	}
	read, err := l.readMatchedMessages(ctx, topic, found.Matches)
	if err != nil {
		l.log.Warn("no recall: recalled messages could not be read", "topic", topic, "err", err)
		return nil
	}
	var out []llmbridge.Message
	for i, m := range read {
		if !m.ok || found.Matches[i].Score < minRecallScore || m.msg.Role == "system" || !keep(m.id, m.seq) {
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
