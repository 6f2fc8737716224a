package router

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/llmbridge/memory"
	"github.com/ollama/ollama/api"
)

// seedRecall stores a conversation whose first turn holds a fact, then
// enough filler that a window of recent turns within the topic's budget
// no longer holds it.
func seedRecall(t testing.TB, tc *testCluster, topic, id string) {
	t.Helper()
	url := tc.URL + "/api/v1/topics/" + topic + "/contexts/" + id + "/messages"
	must(t, appendMsgs(t, url, nil, "my locker code is 9182", "noted, I will remember that"), 200, "append the fact")
	for i := range 40 {
		filler := strings.Repeat(fmt.Sprintf("filler%d wording about the weather and rivers ", i), 8)
		must(t, appendMsgs(t, url, nil, filler, "ok "+filler), 200, "append filler")
	}
}

// sentHolds reports whether any message of the model's last chat request
// contains s.
func sentHolds(msgs []api.Message, s string) bool {
	for _, m := range msgs {
		if strings.Contains(m.Content, s) {
			return true
		}
	}
	return false
}

// TestChatRecallsAnEarlierTurn: a chat injects the earlier turn most
// relevant to the new message, which the window of recent turns and the
// summary would have left out, and reports its tokens; with recall off it
// does not.
func TestChatRecallsAnEarlierTurn(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"rc","max_tokens":300}`), 201, "create topic")
	seedRecall(t, tc, "rc", "c")
	seedRecall(t, tc, "rc", "off")

	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/rc/contexts/off/chat", `{"message":"what is my locker code","recall":"off"}`), 200, "chat, recall off")
	last := fake.ChatRequests()[len(fake.ChatRequests())-1]
	if sentHolds(last.Messages, "9182") {
		t.Fatalf("with recall off the window still holds the first turn: the test does not test recall")
	}
	var a struct {
		Tokens struct{ Summary, Recent, Recalled int }
	}
	if err := json.Unmarshal(r.Raw, &a); err != nil || a.Tokens.Recalled != 0 || a.Tokens.Recent == 0 {
		t.Errorf("chat with recall off = %s, want recent tokens and no recalled ones", r.Raw)
	}

	r = must(t, call(t, "POST", tc.URL+"/api/v1/topics/rc/contexts/c/chat", `{"message":"what is my locker code"}`), 200, "chat")
	last = fake.ChatRequests()[len(fake.ChatRequests())-1]
	var block string
	for _, m := range last.Messages {
		if m.Role == "system" && strings.HasPrefix(m.Content, memory.RecallHeader) {
			block = m.Content
		}
	}
	if !strings.Contains(block, "user: my locker code is 9182") {
		t.Errorf("the chat request has no recalled first turn: %+v", last.Messages)
	}
	if err := json.Unmarshal(r.Raw, &a); err != nil || a.Tokens.Recalled == 0 || a.Tokens.Recalled > 300/4 {
		t.Errorf("chat = %s, want recalled tokens within a quarter of the budget of 300", r.Raw)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/rc/contexts/c/chat", `{"message":"x","recall":"everywhere"}`); r.Status != 400 {
		t.Errorf("recall everywhere = %d %s, want 400", r.Status, r.Raw)
	}
}

// TestDropInRecallsAnEarlierTurn: the drop-in Ollama endpoint's request to
// the model carries the earlier turn relevant to the client's new message,
// which a window of recent turns alone would have dropped (a question on
// something else does not get it).
func TestDropInRecallsAnEarlierTurn(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"rc","max_tokens":300}`), 201, "create topic")
	seedRecall(t, tc, "rc", "c")
	seedRecall(t, tc, "rc", "d")

	chatWith(t, dropIn(t, tc, "rc", "d"), false, api.Message{Role: "user", Content: "how deep are the rivers"})
	if last := fake.ChatRequests()[len(fake.ChatRequests())-1]; sentHolds(last.Messages, "9182") {
		t.Fatalf("a question on something else got the first turn: the window holds it, or recall ignores relevance")
	}
	chatWith(t, dropIn(t, tc, "rc", "c"), false, api.Message{Role: "user", Content: "what is my locker code"})
	last := fake.ChatRequests()[len(fake.ChatRequests())-1]
	if !sentHolds(last.Messages, "user: my locker code is 9182") || !sentHolds(last.Messages, memory.RecallHeader) {
		t.Errorf("the drop-in request to the model lacks the recalled first turn: %+v", last.Messages)
	}
}
