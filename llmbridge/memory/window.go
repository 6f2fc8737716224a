package memory

import (
	"fmt"
	"strings"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

// Summary is a conversation's running summary: Text stands for its oldest
// Messages messages. The zero value is no summary.
type Summary struct {
	Text     string
	Messages int
}

// SummaryHeader introduces the running summary in the system message.
const SummaryHeader = "Summary of the earlier conversation:\n"

// MaxFoldRounds bounds the summary calls made to fit one chat's window.
const MaxFoldRounds = 3

// ComposeWindow builds a chat's prompt: one system message (the system
// messages of hist, then sum), the turns of hist that sum does not cover,
// and next. sum.Messages is at most len(hist).
func ComposeWindow(hist []llmbridge.Message, sum Summary, next []llmbridge.Message) []llmbridge.Message {
	var sys []string
	for _, m := range hist {
		if m.Role == "system" {
			sys = append(sys, m.Content)
		}
	}
	if sum.Text != "" {
		sys = append(sys, SummaryHeader+sum.Text)
	}
	var out []llmbridge.Message
	if len(sys) > 0 {
		out = append(out, llmbridge.Message{Role: "system", Content: strings.Join(sys, "\n\n")})
	}
	for _, m := range hist[sum.Messages:] {
		if m.Role != "system" {
			out = append(out, m)
		}
	}
	return append(out, next...)
}

// FoldWindow plans one round of fitting a chat's window, of tokens
// (scaled), into budget (no limit when 0): when it is over, the oldest
// turns of hist past the first covered messages are to be folded into
// the summary, as many as it takes to cover the excess and leave the
// summary its room (a quarter of budget). A turn's cost is scale applied
// to its estimate. System messages are never folded; the watermark passes
// them. It returns the turns and the new watermark, end; no turns when the
// window fits or nothing is left to fold.
func FoldWindow(hist []llmbridge.Message, covered, tokens, budget int, scale func(estimate int) int) (fold []llmbridge.Message, end int) {
	if budget <= 0 || tokens <= budget {
		return nil, covered
	}
	need := tokens - budget + budget/4
	end = covered
	for i := covered; i < len(hist) && need > 0; i++ {
		end = i + 1
		if hist[i].Role == "system" {
			continue
		}
		fold = append(fold, hist[i])
		need -= scale(MessageOverhead + EstimateTokens(hist[i].Content))
	}
	return fold, end
}

// SummaryTokens is how many tokens the summary of a conversation with
// budget tokens may take: a quarter of it, and at least 16.
func SummaryTokens(budget int) int { return max(budget/4, 16) }

// SummaryPrompt asks a summary model to merge turns into the summary so
// far, old, in about maxTokens tokens (said in words, which models heed
// better). Clip its answer to 4*maxTokens bytes.
func SummaryPrompt(old string, turns []llmbridge.Message, maxTokens int) []llmbridge.Message {
	var b strings.Builder
	b.WriteString("Summary so far:\n")
	if old == "" {
		old = "(none)"
	}
	b.WriteString(old)
	b.WriteString("\n\nNew turns:\n")
	for _, m := range turns {
		fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
	}
	words := max(8, maxTokens*3/4)
	return []llmbridge.Message{
		{Role: "system", Content: fmt.Sprintf("You keep the running summary of a conversation. Merge the summary so far and the new turns into one summary that keeps facts, names, numbers, decisions and open questions. Answer with the summary only, in at most %d words.", words)},
		{Role: "user", Content: b.String()},
	}
}

// Clip cuts s to at most n bytes, at a word boundary when there is one in
// its second half, and never inside a character.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = strings.ToValidUTF8(s[:n], "")
	if i := strings.LastIndexByte(s, ' '); i > n/2 {
		s = s[:i]
	}
	return s
}

// RecallHeader introduces the recalled turns: earlier turns of the
// conversation (or the topic) most relevant to the new message, which the
// window of recent turns does not hold.
const RecallHeader = "Recalled from earlier (most relevant to the new message):"

// RecallBlock renders recalled turns, most relevant first, as many as fit
// in budget tokens, in the order given, and the tokens it takes (0 and ""
// when none fits). Each turn is "role: content".
func RecallBlock(turns []llmbridge.Message, budget int) (string, int) {
	used := EstimateTokens(RecallHeader)
	var lines []string
	for _, m := range turns {
		line := m.Role + ": " + m.Content
		cost := MessageOverhead + EstimateTokens(line)
		if used+cost > budget {
			continue
		}
		used += cost
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return "", 0
	}
	return RecallHeader + "\n" + strings.Join(lines, "\n"), used
}

// WithRecall inserts the recalled block into a prompt ComposeWindow made,
// as a system message just before the n new turns at its end.
func WithRecall(prompt []llmbridge.Message, block string, n int) []llmbridge.Message {
	if block == "" {
		return prompt
	}
	at := max(0, len(prompt)-n)
	out := make([]llmbridge.Message, 0, len(prompt)+1)
	out = append(out, prompt[:at]...)
	out = append(out, llmbridge.Message{Role: "system", Content: block})
	return append(out, prompt[at:]...)
}
