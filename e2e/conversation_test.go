package e2e

// Issue 14, end to end: conversations stored as message records, through
// real storaged and router processes. Appends under faults through two
// routers, paging a long history, contexts written before message records
// (a BoltDB file made by commit 53b2d90), and a backup of long
// conversations restored into a cluster of another shape.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/router/placement"
	"github.com/go-kvdb/go-kvdb/storage"
)

// ---- API shapes and helpers ----

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	Seq     uint64 `json:"seq"`
}

type messagesPage struct {
	Messages      []message `json:"messages"`
	MessagesCount uint64    `json:"messages_count"`
	NextCursor    *string   `json:"next_cursor"`
}

type appendAnswer struct {
	MessagesCount uint64 `json:"messages_count"`
	FirstSeq      uint64 `json:"first_seq"`
	LastSeq       uint64 `json:"last_seq"`
}

func msgsURL(base, topicName, id string) string {
	return base + "/api/v1/topics/" + topicName + "/contexts/" + id + "/messages"
}

// turns are n messages "prefix i" for i from from, roles user and
// assistant in turn.
func turns(prefix string, from, n int) []message {
	out := make([]message, n)
	for i := range out {
		role := "user"
		if (from+i)%2 == 0 {
			role = "assistant"
		}
		out[i] = message{Role: role, Content: fmt.Sprintf("%s %d", prefix, from+i)}
	}
	return out
}

// appendBody is the body of POST …/messages; the seqs are left out.
func appendBody(msgs []message) []byte {
	type in struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	body := struct {
		Messages []in `json:"messages"`
	}{}
	for _, m := range msgs {
		body.Messages = append(body.Messages, in{m.Role, m.Content})
	}
	b, _ := json.Marshal(body)
	return b
}

// appendMessages POSTs msgs and fails the test unless it answers 200
// with the seqs following want (the conversation's length before).
func appendMessages(t testing.TB, base, topicName, id string, before int, msgs []message, header ...string) appendAnswer {
	t.Helper()
	r := do(t, "POST", msgsURL(base, topicName, id), appendBody(msgs), header...)
	mustStatus(t, r, http.StatusOK)
	a := decode[appendAnswer](t, r)
	if want := (appendAnswer{uint64(before + len(msgs)), uint64(before + 1), uint64(before + len(msgs))}); a != want {
		t.Fatalf("%s = %+v, want %+v", r.Req, a, want)
	}
	return a
}

// withSeqs numbers msgs from 1.
func withSeqs(msgs []message) []message {
	out := slices.Clone(msgs)
	for i := range out {
		out[i].Seq = uint64(i + 1)
	}
	return out
}

// allMessages is GET …/messages (the whole conversation), checked to be
// numbered 1..n and to count what it holds.
func allMessages(t testing.TB, base, topicName, id string, header ...string) []message {
	t.Helper()
	r := do(t, "GET", msgsURL(base, topicName, id), nil, header...)
	mustStatus(t, r, http.StatusOK)
	p := decode[messagesPage](t, r)
	if p.MessagesCount != uint64(len(p.Messages)) {
		t.Errorf("%s: messages_count %d, %d messages", r.Req, p.MessagesCount, len(p.Messages))
	}
	wantNumbered(t, r.Req, p.Messages, 1)
	return p.Messages
}

// pagedMessages pages through a conversation with limit, following
// next_cursor, and returns every page's messages in order.
func pagedMessages(t testing.TB, base, topicName, id string, limit int) []message {
	t.Helper()
	var all []message
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("paging %s/%s did not end after 10000 pages", topicName, id)
		}
		u := fmt.Sprintf("%s?limit=%d", msgsURL(base, topicName, id), limit)
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		r := do(t, "GET", u, nil)
		mustStatus(t, r, http.StatusOK)
		p := decode[messagesPage](t, r)
		if len(p.Messages) > limit {
			t.Fatalf("%s returned %d messages, want at most %d", r.Req, len(p.Messages), limit)
		}
		if p.NextCursor == nil {
			t.Fatalf("%s: no next_cursor in %s", r.Req, r.Raw)
		}
		all = append(all, p.Messages...)
		if *p.NextCursor == "" {
			if p.MessagesCount != uint64(len(all)) {
				t.Errorf("%s: messages_count %d, pages held %d", r.Req, p.MessagesCount, len(all))
			}
			return all
		}
		if len(p.Messages) < limit {
			t.Errorf("%s: a page of %d before the end, want %d", r.Req, len(p.Messages), limit)
		}
		cursor = *p.NextCursor
	}
}

