package router

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// liveMessages counts the live message records of topic/id on st.
func liveMessages(t testing.TB, st *storage.Store, topic, id string) int {
	t.Helper()
	n := 0
	var after []byte
	for {
		p, err := st.Scan(context.Background(), schema.BucketMessages, storage.ScanOptions{Prefix: schema.MessagePrefix(topic, id), After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("Scan(messages) = %v", err)
		}
		n += len(p.Records)
		if !p.More {
			return n
		}
		after = p.Records[len(p.Records)-1].Key
	}
}

// storedHeader returns what the shard st holds of the context record
// topic/id: whether it is a records-format header, and its length.
func storedHeader(t testing.TB, tc *testCluster, st *storage.Store, topic, id string) (records bool, last uint64) {
	t.Helper()
	rec, err := st.Get(context.Background(), schema.BucketContexts, []byte(schema.ContextKey(topic, id)))
	if err != nil {
		t.Fatalf("Get(context %s) = %v", id, err)
	}
	conv, err := tc.router.codec.ConversationOf(rec.Value)
	if err != nil {
		t.Fatalf("ConversationOf = %v", err)
	}
	if conv == nil {
		return false, 0
	}
	return true, conv.Last
}

func appendMsgs(t testing.TB, url string, header []string, msgs ...string) response {
	t.Helper()
	var ms []map[string]string
	for i, m := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		ms = append(ms, map[string]string{"role": role, "content": m})
	}
	return call(t, "POST", url, map[string]any{"messages": ms}, header...)
}

func contentsOf(msgs []schema.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Content
	}
	return out
}

// TestConversationRecords: appends store each message as a record of its
// own on every owner (the context keeps a header), number them, and every
// read (the document, last=N, pages) gives them back with their seqs.
func TestConversationRecords(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1 << 20})
	tc.createTopic(t, "chats")
	url := tc.URL + "/api/v1/topics/chats/contexts/c/messages"
	var want []string
	for i := range 5 {
		m := fmt.Sprint("turn ", i+1)
		r := must(t, appendMsgs(t, url, nil, m), 200, "append")
		want = append(want, m)
		if r.JSON["first_seq"] != float64(i+1) || r.JSON["last_seq"] != float64(i+1) || r.JSON["messages_count"] != float64(i+1) {
			t.Fatalf("append %d = %s, want seq %d", i+1, r.Raw, i+1)
		}
	}
	r := must(t, appendMsgs(t, url, nil, "turn 6", "turn 7"), 200, "append two")
	want = append(want, "turn 6", "turn 7")
	if r.JSON["first_seq"] != 6.0 || r.JSON["last_seq"] != 7.0 || r.JSON["messages_count"] != 7.0 || r.Header.Get("ETag") == "" {
		t.Fatalf("append of two = %s (ETag %q), want seqs 6..7 of 7", r.Raw, r.Header.Get("ETag"))
	}
	etag := r.Header.Get("ETag")
	for i, st := range tc.stores {
		waitFor(t, fmt.Sprintf("shard %d holds a records-format header at 7 and 7 message records", i), func() bool {
			records, last := storedHeader(t, tc, st, "chats", "c")
			return records && last == 7 && liveMessages(t, st, "chats", "c") == 7
		})
	}

	// The document, twice (the second from the cache), with every message.
	for range 2 {
		d := documentOf(t, tc, "chats", "c")
		if got := contentsOf(unseq(t, d.Content.Messages, 1)); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("GET context messages = %v, want %v", got, want)
		}
	}
	if got := contentsOf(messagesOf(t, tc, "chats", "c")); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("GET messages = %v, want %v", got, want)
	}
	r = must(t, call(t, "GET", url+"?last=3", nil), 200, "last=3")
	var page struct {
		Messages      []schema.Message `json:"messages"`
		MessagesCount int              `json:"messages_count"`
		NextCursor    *string          `json:"next_cursor"`
	}
	if err := json.Unmarshal(r.Raw, &page); err != nil {
		t.Fatal(err)
	}
	if got := contentsOf(unseq(t, page.Messages, 5)); strings.Join(got, "|") != "turn 5|turn 6|turn 7" || page.MessagesCount != 7 || r.Header.Get("ETag") != etag {
		t.Errorf("last=3 = %s (ETag %s), want turns 5..7 of 7 at %s", r.Raw, r.Header.Get("ETag"), etag)
	}

	// Pages of 3: 1..3, 4..6, 7, then the end.
	var paged []string
	cursor, pages := "", 0
	for {
		q := "?limit=3"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := must(t, call(t, "GET", url+q, nil), 200, "page")
		page.NextCursor = nil
		if err := json.Unmarshal(r.Raw, &page); err != nil {
			t.Fatal(err)
		}
		if page.NextCursor == nil {
			t.Fatalf("page %s has no next_cursor", r.Raw)
		}
		paged = append(paged, contentsOf(unseq(t, page.Messages, uint64(len(paged)+1)))...)
		pages++
		if cursor = *page.NextCursor; cursor == "" || pages > 5 {
			break
		}
	}
	if strings.Join(paged, "|") != strings.Join(want, "|") || pages != 3 {
		t.Errorf("paged in %d pages: %v, want 3 pages of %v", pages, paged, want)
	}

	for _, tt := range []struct{ q, what string }{
		{"?limit=0", "limit 0"}, {"?limit=1001", "limit over 1000"}, {"?limit=x", "limit not a number"},
		{"?cursor=%21%21", "cursor not base64"}, {"?cursor=" + schema.EncodeCursor("x"), "cursor not a seq"},
		{"?cursor=" + schema.EncodeCursor("0"), "cursor 0"}, {"?last=2&limit=2", "last with limit"}, {"?last=-1", "last negative"},
	} {
		if r := call(t, "GET", url+tt.q, nil); r.Status != 400 || r.errCode() != "invalid_argument" {
			t.Errorf("GET %s (%s) = %d %s, want 400 invalid_argument", tt.q, tt.what, r.Status, r.Raw)
		}
	}
	if r := call(t, "GET", tc.URL+"/api/v1/topics/chats/contexts/none/messages?limit=5", nil); r.Status != 404 {
		t.Errorf("page of a missing context = %d %s, want 404", r.Status, r.Raw)
	}
	// A page past the end is empty, and ends.
	r = must(t, call(t, "GET", url+"?cursor="+schema.EncodeCursor("7"), nil), 200, "page past the end")
	if err := json.Unmarshal(r.Raw, &page); err != nil || len(page.Messages) != 0 || page.NextCursor == nil || *page.NextCursor != "" {
		t.Errorf("page past the end = %s, want no messages and next_cursor \"\"", r.Raw)
	}
}

