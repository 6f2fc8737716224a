package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// feedWait bounds how long a test waits for one change feed event.
const feedWait = 10 * time.Second

// sseEvent is one Server-Sent Events frame: kind "" with an id alone is a
// bare position (the resume token moved past dropped replica copies).
type sseEvent struct {
	kind, id string
	data     map[string]any
}

// feedStream is one open change feed.
type feedStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent // closed when the stream ends
	lastID string        // the id of the last frame read, as a browser keeps it
	// heartbeats counts the comment lines read.
	heartbeats atomic.Int64
}

// openFeed GETs url as an event stream and fails unless it answers 200
// text/event-stream.
func openFeed(t *testing.T, url string, header ...string) *feedStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream is long-lived
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s = %d %s, want 200 text/event-stream", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	f := &feedStream{resp: resp, cancel: cancel, events: make(chan sseEvent, 1000)}
	t.Cleanup(f.close)
	go func() {
		defer close(f.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data != "" {
					if err := json.Unmarshal([]byte(data), &ev.data); err != nil {
						t.Errorf("feed data %q: %v", data, err)
					}
				}
				if ev.id != "" || ev.kind != "" {
					f.events <- ev
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, ":"):
				f.heartbeats.Add(1)
			case strings.HasPrefix(line, "event: "):
				ev.kind = line[len("event: "):]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "data: "):
				data = line[len("data: "):]
			}
		}
	}()
	return f
}

func (f *feedStream) close() {
	f.cancel()
	f.resp.Body.Close()
}

// next is the next event with a kind (bare positions update lastID).
func (f *feedStream) next(t *testing.T) sseEvent {
	t.Helper()
	timeout := time.After(feedWait)
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				t.Fatal("change feed ended")
			}
			if ev.id == "" {
				t.Fatalf("feed event %+v without an id", ev)
			}
			f.lastID = ev.id
			if ev.kind != "" {
				return ev
			}
		case <-timeout:
			t.Fatalf("no change feed event within %s", feedWait)
		}
	}
}

// poll is the next event with a kind within d, if one comes.
func (f *feedStream) poll(d time.Duration) (sseEvent, bool) {
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				return sseEvent{}, false
			}
			if ev.id != "" {
				f.lastID = ev.id
			}
			if ev.kind != "" {
				return ev, true
			}
		case <-timeout:
			return sseEvent{}, false
		}
	}
}

// change is what a test expects of a put or delete event.
type change struct{ kind, id, etag string }

func (c change) String() string { return c.kind + " " + c.id + " " + c.etag }

// readUntil reads events until one for context id sentinel, and returns
// the others.
func (f *feedStream) readUntil(t *testing.T, sentinel string) []change {
	t.Helper()
	var got []change
	for range 1000 {
		ev := f.next(t)
		if ev.kind == "reset" { // explicit, allowed: the other replicas still carry every change
			t.Logf("feed reset: %v", ev.data)
			continue
		}
		id, _ := ev.data["id"].(string)
		etag, _ := ev.data["etag"].(string)
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ev.data["updated_at"])); err != nil && ev.kind != "reset" {
			t.Errorf("event %+v: updated_at: %v", ev, err)
		}
		if ev.kind == "delete" { // DELETE answers no ETag to compare with
			if etag == "" {
				t.Errorf("delete event %+v without an etag", ev)
			}
			etag = ""
		}
		if id == sentinel {
			return got
		}
		got = append(got, change{ev.kind, id, etag})
	}
	t.Fatalf("no event for %s among 1000", sentinel)
	return nil
}

func wantChanges(t *testing.T, got, want []change) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("feed events:\n got %v\nwant %v", got, want)
	}
}

// deleteContext deletes through base and returns the tombstone's ETag.
func deleteContext(t *testing.T, base, topic, id string) string {
	t.Helper()
	r := do(t, "DELETE", base+"/api/v1/topics/"+topic+"/contexts/"+id, nil)
	mustStatus(t, r, 204)
	return r.Header.Get("ETag")
}