// lastMessages is GET …/messages?last=n.
func lastMessages(t testing.TB, base, topicName, id string, n int) []message {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("%s?last=%d", msgsURL(base, topicName, id), n), nil)
	mustStatus(t, r, http.StatusOK)
	return decode[messagesPage](t, r).Messages
}

// wantNumbered checks that msgs carry the seqs from, from+1, ….
func wantNumbered(t testing.TB, what string, msgs []message, from uint64) {
	t.Helper()
	for i, m := range msgs {
		if m.Seq != from+uint64(i) {
			t.Errorf("%s: message %d (%q) has seq %d, want %d", what, i, m.Content, m.Seq, from+uint64(i))
			return
		}
	}
}

// wantMessages reports the first difference between got and want.
func wantMessages(t testing.TB, what string, got, want []message) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: message %d = %+v, want %+v", what, i, got[i], want[i])
			return
		}
	}
}

// ---- 1. concurrent appends through two routers under faults ----

// appendLog is one writer's appends: seq[n] is the seq its n-th message
// was acknowledged at, 0 when no attempt was acknowledged.
type appendLog struct {
	seq      []uint64
	contents []string
}

// postKeyed POSTs one message with an Idempotency-Key, retrying with the
// same key on a transport error or a 503, at most tries times. It returns
// the answer and whether it was acknowledged; any other answer fails the
// test.
func postKeyed(t testing.TB, url, key string, body []byte, tries int, retried *atomic.Int64) (appendAnswer, bool) {
	for try := range tries {
		if try > 0 {
			retried.Add(1)
			time.Sleep(time.Duration(min(try, 10)) * 50 * time.Millisecond)
		}
		req, err := http.NewRequest("POST", url, bytes.NewReader(body))
		if err != nil {
			t.Errorf("POST %s: %v", url, err)
			return appendAnswer{}, false
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := loadClient.Do(req)
		if err != nil {
			continue
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil || resp.StatusCode == http.StatusServiceUnavailable:
			continue
		case resp.StatusCode != http.StatusOK:
			t.Errorf("POST %s (key %s) = %d %s, want 200 or 503", url, key, resp.StatusCode, raw)
			return appendAnswer{}, false
		}
		var a appendAnswer
		if err := json.Unmarshal(raw, &a); err != nil || a.FirstSeq == 0 || a.LastSeq != a.FirstSeq {
			t.Errorf("POST %s (key %s) = %s, want one message's seqs", url, key, raw)
			return appendAnswer{}, false
		}
		return a, true
	}
	return appendAnswer{}, false
}

// waitUntil polls cond every 10 ms for up to d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// primaryOf is the shard that decides the conditional writes of ring key
// pk in c (its first owner), as every router places it.
func primaryOf(t testing.TB, c *cluster, pk string) *shard {
	t.Helper()
	var nodes []*placement.Node
	for _, s := range c.shards {
		nodes = append(nodes, placement.NewNode(s.name, s.url(""), storage.NewClient(s.name, s.url(""), nil)))
	}
	shape, err := placement.NewShape(nodes, len(nodes))
	if err != nil {
		t.Fatalf("NewShape: %v", err)
	}
	name := placement.NewTopology(1, placement.StateStable, shape, placement.Shape{}, nil).Owners(pk).Union[0].Name
	for _, s := range c.shards {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no shard %s", name)
	return nil
}

// TestConversationAppendsUnderFaults: six writers append to one
// conversation through two routers over three replicas while a replica
// that is not the conversation's primary is SIGKILLed and restarted on its
// file, and then the primary is SIGSTOPped and resumed (appends answer
// 503 meanwhile, and the writers retry with the same Idempotency-Key).
// Every acknowledged message is there exactly once at the seq it was
// acknowledged at, seqs 1..N without holes, each writer's in its order,
// the same through both routers, and the same after every process has
// been restarted.
func TestConversationAppendsUnderFaults(t *testing.T) {
	t.Parallel()
	c := startReplicated(t, 3, 3, "-shard-timeout=1s")
	a := c.url("")
	bProc, b := startSecondRouter(t, c, "-shard-timeout=1s")
	createTopic(t, a, "conv")
	const (
		writers = 6
		perW    = 40
		gateAt  = 25 // each writer's appends from this one wait for the SIGSTOP
		tries   = 30
	)
	logs := make([]appendLog, writers)
	var acked, retried, given atomic.Int64
	stopped := make(chan struct{}) // closed once sh-3 is SIGSTOPped (or the faults gave up)
	var closeStopped sync.Once
	defer closeStopped.Do(func() { close(stopped) })

	var wg sync.WaitGroup
	defer wg.Wait() // if the test stops early: the writers log to t
	for w := range writers {
		base := a
		if w%2 == 1 {
			base = b
		}
		l := &logs[w]
		l.seq = make([]uint64, perW)
		wg.Go(func() {
			for n := range perW {
				if n == gateAt {
					select {
					case <-stopped:
					case <-time.After(clusterTimeout):
					}
				}
				content := fmt.Sprintf("writer %d message %02d", w, n)
				l.contents = append(l.contents, content)
				body := appendBody([]message{{Role: "user", Content: content}})
				ans, ok := postKeyed(t, msgsURL(base, "conv", "c"), fmt.Sprintf("w%d-%d", w, n), body, tries, &retried)
				if !ok {
					given.Add(1)
					continue
				}
				l.seq[n] = ans.FirstSeq
				acked.Add(1)
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	progress := func(n int64) {
		waitUntil(clusterTimeout, func() bool {
			select {
			case <-writersDone:
				return true
			default:
				return acked.Load() >= n
			}
		})
	}

	// The faults, one after the other (with replicas = 3 a quorum needs
	// two): SIGKILL sh-2 after 40 acknowledged appends, restart it on its
	// file after 80 more; once it is up, SIGSTOP sh-3 and let the writers
	// past their gate; SIGCONT after 45 more (or 10 s).
	hung := primaryOf(t, c, "conv/c")
	var killed *shard
	for _, s := range c.shards {
		if s != hung && killed == nil {
			killed = s
		}
	}
	progress(40)
	killed.proc.kill(t)
	killedAt := acked.Load()
	progress(min(killedAt+80, writers*gateAt)) // the gate holds the writers at writers*gateAt
	c.startShard(t, killed)
	restartedAt := acked.Load()
	waitShardState(t, c, killed.name, "up")
	hung.proc.signal(t, syscall.SIGSTOP)
	// Before the process's own cleanup (cleanups run last registered
	// first): a stopped process does not act on SIGTERM.
	t.Cleanup(func() { hung.proc.cmd.Process.Signal(syscall.SIGCONT) })
	stoppedAt := acked.Load()
	closeStopped.Do(func() { close(stopped) })
	// The primary decides every append: they stall (503, retried) until
	// it is back. A few decided just before the stop may still land.
	time.Sleep(2 * time.Second)
	hung.proc.signal(t, syscall.SIGCONT)
	contAt := acked.Load()
	<-writersDone
	waitShardState(t, c, hung.name, "up")
	t.Logf("SIGKILL %s after %d acknowledged appends, restarted after %d; SIGSTOP %s after %d, SIGCONT after %d; %d acknowledged in all, %d given up, %d retries",
		killed.name, killedAt, restartedAt, hung.name, stoppedAt, contAt, acked.Load(), given.Load(), retried.Load())
	if acked.Load() == contAt {
		t.Errorf("no append was acknowledged after %s, the primary, was resumed", hung.name)
	}
	if t.Failed() {
		t.FailNow()
	}

	// check compares a conversation read back with the writers' logs.
	check := func(what string, got []message) {
		t.Helper()
		wantNumbered(t, what, got, 1)
		at := map[string]uint64{} // content → seq
		for _, m := range got {
			if _, dup := at[m.Content]; dup {
				t.Errorf("%s: %q stored twice", what, m.Content)
			}
			at[m.Content] = m.Seq
		}
		known := 0
		for w, l := range logs {
			var prev uint64
			for n, content := range l.contents {
				seq, present := at[content]
				if s := l.seq[n]; s != 0 && s != seq {
					holder := "nothing"
					if s <= uint64(len(got)) {
						holder = fmt.Sprintf("%q", got[s-1].Content)
					}
					t.Errorf("%s: %q acknowledged at seq %d, read at %d (present %v); seq %d holds %s", what, content, s, seq, present, s, holder)
				}
				if !present {
					continue
				}
				known++
				if seq <= prev {
					t.Errorf("%s: writer %d's message %d at seq %d, after its earlier one at %d", what, w, n, seq, prev)
				}
				prev = seq
			}
		}
		if known != len(got) {
			t.Errorf("%s: %d messages, %d of them written by the writers", what, len(got), known)
		}
	}
	// An append that failed mid-fault may have landed on one replica
	// only: a quorum read then finds its header but not its message, and
	// answers 503 (retry) until repair has copied it (the shard that came
	// back is repaired on its return).
	if !eventually(clusterTimeout, func() bool {
		return do(t, "GET", msgsURL(a, "conv", "c"), nil, "Cache-Control", "no-cache").Status == http.StatusOK
	}) {
		t.Fatalf("messages after the faults still not readable after %s", clusterTimeout)
	}
	fromA := allMessages(t, a, "conv", "c", "Cache-Control", "no-cache")
	check("through A", fromA)
	if int64(len(fromA)) < acked.Load() {
		t.Errorf("through A: %d messages, %d acknowledged", len(fromA), acked.Load())
	}
	wantMessages(t, "through B, no-cache", allMessages(t, b, "conv", "c", "Cache-Control", "no-cache"), fromA)
	wantMessages(t, "through B, paged by 7", pagedMessages(t, b, "conv", "c", 7), fromA)
	if !eventually(coherenceBound, func() bool { return reflect.DeepEqual(allMessages(t, b, "conv", "c"), fromA) }) {
		t.Errorf("GET through B (cache allowed) not equal to A's no-cache read within %s", coherenceBound)
	}

	// A retry of the newest append with its key stores nothing.
	last := fromA[len(fromA)-1]
	var w, n int
	fmt.Sscanf(last.Content, "writer %d message %d", &w, &n)
	r := do(t, "POST", msgsURL(b, "conv", "c"), appendBody([]message{last}), "Idempotency-Key", fmt.Sprintf("w%d-%d", w, n))
	if wantStatus(t, r, http.StatusOK) {
		if got := decode[appendAnswer](t, r); got.FirstSeq != last.Seq || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("%s (a retry of seq %d) = %+v, Idempotent-Replayed %q; want seq %d replayed", r.Req, last.Seq, got, r.Header.Get("Idempotent-Replayed"), last.Seq)
		}
	}

	// Restart every process on its files and ports.
	bProc.stopClean(t)
	c.stop(t)
	c.start(t)
	b = secondRouter(t, c)
	wantMessages(t, "through A after the restart", allMessages(t, a, "conv", "c"), fromA)
	wantMessages(t, "through B after the restart", allMessages(t, b, "conv", "c"), fromA)
	wantMessages(t, "through A after the restart, paged by 50", pagedMessages(t, a, "conv", "c", 50), fromA)
}

// ---- 2. paging a long conversation ----

// TestConversationPaging5000: 5,000 messages appended 250 at a time read
// back once each, in order, through pages of 97 following next_cursor;
// ?last=20 is the newest 20.
func TestConversationPaging5000(t *testing.T) {
	t.Parallel()
	c := startReplicated(t, 2, 2)
	base := c.url("")
	createTopic(t, base, "long")
	const total, batch = 5000, 250
	want := withSeqs(turns("paged message", 1, total))
	for i := 0; i < total; i += batch {
		appendMessages(t, base, "long", "p", i, want[i:i+batch])
	}
	wantMessages(t, "paged by 97", pagedMessages(t, base, "long", "p", 97), want)
	wantMessages(t, "?last=20", lastMessages(t, base, "long", "p", 20), want[total-20:])
	wantMessages(t, "GET …/messages", allMessages(t, base, "long", "p"), want)
}

// ---- 3. contexts written before message records ----

// gunzipFile reads a gzipped file.
func gunzipFile(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// withoutSeqs decodes a context document, checks its messages carry the
// seqs 1..n and returns it with the seqs taken out, to compare with an
// answer of the old code.
func withoutSeqs(t testing.TB, what string, raw []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, raw)
	}
	msgs, _ := field(doc, "content", "messages").([]any)
	for i, m := range msgs {
		mm, _ := m.(map[string]any)
		if seq, _ := mm["seq"].(float64); seq != float64(i+1) {
			t.Errorf("%s: message %d has seq %v, want %d", what, i, mm["seq"], i+1)
			return doc
		}
		delete(mm, "seq")
	}
	return doc
}

// TestConversationOldFormat starts today's router on a BoltDB file the
// code before message records wrote (testdata/oldformat, see its README):
// every context reads back as that code answered, its messages now
// numbered; an append converts a conversation (3 messages, and 2,500:
// more than one conversion transaction), after which the whole history
// reads back through GET context, GET …/messages and paging, before and
// after a restart.
func TestConversationOldFormat(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "oldformat")
	raw, err := os.ReadFile(filepath.Join(dir, "kvdb.db"))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "kvdb.db")
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	old := map[string][]byte{}
	for _, id := range []string{"short", "long", "plain"} {
		old[id] = gunzipFile(t, filepath.Join(dir, id+".json.gz"))
	}
	oldMessages := func(id string) []message {
		var d struct {
			Content struct{ Messages []message } `json:"content"`
		}
		if err := json.Unmarshal(old[id], &d); err != nil {
			t.Fatal(err)
		}
		return withSeqs(d.Content.Messages)
	}
	want := map[string][]message{"short": oldMessages("short"), "long": oldMessages("long")}
	if len(want["short"]) != 3 || len(want["long"]) != 2500 {
		t.Fatalf("fixture holds %d and %d messages, want 3 and 2500", len(want["short"]), len(want["long"]))
	}

	p, base := startSingle(t, db)
	ctxPath := func(id string) string { return base + "/api/v1/topics/old/contexts/" + id }
	for id, before := range old {
		r := do(t, "GET", ctxPath(id), nil)
		mustStatus(t, r, http.StatusOK)
		var oldDoc map[string]any
		json.Unmarshal(before, &oldDoc)
		if got := withoutSeqs(t, r.Req, r.Raw); !reflect.DeepEqual(got, oldDoc) {
			t.Errorf("%s = %s\nwant (as commit 53b2d90 answered, seqs aside) %s", r.Req, r.Raw, before)
		}
	}
	for id, msgs := range want {
		wantMessages(t, id+" before any append: GET …/messages", allMessages(t, base, "old", id), msgs)
		wantMessages(t, id+" before any append: ?last=5", lastMessages(t, base, "old", id, 5), msgs[max(0, len(msgs)-5):])
	}

	// checkAll reads each conversation every way and plain unchanged.
	checkAll := func(when string) {
		t.Helper()
		for id, msgs := range want {
			r := do(t, "GET", ctxPath(id), nil)
			mustStatus(t, r, http.StatusOK)
			var d struct {
				Metadata metadata `json:"metadata"`
				Content  struct {
					Text     string    `json:"text"`
					Messages []message `json:"messages"`
				} `json:"content"`
			}
			if err := json.Unmarshal(r.Raw, &d); err != nil {
				t.Fatalf("%s: %v", r.Req, err)
			}
			if d.Content.Text != "a "+id+" chat" || d.Metadata.Model != "llama2" || !slices.Equal(d.Metadata.Tags, []string{"chat", id}) {
				t.Errorf("%s %s: text %q, model %q, tags %v; want the fixture's", when, r.Req, d.Content.Text, d.Metadata.Model, d.Metadata.Tags)
			}
			wantMessages(t, when+" "+r.Req, d.Content.Messages, msgs)
			wantMessages(t, when+" "+id+": GET …/messages", allMessages(t, base, "old", id), msgs)
			wantMessages(t, when+" "+id+": paged by 97", pagedMessages(t, base, "old", id, 97), msgs)
			wantMessages(t, when+" "+id+": ?last=3", lastMessages(t, base, "old", id, 3), msgs[len(msgs)-3:])
		}
		r := do(t, "GET", ctxPath("plain"), nil)
		if wantStatus(t, r, http.StatusOK) && !bytes.Equal(r.Raw, old["plain"]) {
			t.Errorf("%s %s = %s, want %s", when, r.Req, r.Raw, old["plain"])
		}
	}

	// The first append converts each conversation.
	for id, msgs := range want {
		next := withSeqs(append(slices.Clone(msgs), turns("new turn", len(msgs)+1, 1)...))
		appendMessages(t, base, "old", id, len(msgs), next[len(msgs):], "Idempotency-Key", "convert-"+id)
		want[id] = next
	}
	checkAll("after the converting append")

	p.stopClean(t)
	p, base = startSingle(t, db)
	checkAll("after a restart")
	for id, msgs := range want {
		next := withSeqs(append(slices.Clone(msgs), turns("after restart", len(msgs)+1, 2)...))
		appendMessages(t, base, "old", id, len(msgs), next[len(msgs):])
		want[id] = next
	}
	checkAll("after a restart and an append")
	p.stopClean(t)
}

// ---- 4. backup and restore into another shape ----

// TestConversationBackupRestoreReshape: a backup of three storaged with
// replicas = 2 holding long record conversations, a converted inline one,
// an inline one never appended to and a text context, restored into two
// storaged with one replica, reads back equal: every document, every
// conversation's messages, and an append continues the numbering.
func TestConversationBackupRestoreReshape(t *testing.T) {
	t.Parallel()
	src := startReplicated(t, 3, 2)
	from := src.url("")
	createTopic(t, from, "chats")
	const long, batch = 1200, 300
	want := map[string][]message{}
	for i := range 3 {
		id := fmt.Sprintf("long-%d", i)
		msgs := withSeqs(turns(id+" turn", 1, long))
		for j := 0; j < long; j += batch {
			appendMessages(t, from, "chats", id, j, msgs[j:j+batch])
		}
		want[id] = msgs
	}
	inline := withSeqs(turns("inline turn", 1, 40))
	putContext(t, from, "chats", "converted", map[string]any{"content": map[string]any{"text": "was inline", "messages": inline}})
	putContext(t, from, "chats", "inline", map[string]any{"content": map[string]any{"text": "still inline", "messages": inline}})
	putContext(t, from, "chats", "note", map[string]any{"content": map[string]any{"text": "no messages"}})
	want["inline"] = inline
	want["converted"] = withSeqs(append(slices.Clone(inline), turns("appended", 41, 1)...))
	appendMessages(t, from, "chats", "converted", 40, want["converted"][40:])

	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	cl, err := client.New(from)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	m, err := cl.Backup(ctx, &archive, nil)
	if err != nil {
		t.Fatalf("Backup = %v", err)
	}
	inBackup := int64(0)
	for _, s := range m.Sections {
		inBackup += s.Buckets["messages"]
	}
	if wantRecs := int64(3*long + 41); inBackup < wantRecs {
		t.Errorf("backup holds %d message records over its sections, want at least %d", inBackup, wantRecs)
	}

	dst := startCluster(t, 2)
	to := dst.url("")
	cl2, err := client.New(to)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := cl2.Restore(ctx, bytes.NewReader(archive.Bytes()), client.RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore = %v", err)
	}
	// Each record once in the new shape: the second copy of the source's
	// two is skipped as already held.
	if got, wantRecs := rep.Buckets["messages"], int64(3*long+41); got == nil || got.Applied != wantRecs {
		t.Errorf("restore applied %+v message records, want %d", got, wantRecs)
	}
	t.Logf("backup: %d bytes, %d records (%d message records over the sections); restore applied %d, skipped %d",
		archive.Len(), m.Records, inBackup, rep.Applied, rep.Skipped)

	if got, wantIDs := ids(listAllContexts(t, to, "chats", 100, "")), ids(listAllContexts(t, from, "chats", 100, "")); !slices.Equal(got, wantIDs) {
		t.Errorf("contexts after restore = %v, want %v", got, wantIDs)
	}
	for _, id := range []string{"long-0", "long-1", "long-2", "converted", "inline", "note"} {
		a := do(t, "GET", from+"/api/v1/topics/chats/contexts/"+id, nil)
		b := do(t, "GET", to+"/api/v1/topics/chats/contexts/"+id, nil)
		if a.Status != 200 || b.Status != 200 || !bytes.Equal(a.Raw, b.Raw) || a.Header.Get("ETag") != b.Header.Get("ETag") {
			t.Errorf("GET %s after restore = %d %s %.200s…, want %d %s %.200s…", id, b.Status, b.Header.Get("ETag"), b.Raw, a.Status, a.Header.Get("ETag"), a.Raw)
		}
	}
	for id, msgs := range want {
		wantMessages(t, id+" restored: GET …/messages", allMessages(t, to, "chats", id), msgs)
		wantMessages(t, id+" restored: paged by 250", pagedMessages(t, to, "chats", id, 250), msgs)
	}
	// The restored headers and records agree: appends continue.
	for id, msgs := range want {
		next := withSeqs(append(slices.Clone(msgs), turns("after restore", len(msgs)+1, 1)...))
		appendMessages(t, to, "chats", id, len(msgs), next[len(msgs):])
		wantMessages(t, id+" restored and appended: ?last=2", lastMessages(t, to, "chats", id, 2), next[len(next)-2:])
	}
}
