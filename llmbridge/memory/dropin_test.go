package memory

import (
	"slices"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge"
)

func msgs(ms ...llmbridge.Message) []llmbridge.Message { return ms }

func TestBudget(t *testing.T) {
	for _, tt := range []struct{ topic, router, want int }{
		{0, 0, DefaultBudget},
		{200, 0, 100},
		{300, 4000, 150}, // the topic's wins
		{0, 4000, 2000},
		{1, 100, 50}, // half of 1 is no budget
		{0, 1, DefaultBudget},
	} {
		if got := Budget(tt.topic, tt.router); got != tt.want {
			t.Errorf("Budget(%d, %d) = %d, want %d", tt.topic, tt.router, got, tt.want)
		}
	}
}

func TestSplitNew(t *testing.T) {
	for _, tt := range []struct {
		name           string
		stored, sent   []llmbridge.Message
		fresh, missing []llmbridge.Message
	}{
		{"first turn", nil, msgs(u("1")), msgs(u("1")), nil},
		{"continuing", msgs(u("1"), a("1")), msgs(u("1"), a("1"), u("2")), msgs(u("2")), nil},
		{"restarted", msgs(u("1"), a("1")), msgs(u("2")), msgs(u("2")), msgs(u("1"), a("1"))},
		{"client had more", msgs(u("1"), a("1")), msgs(u("0"), a("0"), u("1"), a("1"), u("2")), msgs(u("2")), nil},
		{"restarted, second turn", msgs(u("1"), a("1"), u("2"), a("2")), msgs(u("2"), a("2"), u("3")), msgs(u("3")), msgs(u("1"), a("1"))},
		{"system ignored", msgs(sys("s"), u("1"), a("1")), msgs(sys("t"), u("1"), a("1"), u("2")), msgs(u("2")), nil},
		{"system left out of both", msgs(sys("s"), u("1"), sys("n"), a("1")), msgs(sys("t"), u("2")), msgs(u("2")), msgs(u("1"), a("1"))},
		{"latest reappearance wins", msgs(u("yes"), a("ok")), msgs(u("yes"), a("ok"), u("yes"), a("ok"), u("go")), msgs(u("go")), nil},
		{"nothing new (a retry)", msgs(u("1"), a("1")), msgs(u("1"), a("1")), nil, nil},
		{"diverged history is a new client", msgs(u("1"), a("1"), u("2"), a("2")), msgs(u("1"), a("1"), u("2 edited")), msgs(u("1"), a("1"), u("2 edited")), msgs(u("1"), a("1"), u("2"), a("2"))},
		{"nothing sent", msgs(u("1")), nil, nil, msgs(u("1"))},
	} {
		fresh, missing := SplitNew(tt.stored, tt.sent)
		if !slices.Equal(fresh, tt.fresh) || !slices.Equal(missing, tt.missing) {
			t.Errorf("%s: SplitNew(%v, %v) = %v new, %v missing; want %v and %v", tt.name, tt.stored, tt.sent, fresh, missing, tt.fresh, tt.missing)
		}
	}
}

// FuzzSplitNew checks what SplitNew promises on any pair of histories:
// the new messages end what was sent, the missing ones begin what is
// stored, and either nothing is shared or the rest of the stored turns
// reappears in what was sent just before the new messages.
func FuzzSplitNew(f *testing.F) {
	f.Add([]byte{1, 2, 4, 5}, []byte{1, 2, 4, 5, 7})
	f.Add([]byte{0, 1, 2}, []byte{3, 1})
	f.Add([]byte{}, []byte{1})
	// Each byte is a message: a role of three, a content of three, so
	// histories share tails often.
	decode := func(b []byte) []llmbridge.Message {
		var out []llmbridge.Message
		for _, c := range b {
			out = append(out, llmbridge.Message{Role: []string{"system", "user", "assistant"}[c%3], Content: string(rune('a' + c/3%3))})
		}
		return out
	}
	f.Fuzz(func(t *testing.T, storedB, sentB []byte) {
		stored, sent := decode(storedB), decode(sentB)
		s, cn := turns(stored), turns(sent)
		fresh, missing := SplitNew(stored, sent)
		if len(fresh) > len(cn) || !slices.Equal(fresh, cn[len(cn)-len(fresh):]) {
			t.Fatalf("SplitNew(%v, %v): new %v does not end the turns sent", stored, sent, fresh)
		}
		if len(missing) > len(s) || !slices.Equal(missing, s[:len(missing)]) {
			t.Fatalf("SplitNew(%v, %v): missing %v does not begin the turns stored", stored, sent, missing)
		}
		if slices.Equal(fresh, cn) && slices.Equal(missing, s) {
			return
		}
		shared := s[len(missing):]
		end := len(cn) - len(fresh)
		if end < len(shared) || !slices.Equal(cn[end-len(shared):end], shared) {
			t.Fatalf("SplitNew(%v, %v) = %v, %v: the stored turns after the missing ones, %v, do not come just before the new ones", stored, sent, fresh, missing, shared)
		}
	})
}

// history is a stored conversation whose turns each cost 6 estimated
// tokens ("turn N": 2, and MessageOverhead).
var history = msgs(sys("setup"), u("turn 0"), a("turn 1"), u("turn 2"), a("turn 3"), u("turn 4"), a("turn 5"))