// TestChangeFeedAcrossRouters: a client following a topic through router
// B sees every change made through router A once, in order per context
// (replicas = 3: one event per change, not per replica), and resumes after
// a disconnect from its Last-Event-ID without a gap or a repeat.
func TestChangeFeedAcrossRouters(t *testing.T) {
	c := startReplicated(t, 3, 3)
	a := c.url("")
	b := secondRouter(t, c)
	for _, name := range []string{"news", "other"} {
		mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": name}), 201)
	}
	f := openFeed(t, b+"/api/v1/topics/news/changes")

	var want []change
	put := func(id, text string) {
		want = append(want, change{"put", id, putContext(t, a, "news", id, map[string]any{"content": map[string]any{"text": text}})})
	}
	put("c1", "v1")
	put("c2", "v1")
	put("c1", "v2")
	putContext(t, a, "other", "c1", map[string]any{"content": map[string]any{"text": "not news"}})
	want = append(want, change{"delete", "c1", deleteContext(t, a, "news", "c1")})
	put("c3", "v1")
	putContext(t, a, "news", "end-1", map[string]any{"content": map[string]any{"text": "sentinel"}})
	got := f.readUntil(t, "end-1")
	// Shards interleave: compare per context, each in version order.
	wantChanges(t, perContext(got), perContext(want))
	if len(got) != len(want) {
		t.Errorf("%d events, want %d (one per change): %v", len(got), len(want), got)
	}

	// Disconnect, change things, resume from the last id seen.
	resume := f.lastID
	f.close()
	want = want[:0]
	put("c2", "v2")
	put("c4", "v1")
	want = append(want, change{"delete", "c3", deleteContext(t, a, "news", "c3")})
	putContext(t, a, "news", "end-2", map[string]any{"content": map[string]any{"text": "sentinel"}})
	g := openFeed(t, b+"/api/v1/topics/news/changes", "Last-Event-ID", resume)
	got = g.readUntil(t, "end-2")
	wantChanges(t, perContext(got), perContext(want))
	if len(got) != len(want) {
		t.Errorf("after resume: %d events, want %d: %v", len(got), len(want), got)
	}

	// ?since= is the same resume point; a token the feed never gave is 400.
	h := openFeed(t, a+"/api/v1/topics/news/changes?since="+resume)
	got = h.readUntil(t, "end-2")
	wantChanges(t, perContext(got), perContext(want))
	wantError(t, do(t, "GET", b+"/api/v1/topics/news/changes?since=not-a-token", nil), 400, "invalid_argument")

	if m := metric(t, b, "kvdb_feed_subscribers"); m != "1" {
		t.Errorf("kvdb_feed_subscribers on B = %s, want 1", m)
	}
	if m := metric(t, b, `kvdb_feed_events_total{kind="put"}`); m == "" || m == "0" {
		t.Errorf(`kvdb_feed_events_total{kind="put"} on B = %q, want > 0`, m)
	}
}

// perContext orders changes by context, keeping each context's order.
func perContext(cs []change) []change {
	out := make([]change, 0, len(cs))
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.id] {
			continue
		}
		seen[c.id] = true
		for _, d := range cs {
			if d.id == c.id {
				out = append(out, d)
			}
		}
	}
	// Sort context groups by id so both sides compare alike.
	groups := map[string][]change{}
	var ids []string
	for _, c := range out {
		if groups[c.id] == nil {
			ids = append(ids, c.id)
		}
		groups[c.id] = append(groups[c.id], c)
	}
	slices.Sort(ids)
	out = out[:0]
	for _, id := range ids {
		out = append(out, groups[id]...)
	}
	return out
}

