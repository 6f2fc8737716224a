package memory

import (
	"fmt"
	"slices"
	"strings"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

// The drop-in Ollama endpoint stores a client's conversation as the client
// sends it, whole, each turn; the policy below says what of it is new and
// what the client should be reminded of.

// DefaultBudget bounds the memory given to a drop-in client when no token
// budget is configured.
const DefaultBudget = 2048

// Budget is how many tokens the memory given to a drop-in client may take:
// half the conversation's budget (the topic's, else the router's), else
// DefaultBudget.
func Budget(topicMax, routerMax int) int {
	if b := topicMax / 2; b > 0 {
		return b
	}
	if b := routerMax / 2; b > 0 {
		return b
	}
	return DefaultBudget
}

// SplitNew tells what of a client's chat history, sent, is new to the
// stored conversation, and what of the stored conversation the client did
// not send. Clients resend their whole history each turn, so the stored
// conversation's tail reappears in it; the messages after the last point
// where that tail reappears are new. A client that starts afresh (after a
// restart, say) shares no tail: all it sends is new, and all that is
// stored is missing from its view. System messages are the client's
// setup, neither stored nor compared: both results leave them out. The
// caller leaves out of sent the roles it would not store.
func SplitNew(stored, sent []llmbridge.Message) (fresh, missing []llmbridge.Message) {
	s := turns(stored)
	cn := turns(sent)
	k := 0
	for e := len(cn); e > 0; e-- {
		n := min(e, len(s))
		if n > 0 && slices.Equal(cn[e-n:e], s[len(s)-n:]) {
			k = e
			break
		}
	}
	if k == 0 {
		return cn, s
	}
	overlap := min(k, len(s))
	return cn[k:], s[:len(s)-overlap]
}

// turns is msgs without their system messages.
func turns(msgs []llmbridge.Message) []llmbridge.Message {
	var out []llmbridge.Message
	for _, m := range msgs {
		if m.Role != "system" {
			out = append(out, m)
		}
	}
	return out
}

// coveredTurns is how many of the turns (messages but system ones) of
// stored sum stands for, and the index in stored where it ends.
func coveredTurns(stored []llmbridge.Message, sum Summary) (n, end int) {
	end = min(sum.Messages, len(stored))
	for _, m := range stored[:end] {
		if m.Role != "system" {
			n++
		}
	}
	return n, end
}

// PlanFold keeps a drop-in conversation's memory within budget: when the
// turns the client lacks (missing, from SplitNew) that sum does not cover,
// with sum itself, cost more than budget, the oldest of them are to be
// folded into the summary until the rest fit in half of it. It returns
// those turns (maybe none: a summary too long on its own is to be
// summarised again) and where in stored the new summary ends, or ok false
// when the memory fits as it is. Ask for the summary in SummaryTokens(budget).
func PlanFold(stored []llmbridge.Message, sum Summary, missing []llmbridge.Message, budget int) (fold []llmbridge.Message, end int, ok bool) {
	covered, end := coveredTurns(stored, sum)
	uncovered := missing[min(covered, len(missing)):]
	cost := EstimateTokens(sum.Text) + EstimateMessages(uncovered)
	if cost <= budget {
		return nil, 0, false
	}
	n := 0
	for n < len(uncovered) && cost > budget/2 {
		cost -= MessageOverhead + EstimateTokens(uncovered[n].Content)
		n++
	}
	// The new summary ends after the n-th turn past the old one's end.
	for folded := 0; end < len(stored) && folded < n; end++ {
		if stored[end].Role != "system" {
			folded++
		}
	}
	return uncovered[:n], end, true
}

// Render is the memory of a drop-in conversation a client should be given
// because it did not send it: the running summary, then the most recent of
// the missing turns that sum does not cover, within budget tokens. It is
// "" when there is nothing to give.
func Render(stored []llmbridge.Message, sum Summary, missing []llmbridge.Message, budget int) string {
	if sum.Text != "" {
		budget -= EstimateTokens(sum.Text)
	}
	// Turns the summary already covers are not repeated.
	covered, _ := coveredTurns(stored, sum)
	missing = missing[min(covered, len(missing)):]
	first := len(missing)
	for first > 0 && budget > 0 {
		cost := MessageOverhead + EstimateTokens(missing[first-1].Content)
		if cost > budget {
			break
		}
		budget -= cost
		first--
	}
	if sum.Text == "" && first == len(missing) {
		return ""
	}
	var b strings.Builder
	b.WriteString("Memory of this conversation so far (kept by Go-KVDB):")
	if sum.Text != "" {
		b.WriteString("\n" + SummaryHeader + sum.Text)
	}
	if first < len(missing) {
		b.WriteString("\nEarlier turns:")
		for _, m := range missing[first:] {
			fmt.Fprintf(&b, "\n%s: %s", m.Role, m.Content)
		}
	}
	return b.String()
}