// conversation is what PlanFold and Render read of a drop-in chat.
type conversation struct {
	stored  []llmbridge.Message
	sum     Summary
	missing []llmbridge.Message
	budget  int
}

func TestPlanFold(t *testing.T) {
	all := turns(history) // what a restarted client lacks
	withNote := msgs(u("turn 0"), sys("note"), a("turn 1"), u("turn 2"))
	long := strings.Repeat("x", 40) // 10 tokens
	for _, tt := range []struct {
		name     string
		in       conversation
		wantOK   bool
		wantFold []llmbridge.Message
		wantEnd  int
	}{
		{"fits exactly", conversation{history, Summary{}, all, 36}, false, nil, 0},
		{"nothing missing", conversation{history, Summary{}, nil, 1}, false, nil, 0},
		// 36 > 35: fold the oldest until the rest fit in 17: four turns
		// (12 left), the system message passed.
		{"over by one", conversation{history, Summary{}, all, 35}, true, all[:4], 5},
		// Half of 25 is 12: the rest may cost exactly that.
		{"rest exactly half the budget", conversation{history, Summary{}, all, 25}, true, all[:4], 5},
		// The summary (2 tokens) covers turns 0 and 1; the rest cost 24.
		{"with a summary that fits", conversation{history, Summary{"12345678", 3}, all, 26}, false, nil, 0},
		{"past a summary", conversation{history, Summary{"12345678", 3}, all, 20}, true, all[2:5], 6},
		// The summary covers everything: it alone is to be summarised again.
		{"summary alone too long", conversation{history, Summary{long, 7}, all, 8}, true, nil, 7},
		{"watermark past the end", conversation{history, Summary{long, 99}, all, 8}, true, nil, 7},
		// The client lacks turn 0 only, which the summary covers.
		{"client lacks only covered turns", conversation{history, Summary{"12345678", 3}, all[:1], 2}, false, nil, 0},
		// 18 > 17: two turns fold (6 left of 8); the watermark passes
		// the note between them.
		{"system message within the fold", conversation{withNote, Summary{}, turns(withNote), 17}, true, turns(withNote)[:2], 3},
		{"fold everything", conversation{withNote, Summary{}, turns(withNote), 1}, true, turns(withNote), 4},
	} {
		in := tt.in
		fold, end, ok := PlanFold(in.stored, in.sum, in.missing, in.budget)
		if ok != tt.wantOK || !slices.Equal(fold, tt.wantFold) || end != tt.wantEnd {
			t.Errorf("%s: PlanFold(%+v, budget %d) = %v, %d, %v; want %v, %d, %v", tt.name, in.sum, in.budget, fold, end, ok, tt.wantFold, tt.wantEnd, tt.wantOK)
		}
	}
}

func TestRender(t *testing.T) {
	const head = "Memory of this conversation so far (kept by Go-KVDB):"
	two := msgs(u("turn 0"), a("turn 1"))
	long := strings.Repeat("x", 40) // 10 tokens
	for _, tt := range []struct {
		name string
		in   conversation
		want string
	}{
		{"nothing stored", conversation{nil, Summary{}, nil, 100}, ""},
		{"client has everything", conversation{two, Summary{}, nil, 100}, ""},
		{"all turns fit", conversation{two, Summary{}, two, 100}, head + "\nEarlier turns:\nuser: turn 0\nassistant: turn 1"},
		{"both fit exactly", conversation{two, Summary{}, two, 12}, head + "\nEarlier turns:\nuser: turn 0\nassistant: turn 1"},
		{"the most recent first", conversation{two, Summary{}, two, 11}, head + "\nEarlier turns:\nassistant: turn 1"},
		{"no room", conversation{two, Summary{}, two, 5}, ""},
		{"no budget", conversation{two, Summary{}, two, 0}, ""},
		{"summary covers all", conversation{two, Summary{"they met", 2}, two, 100}, head + "\n" + SummaryHeader + "they met"},
		// The summary takes 2 of 10; turn 3 takes 6; turn 2 does not fit.
		{"summary and the latest turns", conversation{history[1:5], Summary{"they met", 2}, history[1:5], 10},
			head + "\n" + SummaryHeader + "they met\nEarlier turns:\nassistant: turn 3"},
		{"summary over the budget still given", conversation{two, Summary{long, 1}, two, 4}, head + "\n" + SummaryHeader + long},
		// Messages 2 covers the system message and turn 0: one turn.
		{"system messages are not covered turns", conversation{msgs(sys("setup"), u("turn 0"), a("turn 1")), Summary{"hi", 2}, two, 100},
			head + "\n" + SummaryHeader + "hi\nEarlier turns:\nassistant: turn 1"},
		{"watermark past the end", conversation{two, Summary{"hi", 9}, two, 100}, head + "\n" + SummaryHeader + "hi"},
	} {
		in := tt.in
		if got := Render(in.stored, in.sum, in.missing, in.budget); got != tt.want {
			t.Errorf("%s: Render(%+v, %v, budget %d) = %q, want %q", tt.name, in.sum, in.missing, in.budget, got, tt.want)
		}
	}
}
