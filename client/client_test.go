package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/client"
)

func newClient(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(kvdbURL)
	if err != nil {
		t.Fatalf("client.New(%q) = %v", kvdbURL, err)
	}
	return c
}

func TestErrorsMatchCodes(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	// The server is shared by the package's tests (and by -count runs).
	t.Cleanup(func() { c.DeleteTopic(context.Background(), "errs") })
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "errs"}); err != nil {
		t.Fatal(err)
	}
	_, dupErr := c.CreateTopic(ctx, client.Topic{Name: "errs"})
	_, badErr := c.CreateTopic(ctx, client.Topic{Name: "-bad"})
	_, missErr := c.Topic(ctx, "nope")
	_, ttlErr := c.PutContext(ctx, "errs", "x", client.Document{Metadata: client.Metadata{ExpiresAt: time.Now().Add(-time.Hour)}}, nil)
	c.PutContext(ctx, "errs", "y", client.Document{}, nil)
	_, condErr := c.PutContext(ctx, "errs", "y", client.Document{}, &client.WriteOptions{IfNoneMatch: true})
	_, reloadErr := c.Reload(ctx)
	for _, tt := range []struct {
		name   string
		err    error
		want   error
		status int
	}{
		{"duplicate topic", dupErr, client.ErrAlreadyExists, 409},
		{"bad name", badErr, client.ErrInvalidArgument, 400},
		{"missing topic", missErr, client.ErrNotFound, 404},
		{"expiry in the past", ttlErr, client.ErrInvalidArgument, 400},
		{"If-None-Match", condErr, client.ErrFailedPrecondition, 412},
		{"reload without a config file", reloadErr, client.ErrFailedPrecondition, 412},
	} {
		var apiErr *client.Error
		if !errors.Is(tt.err, tt.want) || !errors.As(tt.err, &apiErr) || apiErr.StatusCode != tt.status || apiErr.Message == "" {
			t.Errorf("%s: err = %v, want %v with status %d and a message", tt.name, tt.err, tt.want, tt.status)
		}
		if errors.Is(tt.err, client.ErrInternal) {
			t.Errorf("%s: err = %v matches ErrInternal too", tt.name, tt.err)
		}
	}
}

// TestErrorsWithoutCode checks answers that do not come from the router
// itself (a proxy in front of it, say): the status decides.
func TestErrorsWithoutCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/topics/limited":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
		case "/api/v1/topics/denied":
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"error":{"code":"permission_denied","message":"not yours"}}`)
		case "/api/v1/topics/auth":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":"unauthenticated","message":"who are you"}}`)
		default:
			http.Error(w, "bad gateway", http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, client.WithAPIKey("k"))
	ctx := context.Background()
	_, limited := c.Topic(ctx, "limited")
	_, denied := c.Topic(ctx, "denied")
	_, auth := c.Topic(ctx, "auth")
	_, proxy := c.Topic(ctx, "other")
	var apiErr *client.Error
	if !errors.Is(limited, client.ErrRateLimited) || !errors.As(limited, &apiErr) || apiErr.RetryAfter != 3*time.Second {
		t.Errorf("429 = %v (%+v), want ErrRateLimited with RetryAfter 3s", limited, apiErr)
	}
	if !errors.Is(denied, client.ErrPermissionDenied) || !errors.Is(auth, client.ErrUnauthenticated) {
		t.Errorf("403, 401 = %v, %v, want ErrPermissionDenied, ErrUnauthenticated", denied, auth)
	}
	if !errors.Is(proxy, client.ErrUnavailable) || !strings.Contains(proxy.Error(), "bad gateway") {
		t.Errorf("502 from a proxy = %v, want ErrUnavailable with its body", proxy)
	}

	down, _ := client.New(srv.URL)
	srv.Close()
	if _, err := down.Cluster(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Cluster of a stopped router = %v, want ErrUnavailable", err)
	}
}

func TestAPIKeySent(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.Write([]byte(`{"mode":"single"}`))
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, client.WithAPIKey("s3cret"))
	if _, err := c.Cluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want Bearer s3cret", got)
	}
}

