package router

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

type messageHit struct {
	ID      string         `json:"id"`
	Seq     uint64         `json:"seq"`
	Message schema.Message `json:"message"`
	Score   float64        `json:"score"`
}

func searchMessages(t testing.TB, tc *testCluster, topic string, body map[string]any) []messageHit {
	t.Helper()
	body["scope"] = "messages"
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/"+topic+"/search", body), 200, "message search")
	var out struct {
		Results []messageHit `json:"results"`
	}
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("search answer %s: %v", r.Raw, err)
	}
	return out.Results
}

// TestMessageSearch: appended messages are embedded (one call per append)
// and found one by one with their context and seq; a conversation
// replaced by a PUT or deleted is never returned.
func TestMessageSearch(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, nil)
	tc.createTopic(t, "chats")
	topics := map[string][]string{
		"a": {"the invoice number is 4711", "thanks, and the delivery date", "delivery is on monday", "what about the refund policy"},
		"b": {"my favourite colour is teal", "noted: teal", "the order number is 4711 too"},
	}
	for id, msgs := range topics {
		for _, m := range msgs {
			must(t, appendMsgs(t, tc.URL+"/api/v1/topics/chats/contexts/"+id+"/messages", nil, m), 200, "append")
		}
	}
	hits := searchMessages(t, tc, "chats", map[string]any{"query": "delivery is on monday", "k": 3, "mode": "vector"})
	if len(hits) == 0 || hits[0].ID != "a" || hits[0].Seq != 3 || hits[0].Message.Content != "delivery is on monday" || hits[0].Message.Seq != 3 || hits[0].Score < 0.99 {
		t.Fatalf("search for a message's own words = %+v, want a/3 first with score 1", hits)
	}
	// By words alone (BM25 over the messages): both that name 4711.
	kw := searchMessages(t, tc, "chats", map[string]any{"query": "4711", "k": 5, "mode": "keyword"})
	var got []string
	for _, h := range kw {
		got = append(got, fmt.Sprintf("%s/%d", h.ID, h.Seq))
	}
	if len(got) != 2 || !slices.Contains(got, "a/1") || !slices.Contains(got, "b/3") {
		t.Errorf("keyword search of messages for 4711 = %v, want a/1 and b/3", got)
	}
	// Hybrid: the message holding the words ranks first.
	if h := searchMessages(t, tc, "chats", map[string]any{"query": "refund policy", "k": 3}); len(h) == 0 || h[0].ID != "a" || h[0].Seq != 4 {
		t.Errorf("hybrid search of messages for refund policy = %+v, want a/4 first", h)
	}
	// One conversation only.
	hits = searchMessages(t, tc, "chats", map[string]any{"query": "number 4711", "k": 5, "context": "b"})
	if len(hits) == 0 {
		t.Fatal("no hit in conversation b")
	}
	for _, h := range hits {
		if h.ID != "b" {
			t.Errorf("a search narrowed to b returned %s/%d", h.ID, h.Seq)
		}
	}
	if hits[0].Seq != 3 {
		t.Errorf("best hit in b = %+v, want seq 3", hits[0])
	}
	// Tags filter by role.
	for _, h := range searchMessages(t, tc, "chats", map[string]any{"query": "teal", "k": 10, "tags": []string{"assistant"}}) {
		if h.Message.Role != "assistant" {
			t.Errorf("a search for assistant messages returned %+v", h)
		}
	}

	// Replaced and deleted conversations are not found.
	tc.putContext(t, "chats", "a", map[string]any{"content": map[string]any{"messages": []map[string]string{{"role": "user", "content": "something else entirely"}}}})
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/chats/contexts/b", nil), 204, "DELETE")
	for _, q := range []string{"delivery is on monday", "teal", "number 4711"} {
		for _, h := range searchMessages(t, tc, "chats", map[string]any{"query": q, "k": 10}) {
			t.Errorf("search for %q after the PUT and DELETE returned %s/%d %q", q, h.ID, h.Seq, h.Message.Content)
		}
	}
	// And their vectors go with their records.
	for i, st := range tc.stores {
		for _, id := range []string{"a", "b"} {
			waitFor(t, fmt.Sprintf("shard %d purges %s's message vectors", i, id), func() bool {
				p, err := st.Scan(t.Context(), schema.BucketMessageVectors, storage.ScanOptions{Prefix: schema.MessagePrefix("chats", id), Limit: 100})
				return err == nil && len(p.Records) == 0
			})
		}
	}

	for _, bad := range []map[string]any{
		{"query": "x", "scope": "sentences"},
		{"query": "x", "context": "a"},
		{"query": "x", "scope": "messages", "context": "bad id!"},
	} {
		if r := call(t, "POST", tc.URL+"/api/v1/topics/chats/search", bad); r.Status != 400 || r.errCode() != "invalid_argument" || !strings.Contains(r.errMessage(), "\"") {
			t.Errorf("search %v = %d %s, want 400 invalid_argument", bad, r.Status, r.Raw)
		}
	}
}