// TestChangeFeedExpiredToken: a resume point the shards' logs no longer
// hold (a small -changes-retain) is 410 in the API's error shape, with a
// token to resume from that works.
func TestChangeFeedExpiredToken(t *testing.T) {
	c := startReplicated(t, 3, 3)
	for _, s := range c.shards { // restart each with a tiny retention
		s.proc.stopClean(t)
		s.proc = start(t, "storaged "+s.name, bin.storaged, "-db-location="+s.db, "-config-file="+c.configFile, "-shard="+s.name, "-changes-retain=5")
		waitHealthy(t, s.proc, s.url(""))
	}
	a := c.url("")
	mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": "kb"}), 201)
	f := openFeed(t, a+"/api/v1/topics/kb/changes")
	putContext(t, a, "kb", "first", map[string]any{"content": map[string]any{"text": "x"}})
	f.next(t)
	old := f.lastID
	f.close()
	for i := range 30 {
		putContext(t, a, "kb", fmt.Sprintf("n%d", i), map[string]any{"content": map[string]any{"text": "x"}})
	}
	r := do(t, "GET", a+"/api/v1/topics/kb/changes", nil, "Last-Event-ID", old)
	wantError(t, r, 410, "gone", "list the topic", "?since=")
	msg := r.Body["error"].(map[string]any)["message"].(string)
	heads := msg[strings.LastIndex(msg, "?since=")+len("?since="):]
	g := openFeed(t, a+"/api/v1/topics/kb/changes?since="+heads)
	putContext(t, a, "kb", "after", map[string]any{"content": map[string]any{"text": "x"}})
	if ev := g.next(t); ev.data["id"] != "after" {
		t.Errorf("first event after resuming from the 410's token = %+v, want a put of after", ev)
	}
}

