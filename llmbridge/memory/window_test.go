package memory

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

func sys(s string) llmbridge.Message { return llmbridge.Message{Role: "system", Content: s} }
func u(s string) llmbridge.Message   { return llmbridge.Message{Role: "user", Content: s} }
func a(s string) llmbridge.Message   { return llmbridge.Message{Role: "assistant", Content: s} }

func TestComposeWindow(t *testing.T) {
	for _, tt := range []struct {
		name string
		hist []llmbridge.Message
		sum  Summary
		next []llmbridge.Message
		want []llmbridge.Message
	}{
		{"first turn", nil, Summary{}, []llmbridge.Message{u("hi")}, []llmbridge.Message{u("hi")}},
		{"history then next", []llmbridge.Message{u("1"), a("1")}, Summary{}, []llmbridge.Message{u("2")},
			[]llmbridge.Message{u("1"), a("1"), u("2")}},
		{"system messages become one, first", []llmbridge.Message{sys("be terse"), u("1"), sys("be kind"), a("1")}, Summary{}, []llmbridge.Message{u("2")},
			[]llmbridge.Message{sys("be terse\n\nbe kind"), u("1"), a("1"), u("2")}},
		{"summary replaces the turns it covers", []llmbridge.Message{u("1"), a("1"), u("2"), a("2")}, Summary{Text: "they met", Messages: 2}, []llmbridge.Message{u("3")},
			[]llmbridge.Message{sys(SummaryHeader + "they met"), u("2"), a("2"), u("3")}},
		{"covered system messages are kept", []llmbridge.Message{sys("be terse"), u("1"), a("1"), u("2")}, Summary{Text: "greeted", Messages: 3}, nil,
			[]llmbridge.Message{sys("be terse\n\n" + SummaryHeader + "greeted"), u("2")}},
		{"summary covering everything", []llmbridge.Message{u("1"), a("1")}, Summary{Text: "all", Messages: 2}, []llmbridge.Message{u("2")},
			[]llmbridge.Message{sys(SummaryHeader + "all"), u("2")}},
	} {
		if got := ComposeWindow(tt.hist, tt.sum, tt.next); !slices.Equal(got, tt.want) {
			t.Errorf("%s: ComposeWindow(%v, %+v, %v) = %q, want %q", tt.name, tt.hist, tt.sum, tt.next, got, tt.want)
		}
	}
}

func TestFoldWindow(t *testing.T) {
	// Each turn "turn N" costs MessageOverhead+2 = 6 estimated tokens.
	hist := []llmbridge.Message{sys("setup"), u("turn 0"), a("turn 1"), sys("note"), u("turn 2"), a("turn 3")}
	same := func(n int) int { return n }
	double := func(n int) int { return 2 * n }
	for _, tt := range []struct {
		name                    string
		covered, tokens, budget int
		scale                   func(int) int
		want                    []llmbridge.Message
		wantEnd                 int
	}{
		{"no budget", 0, 1000, 0, same, nil, 0},
		{"fits", 0, 40, 40, same, nil, 0},
		{"fits, past a summary", 2, 40, 40, same, nil, 2},
		// need = 41-40+10 = 11: two turns (12), the system message before them passed.
		{"over by one", 0, 41, 40, same, []llmbridge.Message{u("turn 0"), a("turn 1")}, 3},
		// need = 21-20+5 = 6: met exactly by the first turn.
		{"need met by one turn", 0, 21, 20, same, []llmbridge.Message{u("turn 0")}, 2},
		// need = 11, turns cost 12 each when scaled: one is enough.
		{"scaled costs", 0, 41, 40, double, []llmbridge.Message{u("turn 0")}, 2},
		// need = 11 from message 2 on: turn 1 (6), the note passed, turn 2 (12).
		{"from the watermark", 2, 41, 40, same, []llmbridge.Message{a("turn 1"), u("turn 2")}, 5},
		{"more than all", 0, 1000, 40, same, []llmbridge.Message{u("turn 0"), a("turn 1"), u("turn 2"), a("turn 3")}, 6},
		{"nothing left to fold", 6, 1000, 40, same, nil, 6},
		{"one turn left", 5, 1000, 40, same, []llmbridge.Message{a("turn 3")}, 6},
	} {
		fold, end := FoldWindow(hist, tt.covered, tt.tokens, tt.budget, tt.scale)
		if !slices.Equal(fold, tt.want) || end != tt.wantEnd {
			t.Errorf("%s: FoldWindow(covered %d, tokens %d, budget %d) = %v, %d; want %v, %d", tt.name, tt.covered, tt.tokens, tt.budget, fold, end, tt.want, tt.wantEnd)
		}
	}
	fold, end := FoldWindow([]llmbridge.Message{u("a"), sys("s")}, 1, 100, 10, same)
	if fold != nil || end != 2 {
		t.Errorf("FoldWindow(a system message only) = %v, %d; want no turns, the watermark past it", fold, end)
	}
}