// TestConversationIdempotentAppend: a retried append with the same
// Idempotency-Key stores nothing and answers the first's seqs.
func TestConversationIdempotentAppend(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "chats")
	url := tc.URL + "/api/v1/topics/chats/contexts/c/messages"
	must(t, appendMsgs(t, url, nil, "one"), 200, "append")
	first := must(t, appendMsgs(t, url, []string{"Idempotency-Key", "k-1"}, "two", "three"), 200, "keyed append")
	if first.JSON["first_seq"] != 2.0 || first.JSON["last_seq"] != 3.0 || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("keyed append = %s %v, want seqs 2..3, not replayed", first.Raw, first.Header)
	}
	must(t, appendMsgs(t, url, nil, "four"), 200, "append between")
	again := must(t, appendMsgs(t, url, []string{"Idempotency-Key", "k-1"}, "two", "three"), 200, "retried append")
	if again.JSON["first_seq"] != 2.0 || again.JSON["last_seq"] != 3.0 || again.JSON["messages_count"] != 4.0 || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retried append = %s %v, want seqs 2..3 of 4, replayed", again.Raw, again.Header)
	}
	if got := contentsOf(messagesOf(t, tc, "chats", "c")); strings.Join(got, "|") != "one|two|three|four" {
		t.Errorf("messages after a retry = %v, want one|two|three|four", got)
	}
	if r := appendMsgs(t, url, []string{"Idempotency-Key", "k-1"}, "two"); r.Status != 412 || !strings.Contains(r.errMessage(), "Idempotency-Key") {
		t.Errorf("the key with another number of messages = %d %s, want 412 naming the key", r.Status, r.Raw)
	}
	if r := appendMsgs(t, url, []string{"Idempotency-Key", strings.Repeat("k", schema.MaxIdemKeyLen+1)}, "x"); r.Status != 400 {
		t.Errorf("a key too long = %d %s, want 400", r.Status, r.Raw)
	}
	// Another key stores; the newest MaxIdemKeys are remembered.
	for i := range schema.MaxIdemKeys + 1 {
		must(t, appendMsgs(t, url, []string{"Idempotency-Key", fmt.Sprint("n-", i)}, "x"), 200, "keyed append")
	}
	count := 4 + schema.MaxIdemKeys + 1
	r := must(t, appendMsgs(t, url, []string{"Idempotency-Key", fmt.Sprint("n-", schema.MaxIdemKeys)}, "x"), 200, "retry of the newest")
	if r.Header.Get("Idempotent-Replayed") != "true" || r.JSON["messages_count"] != float64(count) {
		t.Errorf("retry of the newest key = %s, want replayed at %d", r.Raw, count)
	}
	r = must(t, appendMsgs(t, url, []string{"Idempotency-Key", "k-1"}, "two", "three"), 200, "retry of a forgotten key")
	if r.Header.Get("Idempotent-Replayed") != "" || r.JSON["first_seq"] != float64(count+1) {
		t.Errorf("a key pushed out of the memory = %s, want stored anew at %d", r.Raw, count+1)
	}
}

