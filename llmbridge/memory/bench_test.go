package memory

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

// benchHistory is a long conversation: n turns of about 120 characters.
func benchHistory(n int) []llmbridge.Message {
	out := make([]llmbridge.Message, n)
	for i := range out {
		out[i] = llmbridge.Message{Role: []string{"user", "assistant"}[i%2], Content: fmt.Sprintf("turn %d %s", i, strings.Repeat("word ", 23))}
	}
	return out
}

// BenchmarkComposeWindow is a chat's policy work before the model is
// called: compose the window of a 1,000-turn history and count it.
func BenchmarkComposeWindow(b *testing.B) {
	hist, next := benchHistory(1000), []llmbridge.Message{{Role: "user", Content: "and now?"}}
	var c Calibrator
	c.Learn("m", hist, EstimateMessages(hist)*2)
	b.ReportAllocs()
	for b.Loop() {
		c.Count("m", ComposeWindow(hist, Summary{Text: "earlier", Messages: 400}, next))
	}
}

// BenchmarkDropInMemory is a drop-in chat's policy work: split a resent
// 1,000-turn history, plan the fold, render the memory.
func BenchmarkDropInMemory(b *testing.B) {
	hist := benchHistory(1000)
	sent := hist[900:]
	b.ReportAllocs()
	for b.Loop() {
		_, missing := SplitNew(hist, sent)
		PlanFold(hist, Summary{}, missing, 2048)
		Render(hist, Summary{}, missing, 2048)
	}
}
