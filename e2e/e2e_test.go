package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// seedDoc is the seed project's example context, byte for byte.
const seedDoc = `{"metadata":{"id":"context-1","created_at":"2024-03-20T10:00:00Z","model":"llama2","tags":["chat","support"]},"content":{"text":"Previous conversation context...","embeddings":[0.1,0.2]}}`

// maxBody is the -max-body-size the API tests start routers with.
const maxBody = 4096

func TestShardedCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, fmt.Sprintf("-max-body-size=%d", maxBody))
	testAPI(t, c.url(""))

	t.Run("Operations", func(t *testing.T) {
		testOperations(t, c.url(""), "sharded", []string{"sh-1", "sh-2", "sh-3"})
		r := do(t, "GET", c.url("/api/v1/cluster"), nil)
		mustStatus(t, r, http.StatusOK)
		for i, s := range decode[clusterInfo](t, r).Shards {
			if i < len(c.shards) && !strings.Contains(s.Address, c.shards[i].addr) {
				t.Errorf("%s: shard %s address = %q, want it to contain %q", r.Req, s.Name, s.Address, c.shards[i].addr)
			}
		}
	})

	// testAPI wrote hundreds of contexts; the ring must have put some on
	// every shard.
	t.Run("KeysSpreadOverShards", func(t *testing.T) {
		for _, s := range c.shards {
			r := do(t, "GET", s.url("/v1/info"), nil)
			if !wantStatus(t, r, http.StatusOK) {
				continue
			}
			n, _ := field(r.Body, "keys", "contexts").(float64)
			if n <= 0 {
				t.Errorf("%s on %s: keys.contexts = %v, want > 0; body: %s", r.Req, s.name, n, r.Raw)
			}
		}
	})
}

func TestSingleNodeMode(t *testing.T) {
	t.Parallel()
	// A directory that does not exist yet: the router must create it.
	db := filepath.Join(t.TempDir(), "nested", "dir", "kvdb.db")
	p, base := startSingle(t, db, fmt.Sprintf("-max-body-size=%d", maxBody))
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("single-node router is up but its BoltDB file: %v", err)
	}

	// The same checks as the sharded cluster: the answers must be the same.
	testAPI(t, base)
	t.Run("Operations", func(t *testing.T) {
		testOperations(t, base, "single", []string{"local"})
	})

	t.Run("SecondRouterOnSameFileFails", func(t *testing.T) {
		second := start(t, "second router (single-node)", bin.router, "-db-location="+db, "-http-addr="+listenAny)
		if code := second.wait(t, exitTimeout); code == 0 || code == -1 {
			t.Errorf("second router on %s: exit status %d, want a non-zero exit", db, code)
		}
		if got := second.stderr.String(); !strings.Contains(got, "locked") {
			t.Errorf("second router on %s: stderr = %q, want it to contain \"locked\"", db, got)
		}
		// The first router is unharmed.
		wantStatus(t, do(t, "GET", base+"/api/v1/topics/docs/contexts/context-1", nil), http.StatusOK)
	})

	t.Run("RestartKeepsData", func(t *testing.T) {
		before := do(t, "GET", base+"/api/v1/topics/docs/contexts/context-1", nil)
		mustStatus(t, before, http.StatusOK)
		topicsBefore := do(t, "GET", base+"/api/v1/topics?limit=1000", nil)
		mustStatus(t, topicsBefore, http.StatusOK)
		p.stopClean(t)

		_, base := startSingle(t, db)
		after := do(t, "GET", base+"/api/v1/topics/docs/contexts/context-1", nil)
		if wantStatus(t, after, http.StatusOK) {
			checkSeedDoc(t, after)
			if got, want := after.Header.Get("ETag"), before.Header.Get("ETag"); got != want {
				t.Errorf("%s after restart: ETag = %s, want %s", after.Req, got, want)
			}
		}
		topicsAfter := do(t, "GET", base+"/api/v1/topics?limit=1000", nil)
		if wantStatus(t, topicsAfter, http.StatusOK) && string(topicsAfter.Raw) != string(topicsBefore.Raw) {
			t.Errorf("%s after restart = %s, want %s", topicsAfter.Req, topicsAfter.Raw, topicsBefore.Raw)
		}
		if got := listAllContexts(t, base, "many", 1000, ""); len(got) != manyContexts {
			t.Errorf("after restart, topic many lists %d contexts, want %d", len(got), manyContexts)
		}
	})
}

// testAPI runs the public API's checks against a router at base, which must
// be empty and started with -max-body-size=maxBody.
func testAPI(t *testing.T, base string) {
	t.Run("Topics", func(t *testing.T) { testTopics(t, base) })
	t.Run("TopicPaging", func(t *testing.T) { testTopicPaging(t, base) })
	t.Run("ContextDocument", func(t *testing.T) { testContextDocument(t, base) })
	t.Run("PutAndPreconditions", func(t *testing.T) { testPutAndPreconditions(t, base) })
	t.Run("ContextListing", func(t *testing.T) { testContextListing(t, base) })
	t.Run("RequestErrors", func(t *testing.T) { testRequestErrors(t, base) })
	t.Run("DeleteTopic", func(t *testing.T) { testDeleteTopic(t, base) })
}

