package router

import (
	"fmt"
	"sync"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
)

func TestAppendMessages(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "chats")
	url := tc.URL + "/api/v1/topics/chats/contexts/conv-1/messages"

	r := must(t, call(t, "POST", url, `{"messages":[{"role":"user","content":"hello"}]}`), 200, "append to a missing context")
	if r.JSON["messages_count"] != 1.0 || r.Header.Get("ETag") == "" {
		t.Errorf("append = %s ETag %q, want messages_count 1 and an ETag", r.Raw, r.Header.Get("ETag"))
	}
	first := r.Header.Get("ETag")
	doc := documentOf(t, tc, "chats", "conv-1")
	if doc.Metadata.ID != "conv-1" || doc.Metadata.CreatedAt == "" || len(doc.Content.Messages) != 1 {
		t.Errorf("created context = %+v", doc)
	}

	r = must(t, call(t, "POST", url, `{"messages":[{"role":"assistant","content":"hi"},{"role":"user","content":"how are you"}]}`, "If-Match", first), 200, "append with If-Match")
	if r.JSON["messages_count"] != 3.0 {
		t.Errorf("messages_count = %v, want 3", r.JSON["messages_count"])
	}
	second := r.Header.Get("ETag")

	tests := []struct {
		name, body string
		header     []string
		status     int
		code       string
	}{
		{"stale If-Match", `{"messages":[{"role":"user","content":"x"}]}`, []string{"If-Match", first}, 412, "failed_precondition"},
		{"bad If-Match", `{"messages":[{"role":"user","content":"x"}]}`, []string{"If-Match", "nope"}, 400, "invalid_argument"},
		{"no messages", `{"messages":[]}`, nil, 400, "invalid_argument"},
		{"bad role", `{"messages":[{"role":"robot","content":"x"}]}`, nil, 400, "invalid_argument"},
		{"unknown field", `{"messages":[],"extra":1}`, nil, 400, "invalid_argument"},
		{"not JSON", `{`, nil, 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, "POST", url, tt.body, tt.header...)
			if r.Status != tt.status || r.errCode() != tt.code {
				t.Errorf("POST = %d %s, want %d %s", r.Status, r.Raw, tt.status, tt.code)
			}
		})
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/nope/contexts/c/messages", `{"messages":[{"role":"user","content":"x"}]}`); r.Status != 404 {
		t.Errorf("append in a missing topic = %d %s, want 404", r.Status, r.Raw)
	}
	if r := call(t, "POST", tc.URL+"/api/v1/topics/chats/contexts/fresh/messages", `{"messages":[{"role":"user","content":"x"}]}`, "If-Match", second); r.Status != 412 {
		t.Errorf("If-Match on a missing context = %d %s, want 412", r.Status, r.Raw)
	}

	got := messagesOf(t, tc, "chats", "conv-1")
	want := []schema.Message{{Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi"}, {Role: "user", Content: "how are you"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages = %v, want %v", got, want)
	}
	for _, tt := range []struct {
		last string
		want []schema.Message
	}{{"1", want[2:]}, {"2", want[1:]}, {"10", want}, {"0", []schema.Message{}}} {
		r := must(t, call(t, "GET", url+"?last="+tt.last, nil), 200, "GET last="+tt.last)
		if r.Header.Get("ETag") != second {
			t.Errorf("GET last=%s ETag = %q, want %q", tt.last, r.Header.Get("ETag"), second)
		}
		if g := fmt.Sprint(r.JSON["messages"]); len(r.JSON["messages"].([]any)) != len(tt.want) {
			t.Errorf("GET last=%s = %s, want %d messages", tt.last, g, len(tt.want))
		}
	}
	for _, bad := range []string{"-1", "x"} {
		if r := call(t, "GET", url+"?last="+bad, nil); r.Status != 400 {
			t.Errorf("GET last=%s = %d, want 400", bad, r.Status)
		}
	}
	if r := call(t, "GET", tc.URL+"/api/v1/topics/chats/contexts/none/messages", nil); r.Status != 404 {
		t.Errorf("GET messages of a missing context = %d, want 404", r.Status)
	}
	// A deleted context is created afresh.
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/chats/contexts/conv-1", nil), 204, "delete")
	r = must(t, call(t, "POST", url, `{"messages":[{"role":"user","content":"again"}]}`), 200, "append after delete")
	if r.JSON["messages_count"] != 1.0 {
		t.Errorf("messages_count after delete = %v, want 1", r.JSON["messages_count"])
	}
}

// TestConcurrentAppends has many clients append to one context at once:
// every message lands, and each client's messages keep their order.
func TestConcurrentAppends(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "chats")
	url := tc.URL + "/api/v1/topics/chats/contexts/busy/messages"
	const clients, each = 16, 5
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf(`{"messages":[{"role":"user","content":"c%d-%d"}]}`, c, i)
				if r := call(t, "POST", url, body); r.Status != 200 {
					t.Errorf("append c%d-%d = %d %s", c, i, r.Status, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	got := messagesOf(t, tc, "chats", "busy")
	if len(got) != clients*each {
		t.Fatalf("stored %d messages, want %d", len(got), clients*each)
	}
	next := make([]int, clients)
	for _, m := range got {
		var c, i int
		if _, err := fmt.Sscanf(m.Content, "c%d-%d", &c, &i); err != nil {
			t.Fatalf("stored message %q", m.Content)
		}
		if i != next[c] {
			t.Errorf("client %d: message %d stored where %d was due", c, i, next[c])
		}
		next[c] = i + 1
	}
}