func TestSummaryTokens(t *testing.T) {
	for _, tt := range []struct{ budget, want int }{{0, 16}, {63, 16}, {64, 16}, {68, 17}, {4000, 1000}} {
		if got := SummaryTokens(tt.budget); got != tt.want {
			t.Errorf("SummaryTokens(%d) = %d, want %d", tt.budget, got, tt.want)
		}
	}
}

func TestSummaryPrompt(t *testing.T) {
	instruction := func(words int) llmbridge.Message {
		return sys(fmt.Sprintf("You keep the running summary of a conversation. Merge the summary so far and the new turns into one summary that keeps facts, names, numbers, decisions and open questions. Answer with the summary only, in at most %d words.", words))
	}
	for _, tt := range []struct {
		name      string
		old       string
		turns     []llmbridge.Message
		maxTokens int
		want      []llmbridge.Message
	}{
		{"first summary", "", []llmbridge.Message{u("I am Ada"), a("Hello Ada")}, 100,
			[]llmbridge.Message{instruction(75), u("Summary so far:\n(none)\n\nNew turns:\nuser: I am Ada\nassistant: Hello Ada\n")}},
		{"merging, at least eight words", "Ada introduced herself.", []llmbridge.Message{u("I like tea")}, 4,
			[]llmbridge.Message{instruction(8), u("Summary so far:\nAda introduced herself.\n\nNew turns:\nuser: I like tea\n")}},
		{"summary alone resummarised", "long summary", nil, 16,
			[]llmbridge.Message{instruction(12), u("Summary so far:\nlong summary\n\nNew turns:\n")}},
	} {
		if got := SummaryPrompt(tt.old, tt.turns, tt.maxTokens); !slices.Equal(got, tt.want) {
			t.Errorf("%s: SummaryPrompt(%q, %v, %d) = %q, want %q", tt.name, tt.old, tt.turns, tt.maxTokens, got, tt.want)
		}
	}
}

func TestClip(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"one two three four", 12, "one two"},    // "one two thre" cut at its last space
		{"one twothreefour", 12, "one twothree"}, // the only space is in the first half
		{"abcdefghijkl", 5, "abcde"},             // no space at all
		{"ab cd", 0, ""},                         // nothing allowed
		{"aaaa ééé", 8, "aaaa é"},                // half a character dropped; a space at n/2 is not in the second half
		{"aaaaaa éé", 10, "aaaaaa"},              // half a character dropped, then cut at the space
		{"日本語", 4, "日"},                          // three bytes a character
	} {
		if got := Clip(tt.s, tt.n); got != tt.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func FuzzClip(f *testing.F) {
	for _, s := range []string{"", "one two three", "日本語 テキスト", "aaaa ééé"} {
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || !utf8.ValidString(s) {
			return
		}
		got := Clip(s, n)
		if len(got) > n || !strings.HasPrefix(s, got) || !utf8.ValidString(got) {
			t.Errorf("Clip(%q, %d) = %q, want a valid prefix of at most %d bytes", s, n, got, n)
		}
		if len(s) <= n && got != s {
			t.Errorf("Clip(%q, %d) = %q, want it unchanged", s, n, got)
		}
	})
}