func testTopics(t *testing.T, base string) {
	r := do(t, "POST", base+"/api/v1/topics", map[string]string{"name": "alpha", "description": "the first topic"})
	mustStatus(t, r, http.StatusCreated)
	if got, want := r.Header.Get("Location"), "/api/v1/topics/alpha"; got != want {
		t.Errorf("%s: Location = %q, want %q", r.Req, got, want)
	}
	created := decode[topic](t, r)
	if created.Name != "alpha" || created.Description != "the first topic" {
		t.Errorf("%s = %s, want name alpha and description %q", r.Req, r.Raw, "the first topic")
	}
	if _, err := time.Parse(time.RFC3339Nano, created.CreatedAt); err != nil {
		t.Errorf("%s: created_at %q is not RFC 3339: %v", r.Req, created.CreatedAt, err)
	}
	if len(r.Body) != 3 {
		t.Errorf("%s = %s, want exactly name, description, created_at", r.Req, r.Raw)
	}

	r = do(t, "GET", base+"/api/v1/topics/alpha", nil)
	if wantStatus(t, r, http.StatusOK) {
		if got := decode[topic](t, r); got != created {
			t.Errorf("%s = %+v, want %+v", r.Req, got, created)
		}
	}

	r = do(t, "POST", base+"/api/v1/topics", map[string]string{"name": "alpha"})
	wantError(t, r, http.StatusConflict, "already_exists", "alpha")

	for _, name := range []string{"", "-lead", "_lead", "has space", "a/b", "dots:no", strings.Repeat("x", 129), "ünïcode"} {
		r := do(t, "POST", base+"/api/v1/topics", map[string]string{"name": name})
		wantError(t, r, http.StatusBadRequest, "invalid_argument")
	}
	// The longest valid name.
	mustStatus(t, do(t, "POST", base+"/api/v1/topics", map[string]string{"name": strings.Repeat("L", 128)}), http.StatusCreated)

	wantError(t, do(t, "GET", base+"/api/v1/topics/absent", nil), http.StatusNotFound, "not_found", "absent")
	wantError(t, do(t, "GET", base+"/api/v1/topics/-bad", nil), http.StatusBadRequest, "invalid_argument")
	wantError(t, do(t, "DELETE", base+"/api/v1/topics/absent", nil), http.StatusNotFound, "not_found")
}

func testTopicPaging(t *testing.T, base string) {
	const n = 25
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("page-%02d", i))
	}
	for _, i := range rand.Perm(n) { // creation order must not matter
		createTopic(t, base, want[i])
	}

	// Pages of 10 under a prefix: 10, 10, 5, sorted, complete.
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		u := base + "/api/v1/topics?prefix=page-&limit=10"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		r := do(t, "GET", u, nil)
		mustStatus(t, r, http.StatusOK)
		if _, ok := r.Body["next_cursor"]; !ok {
			t.Errorf("%s = %s, want a next_cursor field", r.Req, r.Raw)
		}
		l := decode[topicList](t, r)
		wantLen := []int{10, 10, 5}[min(page, 2)]
		if len(l.Topics) != wantLen {
			t.Errorf("%s: %d topics, want %d", r.Req, len(l.Topics), wantLen)
		}
		for _, tp := range l.Topics {
			got = append(got, tp.Name)
		}
		if l.NextCursor == "" {
			if page != 2 {
				t.Errorf("%s: next_cursor empty after page %d, want 3 pages", r.Req, page+1)
			}
			break
		}
		if page >= 2 {
			t.Fatalf("%s: next_cursor %q on page %d, want empty after %d topics", r.Req, l.NextCursor, page+1, n)
		}
		cursor = l.NextCursor
	}
	if !slices.Equal(got, want) {
		t.Errorf("paging topics with prefix page- = %q, want %q", got, want)
	}

	// Without a prefix: every topic, sorted, each once.
	r := do(t, "GET", base+"/api/v1/topics?limit=1000", nil)
	mustStatus(t, r, http.StatusOK)
	all := decode[topicList](t, r)
	var names []string
	for _, tp := range all.Topics {
		names = append(names, tp.Name)
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("%s: names %q, want sorted and distinct", r.Req, names)
	}
	for _, w := range append(want, "alpha") {
		if !slices.Contains(names, w) {
			t.Errorf("%s: %q missing from %q", r.Req, w, names)
		}
	}
	if all.NextCursor != "" {
		t.Errorf("%s: next_cursor = %q, want empty", r.Req, all.NextCursor)
	}

	// The prefix filter.
	r = do(t, "GET", base+"/api/v1/topics?prefix=page-1", nil)
	if wantStatus(t, r, http.StatusOK) {
		var got []string
		for _, tp := range decode[topicList](t, r).Topics {
			got = append(got, tp.Name)
		}
		if want := want[10:20]; !slices.Equal(got, want) {
			t.Errorf("%s = %q, want %q", r.Req, got, want)
		}
	}
	r = do(t, "GET", base+"/api/v1/topics?prefix=zzz", nil)
	if wantStatus(t, r, http.StatusOK) && string(r.Raw) != `{"topics":[],"next_cursor":""}` {
		t.Errorf("%s = %s, want an empty list", r.Req, r.Raw)
	}

	for _, q := range []string{"cursor=!!!", "cursor=" + url.QueryEscape("@@not-base64@@"), "limit=0", "limit=1001", "limit=-1", "limit=ten", "prefix=-x"} {
		wantError(t, do(t, "GET", base+"/api/v1/topics?"+q, nil), http.StatusBadRequest, "invalid_argument")
	}
	wantStatus(t, do(t, "GET", base+"/api/v1/topics?limit=1000", nil), http.StatusOK)
	wantStatus(t, do(t, "GET", base+"/api/v1/topics?limit=1", nil), http.StatusOK)
}