// TestChangeFeedAuth: a reader key sees the feeds of its topics only; a
// router shutting down ends its open feeds instead of waiting on them.
func TestChangeFeedAuth(t *testing.T) {
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth.toml")
	keygen := func(name, role, topics string) string {
		out, err := exec.Command(bin.router, "keygen", "-auth-file="+authFile, "-name="+name, "-role="+role, "-topics="+topics).Output()
		if err != nil {
			t.Fatalf("router keygen -name=%s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	reader, writer := keygen("reader", "reader", "a*"), keygen("writer", "writer", "")
	p, base := startSingle(t, filepath.Join(dir, "kvdb.db"), "-auth-file="+authFile)
	for _, name := range []string{"alpha", "beta"} {
		mustStatus(t, do(t, "POST", base+"/api/v1/topics", map[string]any{"name": name}, "Authorization", "Bearer "+writer), 201)
	}
	wantError(t, do(t, "GET", base+"/api/v1/topics/beta/changes", nil, "Authorization", "Bearer "+reader), 403, "permission_denied")
	wantError(t, do(t, "GET", base+"/api/v1/topics/alpha/changes", nil), 401, "unauthenticated")
	f := openFeed(t, base+"/api/v1/topics/alpha/changes", "Authorization", "Bearer "+reader)
	etag := do(t, "PUT", base+"/api/v1/topics/alpha/contexts/x", `{"content":{"text":"hi"}}`, "Authorization", "Bearer "+writer).Header.Get("ETag")
	if ev := f.next(t); ev.kind != "put" || ev.data["id"] != "x" || ev.data["etag"] != etag {
		t.Errorf("alpha feed event = %+v, want put x %s", ev, etag)
	}

	// SIGTERM ends the open feed: the router exits 0 within its grace,
	// and the client sees the stream end.
	if code := p.stop(t); code != 0 {
		t.Errorf("router with an open feed exited %d on SIGTERM, want 0", code)
	}
	for deadline := time.After(feedWait); ; {
		select {
		case _, open := <-f.events:
			if !open {
				return
			}
		case <-deadline:
			t.Fatalf("feed still open %s after the router stopped", feedWait)
		}
	}
}

// TestChangeFeedSurvivesStoragedRestart: a feed open through router B
// while a storaged restarts misses nothing and repeats nothing (the change
// log persists and the stream resumes), and sends heartbeats meanwhile.
func TestChangeFeedSurvivesStoragedRestart(t *testing.T) {
	c := startReplicated(t, 3, 3, "-shard-timeout=1s")
	a := c.url("")
	b := secondRouter(t, c, "-shard-timeout=1s", "-feed-heartbeat=50ms")
	mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": "kb"}), 201)
	f := openFeed(t, b+"/api/v1/topics/kb/changes")
	var want []change
	put := func(id, text string) {
		want = append(want, change{"put", id, putContext(t, a, "kb", id, map[string]any{"content": map[string]any{"text": text}})})
	}
	put("r1", "one")
	s := c.shards[0]
	s.proc.stopClean(t)
	put("r2", "two (sh-1 down)")
	put("r1", "three (sh-1 down)")
	c.startShard(t, s)
	put("r3", "four")
	putContext(t, a, "kb", "end", map[string]any{"content": map[string]any{"text": "sentinel"}})
	got := f.readUntil(t, "end")
	wantChanges(t, perContext(got), perContext(want))
	if len(got) != len(want) {
		t.Errorf("%d events, want %d: %v", len(got), len(want), got)
	}
	if !eventually(feedWait, func() bool { return f.heartbeats.Load() >= 2 }) {
		t.Errorf("heartbeats = %d within %s at -feed-heartbeat=50ms, want 2 or more", f.heartbeats.Load(), feedWait)
	}
	// A restart is resumed, not reset: the reopened file continues the log
	// its followers saw (a new generation of it, the seqs going on).
	if m := metric(t, b, `kvdb_feed_events_total{kind="reset"}`); m != "0" {
		t.Errorf(`kvdb_feed_events_total{kind="reset"} = %s across a storaged restart, want 0`, m)
	}
}

// TestChangeFeedResetsOnReplacedFile: a storaged whose data file is
// replaced (its change log starts anew) is a gap: the open feed says so
// with an explicit reset event, then goes on with every change.
func TestChangeFeedResetsOnReplacedFile(t *testing.T) {
	c := startReplicated(t, 3, 3, "-shard-timeout=1s")
	a := c.url("")
	mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": "kb"}), 201)
	f := openFeed(t, a+"/api/v1/topics/kb/changes")
	putContext(t, a, "kb", "before", map[string]any{"content": map[string]any{"text": "x"}})
	if ev := f.next(t); ev.data["id"] != "before" {
		t.Fatalf("first event = %+v, want a put of before", ev)
	}
	s := c.shards[0]
	s.proc.stopClean(t)
	if err := os.Remove(s.db); err != nil {
		t.Fatal(err)
	}
	c.startShard(t, s)
	var reset bool
	for i := 0; !reset && i < 50; i++ { // a write wakes the new log; the feed reconnects with backoff
		putContext(t, a, "kb", fmt.Sprintf("after-%d", i), map[string]any{"content": map[string]any{"text": "x"}})
		for ev, ok := f.poll(200 * time.Millisecond); ok && !reset; ev, ok = f.poll(200 * time.Millisecond) {
			reset = ev.kind == "reset"
		}
	}
	if !reset {
		t.Fatal("no reset event after sh-1's data file was replaced")
	}
	if m := metric(t, a, `kvdb_feed_events_total{kind="reset"}`); m == "0" {
		t.Errorf(`kvdb_feed_events_total{kind="reset"} = %s after a reset was sent`, m)
	}
	putContext(t, a, "kb", "end", map[string]any{"content": map[string]any{"text": "sentinel"}})
	f.readUntil(t, "end")
}

// TestChangeFeedAuthAcrossRouters: a reader key whose patterns allow topic
// alpha only, following alpha through router B, sees every change made
// through router A to alpha and none of beta's, and B refuses it beta's
// feed in the API's error shape.
func TestChangeFeedAuthAcrossRouters(t *testing.T) {
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth.toml")
	keygen := func(name, role, topics string) string {
		out, err := exec.Command(bin.router, "keygen", "-auth-file="+authFile, "-name="+name, "-role="+role, "-topics="+topics).Output()
		if err != nil {
			t.Fatalf("router keygen -name=%s: %v", name, err)
		}
		return "Bearer " + strings.TrimSpace(string(out))
	}
	reader, writer := keygen("reader", "reader", "a*"), keygen("writer", "writer", "")
	c := startReplicated(t, 3, 3, "-auth-file="+authFile)
	a := c.url("")
	b := secondRouter(t, c, "-auth-file="+authFile)
	for _, name := range []string{"alpha", "beta"} {
		mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": name}, "Authorization", writer), 201)
	}
	wantError(t, do(t, "GET", b+"/api/v1/topics/beta/changes", nil, "Authorization", reader), 403, "permission_denied")
	f := openFeed(t, b+"/api/v1/topics/alpha/changes", "Authorization", reader)

	var want []change
	put := func(topic, id, text string) string {
		r := do(t, "PUT", a+"/api/v1/topics/"+topic+"/contexts/"+id, map[string]any{"content": map[string]any{"text": text}}, "Authorization", writer)
		if r.Status != 200 && r.Status != 201 {
			t.Fatalf("PUT %s/%s through A = %d %s, want 200 or 201", topic, id, r.Status, r.Raw)
		}
		return r.Header.Get("ETag")
	}
	want = append(want, change{"put", "x1", put("alpha", "x1", "v1")})
	put("beta", "y1", "not for the reader")
	want = append(want, change{"put", "x2", put("alpha", "x2", "v1")})
	put("beta", "y2", "not for the reader")
	put("beta", "y1", "v2")
	mustStatus(t, do(t, "DELETE", a+"/api/v1/topics/beta/contexts/y2", nil, "Authorization", writer), 204)
	want = append(want, change{"put", "x1", put("alpha", "x1", "v2")})
	put("alpha", "end", "sentinel")
	got := f.readUntil(t, "end")
	wantChanges(t, perContext(got), perContext(want))
	for _, ch := range got {
		if strings.HasPrefix(ch.id, "y") {
			t.Errorf("the alpha feed through B carried %v, a change of beta", ch)
		}
	}
	put("beta", "y3", "after the sentinel")
	if ev, ok := f.poll(500 * time.Millisecond); ok {
		t.Errorf("the alpha feed through B carried %+v after a write to beta only", ev)
	}
}

// TestChangeFeedNamesAppendedSeqs: the put event of an append names the
// seqs of the messages it stored, once (replicas = 3), whichever router
// appended; a PUT names none.
func TestChangeFeedNamesAppendedSeqs(t *testing.T) {
	c := startReplicated(t, 3, 3)
	a := c.url("")
	b := secondRouter(t, c)
	mustStatus(t, do(t, "POST", a+"/api/v1/topics", map[string]any{"name": "chats"}), 201)
	f := openFeed(t, b+"/api/v1/topics/chats/changes")
	appendTo := func(base string, n int) {
		var msgs []map[string]string
		for i := range n {
			msgs = append(msgs, map[string]string{"role": "user", "content": fmt.Sprint("m", i)})
		}
		mustStatus(t, do(t, "POST", base+"/api/v1/topics/chats/contexts/conv/messages", map[string]any{"messages": msgs}), 200)
	}
	appendTo(a, 2)
	appendTo(b, 1)
	appendTo(a, 3)
	putContext(t, a, "chats", "conv", map[string]any{"content": map[string]any{"text": "replaced"}})
	putContext(t, a, "chats", "end", map[string]any{"content": map[string]any{"text": "sentinel"}})
	var got []string
	for range 100 {
		ev := f.next(t)
		if ev.kind == "reset" {
			continue
		}
		if ev.data["id"] == "end" {
			break
		}
		got = append(got, fmt.Sprintf("%s %v %v..%v", ev.kind, ev.data["id"], ev.data["first_seq"], ev.data["last_seq"]))
	}
	want := []string{"put conv 1..2", "put conv 3..3", "put conv 4..6", "put conv <nil>..<nil>"}
	if !slices.Equal(got, want) {
		t.Errorf("feed events:\n got %v\nwant %v", got, want)
	}
}