func TestTopicsAndMessages(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	for i := range 7 {
		name := fmt.Sprintf("iter-%d", i)
		t.Cleanup(func() { c.DeleteTopic(context.Background(), name) }) // the server is shared
		if _, err := c.CreateTopic(ctx, client.Topic{Name: name, DefaultTTLSeconds: 60}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for tp, err := range c.Topics(ctx, "iter-") {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tp.Name)
		if tp.DefaultTTLSeconds != 60 || tp.CreatedAt.IsZero() {
			t.Errorf("topic %+v, want default_ttl_seconds 60 and created_at", tp)
		}
	}
	if len(names) != 7 {
		t.Errorf("Topics = %v, want 7", names)
	}
	n, etag, err := c.AppendMessages(ctx, "iter-0", "conv", []client.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}}, "")
	if err != nil || n != 2 || etag == "" {
		t.Fatalf("AppendMessages = %d, %q, %v, want 2 and an etag", n, etag, err)
	}
	msgs, etag2, err := c.Messages(ctx, "iter-0", "conv", 1)
	if err != nil || len(msgs) != 1 || msgs[0].Content != "b" || etag2 != etag {
		t.Errorf("Messages(last 1) = %v, %q, %v, want [b] at %q", msgs, etag2, err, etag)
	}
	if msgs[0].Seq != 2 {
		t.Errorf("Messages(last 1) seq = %d, want 2", msgs[0].Seq)
	}
	// Keyed appends: the retry stores nothing and answers the same seqs.
	for try := range 2 {
		a, err := c.AppendMessagesWith(ctx, "iter-0", "conv", []client.Message{{Role: "user", Content: "c"}}, client.AppendOptions{IdempotencyKey: "turn-3"})
		if err != nil || a.FirstSeq != 3 || a.LastSeq != 3 || a.Count != 3 || a.ETag == "" || a.Replayed != (try == 1) {
			t.Errorf("AppendMessagesWith try %d = %+v, %v, want seq 3 of 3, replayed %v", try, a, err, try == 1)
		}
	}
	if _, err := c.AppendMessagesWith(ctx, "iter-0", "conv", []client.Message{{Role: "user", Content: "c"}}, client.AppendOptions{IfMatch: `"1"`}); !errors.Is(err, client.ErrFailedPrecondition) {
		t.Errorf("AppendMessagesWith a wrong If-Match = %v, want ErrFailedPrecondition", err)
	}
	var all []string
	for m, err := range c.History(ctx, "iter-0", "conv", 2) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, fmt.Sprint(m.Seq, m.Content))
	}
	if strings.Join(all, ",") != "1a,2b,3c" {
		t.Errorf("History in pages of 2 = %v, want 1a,2b,3c", all)
	}
	page, err := c.MessagesPage(ctx, "iter-0", "conv", 2, "")
	if err != nil || len(page.Messages) != 2 || page.NextCursor == "" || page.Count != 3 {
		t.Errorf("MessagesPage(2) = %+v, %v, want 2 of 3 and a cursor", page, err)
	}
	doc, err := c.GetContext(ctx, "iter-0", "conv")
	if err != nil || doc.Metadata.ExpiresAt.IsZero() {
		t.Errorf("context created by an append in a topic with a default TTL: %+v, %v, want an expiry", doc, err)
	}
	if err := c.DeleteContext(ctx, "iter-0", "conv", &client.WriteOptions{IfMatch: `"1"`}); !errors.Is(err, client.ErrFailedPrecondition) {
		t.Errorf("DeleteContext with a wrong If-Match = %v, want ErrFailedPrecondition", err)
	}
	if err := c.DeleteContext(ctx, "iter-0", "conv", &client.WriteOptions{IfMatch: doc.ETag}); err != nil {
		t.Errorf("DeleteContext = %v", err)
	}
	if err := c.DeleteTopic(ctx, "iter-6"); err != nil {
		t.Errorf("DeleteTopic = %v", err)
	}
	cl, err := c.Cluster(ctx)
	if err != nil || cl.Mode != "single" || len(cl.Shards) != 1 {
		t.Errorf("Cluster = %+v, %v, want one shard in single mode", cl, err)
	}
	if st, err := c.Repair(ctx, true); err != nil || st == nil || st.Running {
		t.Errorf("Repair(wait) = %+v, %v, want a finished pass", st, err)
	}
}