// checkSeedDoc checks that r's body is seedDoc exactly, plus an RFC 3339
// metadata.updated_at that the router adds.
func checkSeedDoc(t testing.TB, r reply) {
	t.Helper()
	var got, want map[string]any
	if err := json.Unmarshal(r.Raw, &got); err != nil {
		t.Errorf("%s: %v; body: %s", r.Req, err, r.Raw)
		return
	}
	json.Unmarshal([]byte(seedDoc), &want)
	meta, _ := got["metadata"].(map[string]any)
	updated, _ := meta["updated_at"].(string)
	if _, err := time.Parse(time.RFC3339Nano, updated); err != nil {
		t.Errorf("%s: metadata.updated_at = %q, want an RFC 3339 time; body: %s", r.Req, updated, r.Raw)
	}
	delete(meta, "updated_at")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %s, want %s plus updated_at", r.Req, r.Raw, seedDoc)
	}
}

func testContextDocument(t *testing.T, base string) {
	createTopic(t, base, "docs")
	contexts := base + "/api/v1/topics/docs/contexts"

	r := do(t, "POST", contexts, seedDoc)
	mustStatus(t, r, http.StatusCreated)
	checkSeedDoc(t, r)
	if got, want := r.Header.Get("Location"), "/api/v1/topics/docs/contexts/context-1"; got != want {
		t.Errorf("%s: Location = %q, want %q", r.Req, got, want)
	}
	etag := r.Header.Get("ETag")
	if etag == "" {
		t.Errorf("%s: no ETag header", r.Req)
	}

	for range 2 { // the first read may be a miss or a hit, the second a hit
		r = do(t, "GET", contexts+"/context-1", nil)
		if !wantStatus(t, r, http.StatusOK) {
			break
		}
		checkSeedDoc(t, r)
		if got := r.Header.Get("ETag"); got != etag {
			t.Errorf("%s: ETag = %q, want %q (the POST's)", r.Req, got, etag)
		}
		if got := r.Header.Get("X-Kvdb-Cache"); got != "hit" && got != "miss" {
			t.Errorf("%s: X-Kvdb-Cache = %q, want hit or miss", r.Req, got)
		}
	}

	wantError(t, do(t, "POST", contexts, seedDoc), http.StatusConflict, "already_exists", "context-1")

	// Without an id, one is made; without created_at, now.
	r = do(t, "POST", contexts, `{"content":{"text":"anonymous"}}`)
	mustStatus(t, r, http.StatusCreated)
	doc := decode[document](t, r)
	if doc.Metadata.ID == "" {
		t.Fatalf("%s = %s, want a generated metadata.id", r.Req, r.Raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, doc.Metadata.CreatedAt); err != nil {
		t.Errorf("%s: created_at %q, want now in RFC 3339: %v", r.Req, doc.Metadata.CreatedAt, err)
	}
	if got, want := r.Header.Get("Location"), "/api/v1/topics/docs/contexts/"+doc.Metadata.ID; got != want {
		t.Errorf("%s: Location = %q, want %q", r.Req, got, want)
	}
	r = do(t, "GET", base+"/api/v1/topics/docs/contexts/"+doc.Metadata.ID, nil)
	if wantStatus(t, r, http.StatusOK) {
		if got := decode[document](t, r); got.Content == nil || got.Content.Text != "anonymous" {
			t.Errorf("%s = %s, want content.text anonymous", r.Req, r.Raw)
		}
	}

	wantError(t, do(t, "POST", base+"/api/v1/topics/absent/contexts", seedDoc), http.StatusNotFound, "not_found", "absent")
	wantError(t, do(t, "GET", contexts+"/no-such-id", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "GET", base+"/api/v1/topics/absent/contexts/context-1", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "POST", contexts, `{"metadata":{"id":"-bad-id"}}`), http.StatusBadRequest, "invalid_argument")

	// An unknown field is either kept and returned or refused: never dropped.
	r = do(t, "POST", contexts, `{"metadata":{"id":"odd-1","colour":"red"},"content":{"text":"x"}}`)
	switch r.Status {
	case http.StatusBadRequest:
		wantError(t, r, http.StatusBadRequest, "invalid_argument", "colour")
	case http.StatusCreated:
		r = do(t, "GET", contexts+"/odd-1", nil)
		if field(r.Body, "metadata", "colour") != "red" {
			t.Errorf("%s = %s, want the unknown field metadata.colour kept", r.Req, r.Raw)
		}
	default:
		t.Errorf("%s = %d, want 400 or 201; body: %s", r.Req, r.Status, r.Raw)
	}
}

func testPutAndPreconditions(t *testing.T, base string) {
	createTopic(t, base, "puts")
	u := base + "/api/v1/topics/puts/contexts/put-1"
	text := func(s string) string { return `{"content":{"text":"` + s + `"}}` }

	r := do(t, "PUT", u, text("v1"))
	mustStatus(t, r, http.StatusCreated)
	if got, want := r.Header.Get("Location"), "/api/v1/topics/puts/contexts/put-1"; got != want {
		t.Errorf("%s: Location = %q, want %q", r.Req, got, want)
	}
	e1 := r.Header.Get("ETag")

	r = do(t, "PUT", u, text("v2"))
	mustStatus(t, r, http.StatusOK)
	e2 := r.Header.Get("ETag")
	if e2 == "" || e2 == e1 {
		t.Errorf("%s: ETag = %q after replacing %q, want a new one", r.Req, e2, e1)
	}

	r = do(t, "PUT", u, text("v3"), "If-Match", e2)
	mustStatus(t, r, http.StatusOK)
	e3 := r.Header.Get("ETag")
	if e3 == "" || e3 == e2 {
		t.Errorf("%s: ETag = %q after replacing %q, want a new one", r.Req, e3, e2)
	}

	wantError(t, do(t, "PUT", u, text("v4"), "If-Match", e2), http.StatusPreconditionFailed, "failed_precondition")
	r = do(t, "GET", u, nil)
	if wantStatus(t, r, http.StatusOK) {
		if got := decode[document](t, r); got.Content == nil || got.Content.Text != "v3" || r.Header.Get("ETag") != e3 {
			t.Errorf("%s = %s with ETag %s, want text v3 and ETag %s (a stale If-Match must not write)", r.Req, r.Raw, r.Header.Get("ETag"), e3)
		}
	}

	wantError(t, do(t, "PUT", u, `{"metadata":{"id":"other"}}`), http.StatusBadRequest, "invalid_argument", "metadata.id")
	wantError(t, do(t, "PUT", base+"/api/v1/topics/absent/contexts/put-1", text("x")), http.StatusNotFound, "not_found")

	mustStatus(t, do(t, "DELETE", u, nil), http.StatusNoContent)
	wantError(t, do(t, "DELETE", u, nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "GET", u, nil), http.StatusNotFound, "not_found")
	// A deleted id can be created again.
	wantStatus(t, do(t, "PUT", u, text("v5")), http.StatusCreated)

	// Ids may hold colons, dots, dashes and underscores after the first
	// character.
	odd := base + "/api/v1/topics/puts/contexts/chat:2024-03-20_v1.0"
	mustStatus(t, do(t, "PUT", odd, text("odd id")), http.StatusCreated)
	r = do(t, "GET", odd, nil)
	if wantStatus(t, r, http.StatusOK) && field(r.Body, "metadata", "id") != "chat:2024-03-20_v1.0" {
		t.Errorf("%s = %s, want metadata.id chat:2024-03-20_v1.0", r.Req, r.Raw)
	}
}

// manyContexts is how many contexts testContextListing stores in topic
// "many": enough for three pages of 100 and to reach every shard.
const manyContexts = 250

func manyID(i int) string { return fmt.Sprintf("ctx-%03d", i) }

// manyDoc is context i of topic "many": tag "even" on even i, model m-a on
// multiples of 5, m-b on the rest.
func manyDoc(i int) map[string]any {
	tags := []string{"all"}
	if i%2 == 0 {
		tags = append(tags, "even")
	}
	model := "m-b"
	if i%5 == 0 {
		model = "m-a"
	}
	return map[string]any{
		"metadata": map[string]any{"model": model, "tags": tags},
		"content":  map[string]any{"text": fmt.Sprintf("text of %d", i)},
	}
}

func testContextListing(t *testing.T, base string) {
	createTopic(t, base, "many")
	// A neighbour whose name starts with the topic's: its contexts must
	// not leak into the listing.
	createTopic(t, base, "many-more")
	putContext(t, base, "many-more", "ctx-000", `{"content":{"text":"neighbour"}}`)
	for _, i := range rand.Perm(manyContexts) {
		putContext(t, base, "many", manyID(i), manyDoc(i))
	}
	idsWhere := func(keep func(int) bool) []string {
		var out []string
		for i := range manyContexts {
			if keep(i) {
				out = append(out, manyID(i))
			}
		}
		return out
	}
	all := idsWhere(func(int) bool { return true })

	// Pages of 100: all ids, sorted, each once; metadata only.
	r := do(t, "GET", base+"/api/v1/topics/many/contexts?limit=100", nil)
	if wantStatus(t, r, http.StatusOK) {
		if l := decode[contextList](t, r); len(l.Contexts) != 100 || l.NextCursor == "" {
			t.Errorf("%s: %d contexts and next_cursor %q, want 100 and a cursor", r.Req, len(l.Contexts), l.NextCursor)
		}
	}
	docs := listAllContexts(t, base, "many", 100, "")
	if got := ids(docs); !slices.Equal(got, all) {
		t.Errorf("paging topic many by 100 = %d ids %q…, want %d sorted ids", len(got), got[:min(len(got), 5)], len(all))
	}
	for _, d := range docs {
		var i int
		fmt.Sscanf(d.Metadata.ID, "ctx-%d", &i)
		want := manyDoc(i)["metadata"].(map[string]any)
		if d.Content != nil {
			t.Errorf("list without include: %s has content, want metadata only", d.Metadata.ID)
		}
		if d.Metadata.Model != want["model"] || !slices.Equal(d.Metadata.Tags, want["tags"].([]string)) {
			t.Errorf("list: %s metadata = %+v, want model %v tags %v", d.Metadata.ID, d.Metadata, want["model"], want["tags"])
		}
		if d.Metadata.CreatedAt == "" || d.Metadata.UpdatedAt == "" {
			t.Errorf("list: %s metadata = %+v, want created_at and updated_at", d.Metadata.ID, d.Metadata)
		}
	}

	// include=content.
	docs = listAllContexts(t, base, "many", 1000, "&include=content")
	if got := ids(docs); !slices.Equal(got, all) {
		t.Errorf("listing many with include=content: %d ids, want %d", len(got), len(all))
	}
	for _, d := range docs {
		var i int
		fmt.Sscanf(d.Metadata.ID, "ctx-%d", &i)
		want := manyDoc(i)["content"].(map[string]any)["text"]
		if d.Content == nil || d.Content.Text != want {
			t.Errorf("include=content: %s content = %+v, want text %q", d.Metadata.ID, d.Content, want)
		}
	}

	// Filters, also across pages.
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"&tag=even", idsWhere(func(i int) bool { return i%2 == 0 })},
		{"&model=m-a", idsWhere(func(i int) bool { return i%5 == 0 })},
		{"&tag=even&model=m-a", idsWhere(func(i int) bool { return i%10 == 0 })},
		{"&tag=even&tag=all", idsWhere(func(i int) bool { return i%2 == 0 })},
		{"&tag=nothing", nil},
		{"&model=m-z", nil},
	} {
		for _, limit := range []int{7, 1000} {
			if got := ids(listAllContexts(t, base, "many", limit, tc.query)); !slices.Equal(got, tc.want) {
				t.Errorf("listing many with limit=%d%s = %d ids, want %d", limit, tc.query, len(got), len(tc.want))
			}
		}
	}

	for _, q := range []string{"cursor=!!!", "limit=0", "limit=1001", "include=everything"} {
		wantError(t, do(t, "GET", base+"/api/v1/topics/many/contexts?"+q, nil), http.StatusBadRequest, "invalid_argument")
	}
	wantError(t, do(t, "GET", base+"/api/v1/topics/absent/contexts", nil), http.StatusNotFound, "not_found")
}