// TestConversationReplacedAndDeleted: a PUT replaces the whole
// conversation and a DELETE removes it; their old message records are
// purged, and the next append starts where the new conversation ends.
func TestConversationReplacedAndDeleted(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1 << 20})
	tc.createTopic(t, "chats")
	url := tc.URL + "/api/v1/topics/chats/contexts/c/messages"
	for i := range 10 {
		must(t, appendMsgs(t, url, nil, fmt.Sprint("old ", i)), 200, "append")
	}
	documentOf(t, tc, "chats", "c") // cached
	tc.putContext(t, "chats", "c", map[string]any{"content": map[string]any{"messages": []map[string]string{{"role": "user", "content": "new 1"}, {"role": "assistant", "content": "new 2"}}}})
	if got := contentsOf(unseq(t, documentOf(t, tc, "chats", "c").Content.Messages, 1)); strings.Join(got, "|") != "new 1|new 2" {
		t.Errorf("after PUT the conversation is %v, want new 1|new 2", got)
	}
	for i, st := range tc.stores {
		waitFor(t, fmt.Sprintf("shard %d purges the replaced conversation's records", i), func() bool { return liveMessages(t, st, "chats", "c") == 0 })
	}
	r := must(t, appendMsgs(t, url, nil, "new 3"), 200, "append after PUT")
	if r.JSON["first_seq"] != 3.0 || r.JSON["messages_count"] != 3.0 {
		t.Errorf("append after PUT = %s, want seq 3 of 3", r.Raw)
	}
	if got := contentsOf(messagesOf(t, tc, "chats", "c")); strings.Join(got, "|") != "new 1|new 2|new 3" {
		t.Errorf("after PUT and append: %v", got)
	}

	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/chats/contexts/c", nil), 204, "DELETE")
	if r := call(t, "GET", url+"?last=5", nil); r.Status != 404 {
		t.Errorf("messages of a deleted context = %d %s, want 404", r.Status, r.Raw)
	}
	for i, st := range tc.stores {
		waitFor(t, fmt.Sprintf("shard %d purges the deleted conversation's records", i), func() bool { return liveMessages(t, st, "chats", "c") == 0 })
	}
	r = must(t, appendMsgs(t, url, nil, "again"), 200, "append after DELETE")
	if r.JSON["first_seq"] != 1.0 {
		t.Errorf("append after DELETE = %s, want seq 1", r.Raw)
	}
	if got := contentsOf(messagesOf(t, tc, "chats", "c")); strings.Join(got, "|") != "again" {
		t.Errorf("after DELETE and append: %v", got)
	}
}