// TestChatStreamFails checks that a failure in the middle of a streamed
// answer ends the iteration with the router's error.
func TestChatStreamFails(t *testing.T) {
	stop, url, err := startRouter(t, filepath.Join(t.TempDir(), "kvdb.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, _ := client.New(url)
	ctx := context.Background()
	c.CreateTopic(ctx, client.Topic{Name: "t"})
	answer, err := c.Chat(ctx, "t", "c", client.ChatRequest{Message: "one two"})
	if err != nil || answer.Message.Content != "You said: one two" || answer.MessagesCount != 2 || answer.ETag == "" {
		t.Fatalf("Chat = %+v, %v", answer, err)
	}
	var pieces []string
	var last error
	for ch, err := range c.ChatStream(ctx, "t", "c", client.ChatRequest{Message: "x", Model: "no-such-model"}) {
		if err != nil {
			last = err
			break
		}
		pieces = append(pieces, ch.Message.Content)
	}
	if !errors.Is(last, client.ErrNotFound) {
		t.Errorf("ChatStream with an unknown model: pieces %q, err %v, want ErrNotFound", pieces, last)
	}
}

func TestRestoreRefusesDamagedArchive(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	c.CreateTopic(ctx, client.Topic{Name: "dmg"})
	c.PutContext(ctx, "dmg", "a", client.Document{Content: client.Content{Text: "x"}}, nil)
	var arc bytes.Buffer
	if _, err := c.Backup(ctx, &arc, nil); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": arc.Bytes()[:arc.Len()*2/3],
		"corrupted": func() []byte { b := bytes.Clone(arc.Bytes()); b[len(b)/2] ^= 0xff; return b }(),
	} {
		called := false
		_, err := c.Restore(ctx, bytes.NewReader(bad), client.RestoreOptions{Verified: func(*backup.Manifest) { called = true }})
		if err == nil || called || !strings.Contains(err.Error(), "nothing was sent") {
			t.Errorf("Restore of a %s archive = %v (verified: %v), want a refusal", name, err, called)
		}
		if !errors.Is(err, backup.ErrTruncated) && !errors.Is(err, backup.ErrCorrupt) {
			t.Errorf("Restore of a %s archive = %v, want ErrTruncated or ErrCorrupt", name, err)
		}
	}
}

// chatText is a few sentences from a small vocabulary, different per seed.
func chatText(seed int) string {
	words := strings.Fields("the customer was charged twice for the monthly plan and asked for a refund of the second payment to the card on file before the weekend")
	var b strings.Builder
	for i := range 40 {
		b.WriteString(words[(seed*7+i*i*3+i*seed)%len(words)])
		b.WriteByte(' ')
	}
	return b.String()
}

// TestCompressionDictionary trains a dictionary in single-node mode (the
// embedded store takes the same path as a cluster), rewrites the stored
// contexts with it, and finds it again after a restart.
func TestCompressionDictionary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kvdb.db")
	stop, url, err := startRouter(t, path)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(url)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "chat"}); err != nil {
		t.Fatal(err)
	}
	put := func(from, n int) {
		for i := from; i < from+n; i++ {
			doc := client.Document{Content: client.Content{Text: chatText(i), Messages: []client.Message{
				{Role: "system", Content: "You are a helpful support assistant. Answer briefly."},
				{Role: "user", Content: chatText(i + 1)}, {Role: "assistant", Content: chatText(i + 2)},
			}}}
			if _, err := c.PutContext(ctx, "chat", fmt.Sprintf("c%03d", i), doc, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 30)
	if _, err := c.TrainCompression(ctx, false); !errors.Is(err, client.ErrFailedPrecondition) {
		t.Fatalf("TrainCompression on 30 contexts = %v, want ErrFailedPrecondition", err)
	}
	if _, err := c.RewriteCompression(ctx, true); !errors.Is(err, client.ErrFailedPrecondition) {
		t.Errorf("RewriteCompression without a dictionary = %v, want ErrFailedPrecondition", err)
	}
	put(30, 40)
	before, err := c.GetContext(ctx, "chat", "c005")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.TrainCompression(ctx, true)
	if err != nil {
		t.Fatalf("TrainCompression = %v", err)
	}
	if res.ID == 0 || res.Samples != 70 || res.Rewrite == nil || res.Rewrite.Rewritten != 70 || res.Rewrite.BytesAfter >= res.Rewrite.BytesBefore || res.RatioAfter >= res.RatioBefore {
		t.Errorf("TrainCompression = %+v (rewrite %+v), want 70 samples and 70 contexts rewritten smaller", res, res.Rewrite)
	}
	after, err := c.GetContext(ctx, "chat", "c005")
	if err != nil || after.ETag != before.ETag || after.Content.Text != before.Content.Text || len(after.Content.Messages) != 3 {
		t.Errorf("c005 after the rewrite = %+v, %v; want it unchanged (%+v)", after, err, before)
	}
	st, err := c.Compression(ctx)
	if err != nil || st.Current == nil || st.Current.ID != res.ID || len(st.Dictionaries) != 1 {
		t.Errorf("Compression = %+v, %v; want dictionary %d current", st, err, res.ID)
	}
	if rw, err := c.RewriteCompression(ctx, true); err != nil || rw.Rewritten != 0 || rw.Current != 70 {
		t.Errorf("RewriteCompression again = %+v, %v; want nothing left", rw, err)
	}

	// Restart over the same file: the dictionary is found again.
	stop()
	stop, url, err = startRouter(t, path)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, _ = client.New(url)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err = c.Compression(ctx)
		if err == nil && st.Current != nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || st.Current == nil || st.Current.ID != res.ID {
		t.Fatalf("Compression after a restart = %+v, %v; want dictionary %d", st, err, res.ID)
	}
	if again, err := c.GetContext(ctx, "chat", "c005"); err != nil || again.Content.Text != before.Content.Text {
		t.Errorf("c005 after a restart = %+v, %v", again, err)
	}
}

// TestPutContexts: a bulk write stores every document (each readable
// with the ETag its result names); an invalid one refuses them all; a
// partial answer (503, as the router gives with a shard down) comes back
// as the results with the error.
func TestPutContexts(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	t.Cleanup(func() { c.DeleteTopic(context.Background(), "bulk") })
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "bulk"}); err != nil {
		t.Fatal(err)
	}
	docs := make([]client.Document, 50)
	for i := range docs {
		docs[i] = client.Document{Metadata: client.Metadata{ID: fmt.Sprintf("d%02d", i)}, Content: client.Content{Text: fmt.Sprintf("note %d", i)}}
	}
	res, err := c.PutContexts(ctx, "bulk", docs)
	if err != nil || res.Created != 50 || res.Failed != 0 || len(res.Results) != 50 {
		t.Fatalf("PutContexts = %+v, %v; want 50 created", res, err)
	}
	for i, r := range res.Results {
		got, err := c.GetContext(ctx, "bulk", r.ID)
		if err != nil || r.Status != 201 || got.ETag != r.ETag || got.Content.Text != docs[i].Content.Text {
			t.Errorf("result %+v; GetContext = %+v, %v", r, got, err)
		}
	}
	if res, err = c.PutContexts(ctx, "bulk", docs[:3]); err != nil || res.Replaced != 3 {
		t.Errorf("PutContexts again = %+v, %v; want 3 replaced", res, err)
	}
	docs[7].Metadata.ID = ""
	if res, err := c.PutContexts(ctx, "bulk", docs); !errors.Is(err, client.ErrInvalidArgument) || res != nil || !strings.Contains(err.Error(), "contexts[7]") {
		t.Errorf("PutContexts with no id in the 8th = %+v, %v; want ErrInvalidArgument naming contexts[7]", res, err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"code":"unavailable","message":"1 of 2 contexts not stored (each result says which; writing the bulk again is safe): shard sh-2 down"},`+
			`"created":1,"replaced":0,"failed":1,"results":[{"id":"a","status":201,"etag":"\"5\""},{"id":"b","status":503,"error":{"code":"unavailable","message":"shard sh-2 down"}}]}`)
	}))
	t.Cleanup(srv.Close)
	pc, _ := client.New(srv.URL)
	res, err = pc.PutContexts(ctx, "t", docs[:2])
	if !errors.Is(err, client.ErrUnavailable) || res == nil || res.Created != 1 || res.Failed != 1 || res.Results[1].Error == nil || res.Results[0].ETag != `"5"` {
		t.Errorf("partial PutContexts = %+v, %v; want the results and ErrUnavailable", res, err)
	}

	// A proxy's answer, not the router's: its text is the error.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream went away", http.StatusBadGateway)
	}))
	t.Cleanup(proxy.Close)
	xc, _ := client.New(proxy.URL)
	var apiErr *client.Error
	if res, err := xc.PutContexts(ctx, "t", docs[:2]); res != nil || !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || !strings.Contains(apiErr.Message, "upstream went away") {
		t.Errorf("PutContexts through a failing proxy = %+v, %v; want a 502 error with the proxy's text", res, err)
	}
}