func testRequestErrors(t *testing.T, base string) {
	createTopic(t, base, "errs")
	contexts := base + "/api/v1/topics/errs/contexts"

	big := fmt.Sprintf(`{"metadata":{"id":"big"},"content":{"text":%q}}`, strings.Repeat("x", maxBody+100))
	wantError(t, do(t, "POST", contexts, big), http.StatusRequestEntityTooLarge, "payload_too_large")
	wantError(t, do(t, "PUT", contexts+"/big", big), http.StatusRequestEntityTooLarge, "payload_too_large")
	// Without a Content-Length the limit must still hold.
	wantError(t, do(t, "POST", contexts, strings.NewReader(big)), http.StatusRequestEntityTooLarge, "payload_too_large")
	wantError(t, do(t, "GET", contexts+"/big", nil), http.StatusNotFound, "not_found")

	wantError(t, do(t, "POST", contexts, seedDoc, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "unsupported_media_type")
	wantError(t, do(t, "PUT", contexts+"/c", seedDoc, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "unsupported_media_type")
	wantError(t, do(t, "POST", base+"/api/v1/topics", `{"name":"plain"}`, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "unsupported_media_type")

	for _, tc := range []struct {
		url, body, inMessage string
	}{
		{contexts, `{"metadata":`, ""},
		{contexts, `not json`, ""},
		{contexts, ``, ""},
		{contexts, `[1,2]`, ""},
		{contexts, `{"metadata":{"tags":"chat"}}`, "metadata.tags"},
		{contexts, `{"metadata":{"id":5}}`, "metadata.id"},
		{contexts, `{"content":{"embeddings":["a"]}}`, "content.embeddings"},
		{contexts, `{"metadata":{"created_at":"yesterday"}}`, "created_at"},
		{base + "/api/v1/topics", `{"name":5}`, "name"},
		{base + "/api/v1/topics", `{"name":"ok"} trailing`, ""},
	} {
		wantError(t, do(t, "POST", tc.url, tc.body), http.StatusBadRequest, "invalid_argument", tc.inMessage)
	}

	for _, u := range []string{base + "/api/v1/nope", base + "/nope", base + "/api/v1/topics/errs/other"} {
		r := do(t, "GET", u, nil)
		wantError(t, r, http.StatusNotFound, "not_found")
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type = %q, want application/json", r.Req, ct)
		}
	}
	wantError(t, do(t, "PATCH", base+"/api/v1/topics", nil), http.StatusMethodNotAllowed, "method_not_allowed")
}

func testDeleteTopic(t *testing.T, base string) {
	for _, name := range []string{"gone", "gone-not"} {
		createTopic(t, base, name)
		for i := range 5 {
			putContext(t, base, name, fmt.Sprintf("c-%d", i), `{"content":{"text":"soon gone"}}`)
		}
	}
	mustStatus(t, do(t, "DELETE", base+"/api/v1/topics/gone", nil), http.StatusNoContent)
	wantError(t, do(t, "GET", base+"/api/v1/topics/gone", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "DELETE", base+"/api/v1/topics/gone", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "GET", base+"/api/v1/topics/gone/contexts", nil), http.StatusNotFound, "not_found")
	for i := range 5 {
		wantError(t, do(t, "GET", fmt.Sprintf("%s/api/v1/topics/gone/contexts/c-%d", base, i), nil), http.StatusNotFound, "not_found")
	}

	// A new topic of the same name starts empty.
	createTopic(t, base, "gone")
	r := do(t, "GET", base+"/api/v1/topics/gone/contexts", nil)
	if wantStatus(t, r, http.StatusOK) && string(r.Raw) != `{"contexts":[],"next_cursor":""}` {
		t.Errorf("%s after delete and re-create = %s, want an empty list", r.Req, r.Raw)
	}
	for i := range 5 {
		wantError(t, do(t, "GET", fmt.Sprintf("%s/api/v1/topics/gone/contexts/c-%d", base, i), nil), http.StatusNotFound, "not_found")
	}

	// The neighbour whose name extends the deleted one is untouched.
	if got := ids(listAllContexts(t, base, "gone-not", 100, "")); len(got) != 5 {
		t.Errorf("topic gone-not lists %q after deleting topic gone, want its 5 contexts", got)
	}
}

type clusterInfo struct {
	Mode   string `json:"mode"`
	Shards []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"shards"`
}

// testOperations checks health, readiness, metrics and the cluster view of
// a router whose shards are all up.
func testOperations(t *testing.T, base, mode string, shards []string) {
	wantStatus(t, do(t, "GET", base+"/healthz", nil), http.StatusOK)
	wantStatus(t, do(t, "GET", base+"/readyz", nil), http.StatusOK)

	r := do(t, "GET", base+"/metrics", nil)
	if wantStatus(t, r, http.StatusOK) && !strings.Contains(string(r.Raw), "kvdb_http_requests_total") {
		t.Errorf("%s does not contain kvdb_http_requests_total", r.Req)
	}

	r = do(t, "GET", base+"/api/v1/cluster", nil)
	mustStatus(t, r, http.StatusOK)
	info := decode[clusterInfo](t, r)
	if info.Mode != mode {
		t.Errorf("%s: mode = %q, want %q", r.Req, info.Mode, mode)
	}
	var names []string
	for _, s := range info.Shards {
		names = append(names, s.Name)
		if s.State != "up" {
			t.Errorf("%s: shard %s state = %q, want up", r.Req, s.Name, s.State)
		}
		if s.Address == "" {
			t.Errorf("%s: shard %s has no address", r.Req, s.Name)
		}
	}
	if !slices.Equal(names, shards) {
		t.Errorf("%s: shards %q, want %q", r.Req, names, shards)
	}
}

func TestShardDownAnswers503(t *testing.T) {
	t.Parallel()
	// The hot cache is off: a cached copy would rightly answer 200 for a
	// key whose shard is down, and this test must reach the shards.
	c := startCluster(t, 3, "-cache-size=0")
	const n = 60
	createTopic(t, c.url(""), "down")
	key := func(i int) string { return fmt.Sprintf("/api/v1/topics/down/contexts/k-%02d", i) }
	text := func(i int) string { return fmt.Sprintf("value %d", i) }
	for i := range n {
		putContext(t, c.url(""), "down", fmt.Sprintf("k-%02d", i), map[string]any{"content": map[string]string{"text": text(i)}})
	}

	dead := c.shards[1]
	dead.proc.kill(t)

	// classify reads every key: each answers 200 with its value, or 503
	// naming the dead shard, never 404. It returns the keys that were 503.
	classify := func() map[int]bool {
		t.Helper()
		onDead := map[int]bool{}
		for i := range n {
			r := do(t, "GET", c.url(key(i)), nil)
			switch r.Status {
			case http.StatusOK:
				if got := decode[document](t, r); got.Content == nil || got.Content.Text != text(i) {
					t.Errorf("%s = %s, want text %q", r.Req, r.Raw, text(i))
				}
			case http.StatusServiceUnavailable:
				onDead[i] = true
				wantError(t, r, http.StatusServiceUnavailable, "unavailable", dead.name)
			default:
				t.Errorf("%s with %s down = %d, want 200 or 503; body: %s", r.Req, dead.name, r.Status, r.Raw)
			}
		}
		return onDead
	}
	// At once, before the router's health probes have noticed…
	onDead := classify()
	if len(onDead) == 0 || len(onDead) == n {
		t.Fatalf("with %s down, %d of %d keys answered 503, want some but not all", dead.name, len(onDead), n)
	}

	// …and once they have: readiness and the cluster view follow the
	// probes, so they may take a moment.
	r := waitStatus(t, c.url("/readyz"), http.StatusServiceUnavailable)
	wantError(t, r, http.StatusServiceUnavailable, "unavailable", dead.name)
	wantStatus(t, do(t, "GET", c.url("/healthz"), nil), http.StatusOK)
	wantShardStates(t, c, map[string]string{"sh-1": "up", "sh-2": "down", "sh-3": "up"})
	if again := classify(); !reflect.DeepEqual(again, onDead) {
		t.Errorf("once %s is known down, keys answering 503 = %v, want %v as before", dead.name, again, onDead)
	}

	// Writes: a key on the dead shard cannot be written, the others can,
	// unless the topic itself lives on the dead shard.
	topicDown := do(t, "GET", c.url("/api/v1/topics/down"), nil).Status == http.StatusServiceUnavailable
	for i := range n {
		r := do(t, "PUT", c.url(key(i)), map[string]any{"content": map[string]string{"text": text(i)}})
		if onDead[i] || topicDown {
			wantError(t, r, http.StatusServiceUnavailable, "unavailable", dead.name)
		} else {
			wantStatus(t, r, http.StatusOK)
		}
	}

	// Lists never leave the dead shard's keys out silently.
	wantError(t, do(t, "GET", c.url("/api/v1/topics/down/contexts?limit=1000"), nil), http.StatusServiceUnavailable, "unavailable", dead.name)
	wantError(t, do(t, "GET", c.url("/api/v1/topics"), nil), http.StatusServiceUnavailable, "unavailable", dead.name)

	// The shard comes back on its file: everything answers again.
	c.startShard(t, dead)
	waitStatus(t, c.url("/readyz"), http.StatusOK)
	wantShardStates(t, c, map[string]string{"sh-1": "up", "sh-2": "up", "sh-3": "up"})
	for i := range n {
		r := do(t, "GET", c.url(key(i)), nil)
		if wantStatus(t, r, http.StatusOK) {
			if got := decode[document](t, r); got.Content == nil || got.Content.Text != text(i) {
				t.Errorf("%s = %s, want text %q", r.Req, r.Raw, text(i))
			}
		}
	}
	if got := listAllContexts(t, c.url(""), "down", 1000, ""); len(got) != n {
		t.Errorf("topic down lists %d contexts after %s came back, want %d", len(got), dead.name, n)
	}
}

// wantShardStates waits until the router's /api/v1/cluster shows each
// shard in the state given, and fails the test if it does not within
// readyTimeout.
func wantShardStates(t testing.TB, c *cluster, want map[string]string) {
	t.Helper()
	var r reply
	var got map[string]string
	ok := eventually(readyTimeout, func() bool {
		r = do(t, "GET", c.url("/api/v1/cluster"), nil)
		got = map[string]string{}
		if r.Status == http.StatusOK {
			for _, s := range decode[clusterInfo](t, r).Shards {
				got[s.Name] = s.State
			}
		}
		return reflect.DeepEqual(got, want)
	})
	if !ok {
		t.Errorf("%s: shard states = %v, want %v within %s; body: %s", r.Req, got, want, readyTimeout, r.Raw)
	}
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	base := c.url("")
	type stored struct{ etag, text string }
	want := map[string]stored{} // context path → what GET must answer
	topics := []string{"keep-a", "keep-b", "keep-c"}
	for _, tp := range topics {
		createTopic(t, base, tp)
		for i := range 20 {
			id := fmt.Sprintf("ctx-%02d", i)
			txt := fmt.Sprintf("%s says %d", tp, i)
			etag := putContext(t, base, tp, id, map[string]any{
				"metadata": map[string]any{"model": "llama2", "tags": []string{tp}},
				"content":  map[string]any{"text": txt, "embeddings": []float64{float64(i), 0.5}},
			})
			want["/api/v1/topics/"+tp+"/contexts/"+id] = stored{etag, txt}
		}
	}
	// Deletions must persist too.
	mustStatus(t, do(t, "DELETE", base+"/api/v1/topics/keep-a/contexts/ctx-05", nil), http.StatusNoContent)
	delete(want, "/api/v1/topics/keep-a/contexts/ctx-05")
	mustStatus(t, do(t, "DELETE", base+"/api/v1/topics/keep-c", nil), http.StatusNoContent)
	for path := range want {
		if strings.HasPrefix(path, "/api/v1/topics/keep-c/") {
			delete(want, path)
		}
	}
	seedBefore := do(t, "POST", base+"/api/v1/topics/keep-b/contexts", seedDoc)
	mustStatus(t, seedBefore, http.StatusCreated)

	c.stop(t)
	if t.Failed() {
		t.FailNow()
	}
	c.start(t)

	r := do(t, "GET", base+"/api/v1/topics", nil)
	if wantStatus(t, r, http.StatusOK) {
		var got []string
		for _, tp := range decode[topicList](t, r).Topics {
			got = append(got, tp.Name)
		}
		if want := []string{"keep-a", "keep-b"}; !slices.Equal(got, want) {
			t.Errorf("%s after restart = %q, want %q", r.Req, got, want)
		}
	}
	for path, w := range want {
		r := do(t, "GET", base+path, nil)
		if !wantStatus(t, r, http.StatusOK) {
			continue
		}
		if got := decode[document](t, r); got.Content == nil || got.Content.Text != w.text {
			t.Errorf("%s after restart = %s, want text %q", r.Req, r.Raw, w.text)
		}
		if got := r.Header.Get("ETag"); got != w.etag {
			t.Errorf("%s after restart: ETag = %s, want %s", r.Req, got, w.etag)
		}
	}
	seedAfter := do(t, "GET", base+"/api/v1/topics/keep-b/contexts/context-1", nil)
	if wantStatus(t, seedAfter, http.StatusOK) {
		checkSeedDoc(t, seedAfter)
	}
	wantError(t, do(t, "GET", base+"/api/v1/topics/keep-a/contexts/ctx-05", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "GET", base+"/api/v1/topics/keep-c", nil), http.StatusNotFound, "not_found")
	wantError(t, do(t, "GET", base+"/api/v1/topics/keep-c/contexts/ctx-00", nil), http.StatusNotFound, "not_found")
	if got := len(listAllContexts(t, base, "keep-a", 100, "")); got != 19 {
		t.Errorf("topic keep-a lists %d contexts after restart, want 19", got)
	}
	if got := len(listAllContexts(t, base, "keep-b", 100, "")); got != 21 {
		t.Errorf("topic keep-b lists %d contexts after restart, want 21", got)
	}
}

func TestBadFlagsExit2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "never.db")
	config := func(name, content string) string { return writeFile(t, dir, name, content) }
	good := config("good.toml", "[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \"127.0.0.1:1\"\n")
	dupName := config("dup-name.toml", "[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \"127.0.0.1:1\"\n[[shards]]\nname = \"sh-1\"\nidx = 1\naddress = \"127.0.0.1:2\"\n")
	dupIdx := config("dup-idx.toml", "[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \"127.0.0.1:1\"\n[[shards]]\nname = \"sh-2\"\nidx = 0\naddress = \"127.0.0.1:2\"\n")
	noAddr := config("no-addr.toml", "[[shards]]\nname = \"sh-1\"\nidx = 0\naddress = \"\"\n")
	missing := filepath.Join(dir, "missing.toml")
	sd := func(args ...string) []string { return append([]string{"-db-location=" + db}, args...) }

	cases := []struct {
		name, bin string
		args      []string
		want      string // what the one line must name
	}{
		{"router/unknown flag", bin.router, []string{"-no-such-flag"}, "no-such-flag"},
		{"router/cache-size not a number", bin.router, []string{"-cache-size=lots"}, "cache-size"},
		{"router/cache-size negative", bin.router, []string{"-cache-size=-1"}, "cache-size"},
		{"router/duplicate name", bin.router, []string{"-config-file=" + dupName}, "duplicate name"},
		{"router/duplicate idx", bin.router, []string{"-config-file=" + dupIdx}, "duplicate idx"},
		{"router/empty address", bin.router, []string{"-config-file=" + noAddr}, "empty address"},
		{"router/missing config", bin.router, []string{"-config-file=" + missing}, "missing.toml"},
		{"storaged/unknown flag", bin.storaged, sd("-no-such-flag"), "no-such-flag"},
		{"storaged/duplicate name", bin.storaged, sd("-config-file="+dupName, "-shard=sh-1"), "duplicate name"},
		{"storaged/duplicate idx", bin.storaged, sd("-config-file="+dupIdx, "-shard=sh-1"), "duplicate idx"},
		{"storaged/empty address", bin.storaged, sd("-config-file="+noAddr, "-shard=sh-1"), "empty address"},
		{"storaged/missing config", bin.storaged, sd("-config-file="+missing, "-shard=sh-1"), "missing.toml"},
		{"storaged/unknown shard", bin.storaged, sd("-config-file="+good, "-shard=sh-9"), "unknown shard"},
		{"storaged/no db-location", bin.storaged, []string{"-config-file=" + good, "-shard=sh-1"}, "-db-location"},
	}
	// The group returns once its parallel subtests are done.
	t.Run("group", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				p := start(t, tc.name, tc.bin, tc.args...)
				if code := p.wait(t, exitTimeout); code != 2 {
					t.Errorf("%s %q: exit status %d, want 2", filepath.Base(tc.bin), tc.args, code)
				}
				stderr := p.stderr.String()
				if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
					t.Errorf("%s %q: stderr = %q, want exactly one line", filepath.Base(tc.bin), tc.args, stderr)
				}
				if !strings.Contains(stderr, tc.want) {
					t.Errorf("%s %q: stderr = %q, want it to name %q", filepath.Base(tc.bin), tc.args, stderr, tc.want)
				}
				if out := p.stdout.String(); out != "" {
					t.Errorf("%s %q: stdout = %q, want nothing", filepath.Base(tc.bin), tc.args, out)
				}
			})
		}
	})
	if _, err := os.Stat(db); err == nil {
		t.Errorf("%s exists: a daemon refused its flags but created its data file", db)
	}

	// -h still prints the help, and is not an error.
	for _, b := range []string{bin.router, bin.storaged} {
		p := start(t, filepath.Base(b)+" -h", b, "-h")
		if code := p.wait(t, exitTimeout); code != 0 {
			t.Errorf("%s -h: exit status %d, want 0", filepath.Base(b), code)
		}
		if out := p.stderr.String(); !strings.Contains(out, "-db-location") || !strings.Contains(out, "-http-addr") {
			t.Errorf("%s -h printed %q, want the flags' help", filepath.Base(b), out)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "kvdb.db")
	p, base := startSingle(t, db)
	createTopic(t, base, "grace")
	putContext(t, base, "grace", "before", `{"content":{"text":"written before SIGTERM"}}`)
	addr := strings.TrimPrefix(base, "http://")

	// A request that is in flight when SIGTERM arrives: its headers are
	// sent and the handler has started reading the body (the server sent
	// 100 Continue), the body is not sent yet.
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	body := `{"content":{"text":"in flight during SIGTERM"}}`
	fmt.Fprintf(conn, "PUT /api/v1/topics/grace/contexts/in-flight HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", addr, len(body))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("in-flight PUT: read 100 Continue: %v", err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("in-flight PUT: first answer %s, want 100 Continue", resp.Status)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The router stops accepting connections once it is shutting down.
	for deadline := time.Now().Add(stopTimeout); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("router still accepts connections %s after SIGTERM", stopTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The in-flight request completes.
	if _, err := conn.Write([]byte(body)); err != nil {
		t.Fatalf("in-flight PUT: send body: %v", err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("in-flight PUT: read answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("in-flight PUT during shutdown = %d, want 201", resp.StatusCode)
	}

	if code := p.wait(t, stopTimeout); code != 0 {
		t.Fatalf("router exit status after SIGTERM = %d, want 0", code)
	}

	// The file was closed cleanly: it opens at once and is consistent.
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("open %s after shutdown: %v", db, err)
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	bdb.Close()
	if err != nil {
		t.Errorf("%s after shutdown: consistency check: %v", db, err)
	}

	// And the router serves both writes again from it.
	_, base = startSingle(t, db)
	for id, want := range map[string]string{"before": "written before SIGTERM", "in-flight": "in flight during SIGTERM"} {
		r := do(t, "GET", base+"/api/v1/topics/grace/contexts/"+id, nil)
		if wantStatus(t, r, http.StatusOK) {
			if got := decode[document](t, r); got.Content == nil || got.Content.Text != want {
				t.Errorf("%s after restart = %s, want text %q", r.Req, r.Raw, want)
			}
		}
	}
}