// TestConversationConvertsInline: a context whose messages are inside it
// (as PUT writes, and as every context was stored before message records)
// is converted by its next append, also when it holds more messages than
// one transaction carries; one stored before messages had seqs reads back
// numbered.
func TestConversationConvertsInline(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1})
	tc.createTopic(t, "chats")
	for _, n := range []int{3, 2*txnRecordsForTest + 500} {
		id := fmt.Sprint("inline-", n)
		var msgs []map[string]string
		var want []string
		for i := range n {
			msgs = append(msgs, map[string]string{"role": "user", "content": fmt.Sprint("m", i)})
			want = append(want, fmt.Sprint("m", i))
		}
		tc.putContext(t, "chats", id, map[string]any{"content": map[string]any{"text": "notes", "messages": msgs}})
		for i, st := range tc.stores {
			if _, err := st.Get(context.Background(), schema.BucketContexts, []byte(schema.ContextKey("chats", id))); err != nil {
				continue // a replica behind: the Quorum that acknowledged is elsewhere
			}
			if records, _ := storedHeader(t, tc, st, "chats", id); records {
				t.Fatalf("PUT stored a records-format context on shard %d; want inline", i)
			}
		}
		r := must(t, appendMsgs(t, tc.URL+"/api/v1/topics/chats/contexts/"+id+"/messages", nil, "next"), 200, "append to inline")
		want = append(want, "next")
		if r.JSON["first_seq"] != float64(n+1) || r.JSON["messages_count"] != float64(n+1) {
			t.Errorf("append to an inline conversation of %d = %s, want seq %d", n, r.Raw, n+1)
		}
		for i, st := range tc.stores {
			// A Quorum acknowledged the append; the last replica follows.
			waitFor(t, fmt.Sprintf("shard %d holds the converted conversation of %d", i, n+1), func() bool {
				records, last := storedHeader(t, tc, st, "chats", id)
				return records && last == uint64(n+1) && liveMessages(t, st, "chats", id) == n+1
			})
		}
		d := documentOf(t, tc, "chats", id)
		if got := contentsOf(unseq(t, d.Content.Messages, 1)); strings.Join(got, "|") != strings.Join(want, "|") || d.Content.Text != "notes" {
			t.Errorf("converted conversation of %d reads back %d messages (text %q)", n, len(got), d.Content.Text)
		}
	}

	// Stored before seqs: no "seq" in the stored JSON.
	old, err := tc.router.codec.EncodeDocument(&schema.Document{
		Metadata: schema.Metadata{ID: "old", CreatedAt: "2024-01-01T00:00:00Z", UpdatedAt: "2024-01-01T00:00:00Z"},
		Content:  schema.Content{Messages: []schema.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range tc.stores {
		if _, err := st.Apply(context.Background(), schema.BucketContexts, []storage.Write{{Record: storage.Record{Key: []byte(schema.ContextKey("chats", "old")), Version: 1000, Value: old}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := contentsOf(unseq(t, documentOf(t, tc, "chats", "old").Content.Messages, 1)); strings.Join(got, "|") != "a|b" {
		t.Errorf("a context stored before seqs reads back %v", got)
	}
	if got := contentsOf(messagesOf(t, tc, "chats", "old")); strings.Join(got, "|") != "a|b" {
		t.Errorf("its messages read back %v", got)
	}
}

// txnRecordsForTest is docstore's transaction size: a conversion of more
// messages writes them ahead of the header.
const txnRecordsForTest = 2000

// TestConversationConcurrentAppends: appenders racing on one conversation
// through two routers all land, each message once, numbered without holes.
func TestConversationConcurrentAppends(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1 << 20})
	tc.createTopic(t, "chats")
	_, urlB := tc.startRouter(t, nil)
	const writers, each = 6, 15
	var wg sync.WaitGroup
	seqs := make(chan [2]float64, writers*each)
	for w := range writers {
		base := tc.URL
		if w%2 == 1 {
			base = urlB
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := appendMsgs(t, base+"/api/v1/topics/chats/contexts/c/messages", nil, fmt.Sprintf("w%d-%d", w, i))
				if r.Status != 200 {
					t.Errorf("append = %d %s", r.Status, r.Raw)
					return
				}
				seqs <- [2]float64{r.JSON["first_seq"].(float64), float64(w*100 + i)}
			}
		}()
	}
	wg.Wait()
	close(seqs)
	bySeq := map[float64]float64{}
	for s := range seqs {
		if _, dup := bySeq[s[0]]; dup {
			t.Errorf("seq %v given to two appends", s[0])
		}
		bySeq[s[0]] = s[1]
	}
	for _, base := range []string{tc.URL, urlB} {
		r := must(t, call(t, "GET", base+"/api/v1/topics/chats/contexts/c/messages", nil), 200, "GET messages")
		var out struct{ Messages []schema.Message }
		if err := json.Unmarshal(r.Raw, &out); err != nil {
			t.Fatal(err)
		}
		msgs := unseq(t, out.Messages, 1)
		if len(msgs) != writers*each {
			t.Fatalf("%d messages stored, want %d", len(msgs), writers*each)
		}
		seen := map[string]bool{}
		last := map[int]int{}
		for i, m := range msgs {
			var w, n int
			if _, err := fmt.Sscanf(m.Content, "w%d-%d", &w, &n); err != nil || seen[m.Content] {
				t.Errorf("message %q twice or malformed", m.Content)
			}
			seen[m.Content] = true
			if p, ok := last[w]; ok && n <= p {
				t.Errorf("writer %d's message %d after its %d", w, n, p)
			}
			last[w] = n
			if got := bySeq[float64(i+1)]; got != float64(w*100+n) {
				t.Errorf("seq %d holds %q, but its append was answered for %v", i+1, m.Content, got)
			}
		}
	}
}

// TestConversationExpires: a conversation past its TTL is gone at once,
// and the purge removes its message records too.
func TestConversationExpires(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{replicas: 3, cacheBytes: 1 << 20, expiryInterval: 100 * time.Millisecond})
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": "brief", "default_ttl_seconds": 1}), 201, "create topic")
	url := tc.URL + "/api/v1/topics/brief/contexts/c/messages"
	for i := range 3 {
		must(t, appendMsgs(t, url, nil, fmt.Sprint("m", i)), 200, "append")
	}
	waitFor(t, "the conversation expires", func() bool { return call(t, "GET", url+"?last=1", nil).Status == 404 })
	for i, st := range tc.stores {
		waitFor(t, fmt.Sprintf("shard %d purges the expired conversation's records", i), func() bool { return liveMessages(t, st, "brief", "c") == 0 })
	}
	r := must(t, appendMsgs(t, url, nil, "anew"), 200, "append after expiry")
	if r.JSON["first_seq"] != 1.0 {
		t.Errorf("append after expiry = %s, want seq 1", r.Raw)
	}
}
