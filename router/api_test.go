package router

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/coord"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const seedExample = `{"metadata":{"id":"context-1","created_at":"2024-03-20T10:00:00Z","model":"llama2","tags":["chat","support"]},"content":{"text":"Previous conversation context...","embeddings":[0.1,0.2]}}`

func TestTopics(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"my-topic","description":"support chats"}`), 201, "create topic")
	if got := r.Header.Get("Location"); got != "/api/v1/topics/my-topic" {
		t.Errorf("Location = %q, want /api/v1/topics/my-topic", got)
	}
	if r.JSON["name"] != "my-topic" || r.JSON["description"] != "support chats" || r.JSON["created_at"] == "" {
		t.Errorf("created topic = %s", r.Raw)
	}
	created := r.Raw

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"get", "GET", "/api/v1/topics/my-topic", "", 200, ""},
		{"get missing", "GET", "/api/v1/topics/nope", "", 404, "not_found"},
		{"get bad name", "GET", "/api/v1/topics/-bad", "", 400, "invalid_argument"},
		{"duplicate", "POST", "/api/v1/topics", `{"name":"my-topic"}`, 409, "already_exists"},
		{"empty name", "POST", "/api/v1/topics", `{"name":""}`, 400, "invalid_argument"},
		{"name with slash", "POST", "/api/v1/topics", `{"name":"a/b"}`, 400, "invalid_argument"},
		{"name too long", "POST", "/api/v1/topics", `{"name":"` + strings.Repeat("a", 129) + `"}`, 400, "invalid_argument"},
		{"name of 128", "POST", "/api/v1/topics", `{"name":"` + strings.Repeat("b", 128) + `"}`, 201, ""},
		{"wrong type", "POST", "/api/v1/topics", `{"name":5}`, 400, "invalid_argument"},
		{"unknown field", "POST", "/api/v1/topics", `{"name":"x","colour":"red"}`, 400, "invalid_argument"},
		{"trailing data", "POST", "/api/v1/topics", `{"name":"x"} {}`, 400, "invalid_argument"},
		{"not an object", "POST", "/api/v1/topics", `[1]`, 400, "invalid_argument"},
		{"empty body", "POST", "/api/v1/topics", ``, 400, "invalid_argument"},
		{"delete missing", "DELETE", "/api/v1/topics/nope", "", 404, "not_found"},
		{"escaped slash", "GET", "/api/v1/topics/a%2Fb", "", 400, "invalid_argument"},
		{"dot dot", "GET", "/api/v1/topics/..", "", 400, "invalid_argument"},
		{"nul", "GET", "/api/v1/topics/a%00b", "", 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.method == "POST" {
				body = tt.body
			}
			r := call(t, tt.method, tc.URL+tt.path, body)
			if r.Status != tt.status || r.errCode() != tt.code {
				t.Errorf("%s %s = %d %q (%s), want %d %q", tt.method, tt.path, r.Status, r.errCode(), r.Raw, tt.status, tt.code)
			}
		})
	}
	if r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/my-topic", nil), 200, "get topic"); string(r.Raw) != string(created) {
		t.Errorf("GET topic = %s, want %s", r.Raw, created)
	}
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/my-topic", nil), 204, "delete topic")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/my-topic", nil), 404, "get deleted topic")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", `{"name":"my-topic"}`), 201, "recreate topic")
}

func TestListTopicsPages(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	var want []string
	for i := range 57 {
		name := fmt.Sprintf("topic-%03d", i)
		tc.createTopic(t, name)
		want = append(want, name)
	}
	tc.createTopic(t, "other")
	got := listAll(t, tc.URL+"/api/v1/topics?prefix=topic-&limit=10", "topics", func(m map[string]any) string { return m["name"].(string) })
	if !slices.Equal(got, want) {
		t.Errorf("listed topics = %v, want %v", got, want)
	}
	all := listAll(t, tc.URL+"/api/v1/topics?limit=1000", "topics", func(m map[string]any) string { return m["name"].(string) })
	if len(all) != 58 || !slices.IsSorted(all) {
		t.Errorf("list all topics = %d sorted=%v, want 58 sorted", len(all), slices.IsSorted(all))
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=%21%21", "cursor=" + schema.EncodeCursor("-bad"), "prefix=a/b"} {
		r := call(t, "GET", tc.URL+"/api/v1/topics?"+q, nil)
		if r.Status != 400 || r.errCode() != "invalid_argument" {
			t.Errorf("GET topics?%s = %d %s, want 400 invalid_argument", q, r.Status, r.Raw)
		}
	}
}

// listAll follows next_cursor to the end and returns the key of each item.
func listAll(t testing.TB, u, field string, key func(map[string]any) string) []string {
	t.Helper()
	var out []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("list %s: no end after %d pages", u, pages)
		}
		q := u
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		r := must(t, call(t, "GET", q, nil), 200, "GET "+q)
		items, _ := r.JSON[field].([]any)
		for _, it := range items {
			out = append(out, key(it.(map[string]any)))
		}
		cursor, _ = r.JSON["next_cursor"].(string)
		if cursor == "" {
			return out
		}
	}
}

func TestSeedExampleRoundTrips(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "my-topic")
	r := must(t, call(t, "POST", tc.URL+"/api/v1/topics/my-topic/contexts", seedExample), 201, "POST seed example")
	if got := r.Header.Get("Location"); got != "/api/v1/topics/my-topic/contexts/context-1" {
		t.Errorf("Location = %q", got)
	}
	for _, pass := range []string{"first", "second"} {
		g := must(t, call(t, "GET", tc.URL+"/api/v1/topics/my-topic/contexts/context-1", nil), 200, "GET "+pass)
		var got, want map[string]any
		json.Unmarshal(g.Raw, &got)
		json.Unmarshal([]byte(seedExample), &want)
		meta := got["metadata"].(map[string]any)
		if meta["updated_at"] == nil {
			t.Errorf("GET: no updated_at in %s", g.Raw)
		}
		delete(meta, "updated_at")
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if string(gb) != string(wb) {
			t.Errorf("GET (%s) = %s, want %s", pass, gb, wb)
		}
		if !strings.Contains(string(g.Raw), `"embeddings":[0.1,0.2]`) {
			t.Errorf("GET embeddings not written back as sent: %s", g.Raw)
		}
		if g.Header.Get("ETag") == "" || g.Header.Get("ETag") != r.Header.Get("ETag") {
			t.Errorf("ETag = %q, want %q", g.Header.Get("ETag"), r.Header.Get("ETag"))
		}
		if c := g.Header.Get("X-Kvdb-Cache"); c != "hit" && c != "miss" {
			t.Errorf("X-Kvdb-Cache = %q", c)
		}
	}
	r = call(t, "POST", tc.URL+"/api/v1/topics/my-topic/contexts", seedExample)
	if r.Status != 409 || r.errCode() != "already_exists" {
		t.Errorf("POST again = %d %s, want 409 already_exists", r.Status, r.Raw)
	}
}

func TestContextWrites(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{maxBody: 64 << 10})
	tc.createTopic(t, "t")
	base := tc.URL + "/api/v1/topics/t/contexts"

	r := must(t, call(t, "POST", base, `{"content":{"text":"no id"}}`), 201, "POST without id")
	id := r.JSON["metadata"].(map[string]any)["id"].(string)
	if !schema.ValidID(id) {
		t.Errorf("generated id %q is not a valid id", id)
	}
	must(t, call(t, "GET", base+"/"+id, nil), 200, "GET generated id")

	must(t, call(t, "POST", tc.URL+"/api/v1/topics/missing/contexts", `{"content":{}}`), 404, "POST to missing topic")
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/missing/contexts/a", `{"content":{}}`), 404, "PUT to missing topic")

	r1 := must(t, call(t, "PUT", base+"/a", `{"content":{"text":"one"}}`), 201, "PUT create")
	r2 := must(t, call(t, "PUT", base+"/a", `{"content":{"text":"two"}}`), 200, "PUT replace")
	if r1.Header.Get("ETag") == r2.Header.Get("ETag") {
		t.Errorf("ETag did not change on replace: %s", r2.Header.Get("ETag"))
	}
	r3 := must(t, call(t, "PUT", base+"/a", `{"content":{"text":"three"}}`, "If-Match", r2.Header.Get("ETag")), 200, "PUT If-Match current")
	stale := call(t, "PUT", base+"/a", `{"content":{"text":"four"}}`, "If-Match", r2.Header.Get("ETag"))
	if stale.Status != 412 || stale.errCode() != "failed_precondition" {
		t.Errorf("PUT If-Match stale = %d %s, want 412 failed_precondition", stale.Status, stale.Raw)
	}
	g := must(t, call(t, "GET", base+"/a", nil), 200, "GET after stale PUT")
	if text := g.JSON["content"].(map[string]any)["text"]; text != "three" || g.Header.Get("ETag") != r3.Header.Get("ETag") {
		t.Errorf("GET after failed If-Match = %v %s, want three %s", text, g.Header.Get("ETag"), r3.Header.Get("ETag"))
	}
	must(t, call(t, "PUT", base+"/b", `{"content":{}}`, "If-Match", `"1a2b"`), 412, "PUT If-Match on absent")
	must(t, call(t, "PUT", base+"/a", `{"content":{}}`, "If-None-Match", "*"), 412, "PUT If-None-Match on present")
	must(t, call(t, "PUT", base+"/b", `{"content":{}}`, "If-None-Match", "*"), 201, "PUT If-None-Match on absent")
	must(t, call(t, "PUT", base+"/b", `{"metadata":{"id":"c"},"content":{}}`), 400, "PUT id mismatch")

	must(t, call(t, "DELETE", base+"/a", nil, "If-Match", r2.Header.Get("ETag")), 412, "DELETE If-Match stale")
	must(t, call(t, "DELETE", base+"/a", nil), 204, "DELETE")
	must(t, call(t, "DELETE", base+"/a", nil), 404, "DELETE again")
	must(t, call(t, "GET", base+"/a", nil), 404, "GET deleted")
	must(t, call(t, "PUT", base+"/a", `{"content":{"text":"back"}}`), 201, "PUT after delete creates")
}

// TestBadInputChangesNothing sends malformed writes and checks each gets a
// 4xx with the error body and that the stored context is untouched.
func TestBadInputChangesNothing(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{maxBody: 4096})
	tc.createTopic(t, "t")
	base := tc.URL + "/api/v1/topics/t/contexts"
	orig := tc.putContext(t, "t", "doc", `{"content":{"text":"original"}}`)

	tooManyTags := `{"metadata":{"tags":[` + strings.Repeat(`"x",`, 64) + `"x"]}}`
	longTag := `{"metadata":{"tags":["` + strings.Repeat("x", 129) + `"]}}`
	tests := []struct {
		name, body, contentType string
		status                  int
		code, mention           string
	}{
		{"invalid json", `{"content":`, "", 400, "invalid_argument", "JSON"},
		{"wrong type text", `{"content":{"text":5}}`, "", 400, "invalid_argument", "content.text"},
		{"wrong type tags", `{"metadata":{"tags":"chat"}}`, "", 400, "invalid_argument", "metadata.tags"},
		{"wrong type embeddings", `{"content":{"embeddings":["a"]}}`, "", 400, "invalid_argument", "content.embeddings"},
		{"float32 overflow", `{"content":{"embeddings":[1e300]}}`, "", 400, "invalid_argument", "embeddings"},
		{"unknown field", `{"content":{"txt":"x"}}`, "", 400, "invalid_argument", "txt"},
		{"too many tags", tooManyTags, "", 400, "invalid_argument", "metadata.tags"},
		{"long tag", longTag, "", 400, "invalid_argument", "metadata.tags"},
		{"empty tag", `{"metadata":{"tags":[""]}}`, "", 400, "invalid_argument", "metadata.tags"},
		{"bad created_at", `{"metadata":{"created_at":"yesterday"}}`, "", 400, "invalid_argument", "created_at"},
		{"bad role", `{"content":{"messages":[{"role":"god","content":"x"}]}}`, "", 400, "invalid_argument", "role"},
		{"id mismatch", `{"metadata":{"id":"other"}}`, "", 400, "invalid_argument", "metadata.id"},
		{"invalid utf8", "{\"content\":{\"text\":\"\xff\"}}", "", 400, "invalid_argument", "UTF-8"},
		{"too large", `{"content":{"text":"` + strings.Repeat("x", 5000) + `"}}`, "", 413, "payload_too_large", "limit"},
		{"text/plain", `{"content":{}}`, "text/plain", 415, "unsupported_media_type", "application/json"},
		{"no content type", `{"content":{}}`, "-", 415, "unsupported_media_type", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			switch tt.contentType {
			case "":
			case "-":
				hdr = []string{"Content-Type", ""}
			default:
				hdr = []string{"Content-Type", tt.contentType}
			}
			r := call(t, "PUT", base+"/doc", tt.body, hdr...)
			if r.Status != tt.status || r.errCode() != tt.code {
				t.Errorf("PUT %s = %d %s, want %d %s", tt.name, r.Status, r.Raw, tt.status, tt.code)
			}
			if !strings.Contains(r.errMessage(), tt.mention) {
				t.Errorf("PUT %s: message %q does not mention %q", tt.name, r.errMessage(), tt.mention)
			}
		})
	}
	tooMany := make([]float32, schema.MaxEmbeddings+1)
	body, _ := json.Marshal(map[string]any{"content": map[string]any{"embeddings": tooMany}})
	tc2 := newTestCluster(t, clusterOpts{})
	tc2.createTopic(t, "t")
	if r := call(t, "PUT", tc2.URL+"/api/v1/topics/t/contexts/doc", body); r.Status != 400 {
		t.Errorf("PUT %d embeddings = %d %s, want 400", len(tooMany), r.Status, r.Raw)
	}
	g := must(t, call(t, "GET", base+"/doc", nil), 200, "GET after bad writes")
	if string(g.Raw) != string(orig.Raw) || g.Header.Get("ETag") != orig.Header.Get("ETag") {
		t.Errorf("GET after bad writes = %s %s, want %s %s", g.Raw, g.Header.Get("ETag"), orig.Raw, orig.Header.Get("ETag"))
	}
	// Bypass the cache: the shard must hold the original too.
	tc.router.cache.Reset()
	if g := must(t, call(t, "GET", base+"/doc", nil), 200, "GET from shard"); string(g.Raw) != string(orig.Raw) {
		t.Errorf("shard holds %s, want %s", g.Raw, orig.Raw)
	}
}

func TestListContextsAcrossShards(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "big")
	tc.createTopic(t, "small")
	var want, tagged []string
	for i := range 333 {
		id := fmt.Sprintf("ctx-%04d", i)
		tag := "odd"
		if i%2 == 0 {
			tag = "even"
		}
		model := "m1"
		if i%3 == 0 {
			model = "m3"
		}
		tc.putContext(t, "big", id, map[string]any{
			"metadata": map[string]any{"tags": []string{tag, "all"}, "model": model},
			"content":  map[string]any{"text": "text " + id},
		})
		want = append(want, id)
		if tag == "even" && model == "m3" {
			tagged = append(tagged, id)
		}
	}
	tc.putContext(t, "small", "only", map[string]any{"content": map[string]any{"text": "x"}})
	for i, f := range tc.faults {
		if n := countRecords(t, tc, i); n == 0 {
			t.Errorf("shard %d holds no contexts: keys are not spread", i)
		}
		_ = f
	}
	idOf := func(m map[string]any) string { return m["metadata"].(map[string]any)["id"].(string) }
	if got := listAll(t, tc.URL+"/api/v1/topics/big/contexts?limit=50", "contexts", idOf); !slices.Equal(got, want) {
		t.Errorf("list big = %d ids, want %d in order", len(got), len(want))
	}
	if got := listAll(t, tc.URL+"/api/v1/topics/big/contexts?limit=7&tag=even&model=m3", "contexts", idOf); !slices.Equal(got, tagged) {
		t.Errorf("list with tag and model = %v, want %v", got, tagged)
	}
	if got := listAll(t, tc.URL+"/api/v1/topics/small/contexts?limit=1000", "contexts", idOf); !slices.Equal(got, []string{"only"}) {
		t.Errorf("list small = %v, want [only]", got)
	}
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/big/contexts?limit=2&include=content", nil), 200, "list with content")
	items := r.JSON["contexts"].([]any)
	if c, ok := items[0].(map[string]any)["content"].(map[string]any); !ok || c["text"] != "text ctx-0000" {
		t.Errorf("include=content item = %v", items[0])
	}
	r = must(t, call(t, "GET", tc.URL+"/api/v1/topics/big/contexts?limit=2", nil), 200, "list metadata")
	if _, ok := r.JSON["contexts"].([]any)[0].(map[string]any)["content"]; ok {
		t.Errorf("list without include has content: %s", r.Raw)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/nope/contexts", nil), 404, "list missing topic")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/big/contexts?include=everything", nil), 400, "bad include")
}

func countRecords(t testing.TB, tc *testCluster, shard int) int {
	t.Helper()
	info, err := tc.stores[shard].Info(t.Context())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return int(info.Keys[schema.BucketContexts])
}

// TestListCostPerPage checks that a page reads at most shards × limit
// records however large the topic is.
func TestListCostPerPage(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	for i := range 600 {
		tc.putContext(t, "t", fmt.Sprintf("c%04d", i), `{"content":{}}`)
	}
	scanned := func() int64 {
		var n int64
		for _, f := range tc.faults {
			n += f.scanned.Load()
		}
		return n
	}
	before := scanned()
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts?limit=20", nil), 200, "list page")
	if got, max := scanned()-before, int64(3*20); got > max {
		t.Errorf("one page of 20 read %d records from shards, want at most %d", got, max)
	}
}

func TestTopicDeleteRemovesContexts(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	tc.createTopic(t, "keep")
	for i := range 40 {
		tc.putContext(t, "t", fmt.Sprintf("c%d", i), `{"content":{"text":"x"}}`)
	}
	tc.putContext(t, "keep", "c1", `{"content":{"text":"kept"}}`)
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil), 200, "GET (fills cache)")
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/t", nil), 204, "DELETE topic")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil), 404, "GET context of deleted topic")
	tc.createTopic(t, "t")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil), 404, "GET context of recreated topic")
	if r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts", nil), 200, "list recreated"); len(r.JSON["contexts"].([]any)) != 0 {
		t.Errorf("recreated topic lists %s, want none", r.Raw)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/keep/contexts/c1", nil), 200, "GET context of other topic")
}

func TestShardDownAnswers503(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	for i := range 30 {
		tc.putContext(t, "t", fmt.Sprintf("c%d", i), `{"content":{"text":"x"}}`)
	}
	tc.router.cache.Reset() // reads must reach the shards
	tc.faults[1].down.Store(true)
	var ok, unavailable int
	for i := range 30 {
		r := call(t, "GET", fmt.Sprintf("%s/api/v1/topics/t/contexts/c%d", tc.URL, i), nil)
		switch {
		case r.Status == 200:
			ok++
		case r.Status == 503 && r.errCode() == "unavailable" && strings.Contains(r.errMessage(), "sh-2"):
			unavailable++
		default:
			t.Errorf("GET c%d with sh-2 down = %d %s, want 200 or 503 naming sh-2", i, r.Status, r.Raw)
		}
	}
	if ok == 0 || unavailable == 0 {
		t.Errorf("with one of 3 shards down: %d ok, %d unavailable; want some of each", ok, unavailable)
	}
	if r := call(t, "GET", tc.URL+"/api/v1/topics/t/contexts", nil); r.Status != 503 || r.errCode() != "unavailable" {
		t.Errorf("list with a shard down = %d %s, want 503", r.Status, r.Raw)
	}
	waitFor(t, "prober marks sh-2 down", func() bool { return !tc.router.topo.Load().Cur.Ring.Node("sh-2").Up() })
	if r := call(t, "GET", tc.URL+"/readyz", nil); r.Status != 503 || !strings.Contains(r.errMessage(), "sh-2") {
		t.Errorf("readyz with a shard down = %d %s, want 503 naming sh-2", r.Status, r.Raw)
	}
	r := must(t, call(t, "GET", tc.URL+"/api/v1/cluster", nil), 200, "cluster")
	states := map[string]string{}
	for _, s := range r.JSON["shards"].([]any) {
		m := s.(map[string]any)
		states[m["name"].(string)] = m["state"].(string)
	}
	if want := map[string]string{"sh-1": "up", "sh-2": "down", "sh-3": "up"}; fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("cluster states = %v, want %v", states, want)
	}
	if r := call(t, "DELETE", tc.URL+"/api/v1/topics/t", nil); r.Status != 503 {
		t.Errorf("DELETE topic with a shard down = %d %s, want 503", r.Status, r.Raw)
	}
	tc.faults[1].down.Store(false)
	waitFor(t, "readyz after recovery", func() bool { return call(t, "GET", tc.URL+"/readyz", nil).Status == 200 })
}

// TestCacheNeverServesOlderThanOwnWrite races readers that fill the cache
// against a writer, and checks every read after an acknowledged write sees
// that write or a newer one.
func TestCacheNeverServesOlderThanOwnWrite(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	u := tc.URL + "/api/v1/topics/t/contexts/k"
	tc.putContext(t, "t", "k", `{"content":{"text":"0"}}`)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					call(t, "GET", u, nil)
				}
			}
		})
	}
	for i := 1; i <= 60; i++ {
		w := tc.putContext(t, "t", "k", fmt.Sprintf(`{"content":{"text":"%d"}}`, i))
		g := must(t, call(t, "GET", u, nil), 200, "GET after write")
		if got := g.JSON["content"].(map[string]any)["text"]; got != fmt.Sprint(i) || g.Header.Get("ETag") != w.Header.Get("ETag") {
			t.Fatalf("GET after write %d = %v (ETag %s), want %d (ETag %s)", i, got, g.Header.Get("ETag"), i, w.Header.Get("ETag"))
		}
	}
	close(stop)
	wg.Wait()
}

func TestHealthAndRoutes(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	must(t, call(t, "GET", tc.URL+"/healthz", nil), 200, "healthz")
	must(t, call(t, "GET", tc.URL+"/readyz", nil), 200, "readyz")
	if r := must(t, call(t, "GET", tc.URL+"/api/v1/cluster", nil), 200, "cluster"); r.JSON["rebalance"] != nil || r.JSON["state"] != "stable" {
		t.Errorf("cluster of a fresh cluster = %s, want stable and no rebalance", r.Raw)
	}
	if r := call(t, "GET", tc.URL+"/api/v1/nothing", nil); r.Status != 404 || r.errCode() != "not_found" {
		t.Errorf("unknown route = %d %s", r.Status, r.Raw)
	}
	if r := call(t, "PATCH", tc.URL+"/api/v1/topics", nil); r.Status != 405 || r.errCode() == "" {
		t.Errorf("PATCH topics = %d %s, want 405 with an error body", r.Status, r.Raw)
	}
}

func TestMetricsLint(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	tc.putContext(t, "t", "a", `{"content":{}}`)
	call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/a", nil)
	call(t, "GET", tc.URL+"/api/v1/cluster", nil)
	problems, err := testutil.GatherAndLint(tc.reg)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if got := testutil.ToFloat64(tc.router.m.CacheHits); got < 1 {
		t.Errorf("cache hits = %v, want at least 1", got)
	}
	n, err := testutil.GatherAndCount(tc.reg, "kvdb_http_requests_total", "kvdb_shard_request_duration_seconds", "kvdb_shard_up")
	if err != nil || n == 0 {
		t.Errorf("GatherAndCount = %d, %v; want series", n, err)
	}
}

// TestListReadsMetadataOnly: a metadata-only list reads the first bytes of
// each context, and a context whose metadata is longer than that is read
// again whole, so every item comes back right.
func TestListReadsMetadataOnly(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "t")
	long := make([]string, 60)
	for i := range long {
		long[i] = fmt.Sprintf("tag-%02d-%s", i, strings.Repeat("x", 100))
	}
	big := strings.Repeat("a long conversation ", 2000)
	tc.putContext(t, "t", "a-long-meta", map[string]any{"metadata": map[string]any{"tags": long}, "content": map[string]any{"text": big}})
	tc.putContext(t, "t", "b-big-body", map[string]any{"metadata": map[string]any{"tags": []string{"x"}}, "content": map[string]any{"text": big}})
	tc.putContext(t, "t", "c-small", map[string]any{"content": map[string]any{"text": "hi"}})
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts?limit=10", nil), 200, "list")
	items := r.JSON["contexts"].([]any)
	if len(items) != 3 {
		t.Fatalf("list = %s, want 3 items", r.Raw)
	}
	meta := items[0].(map[string]any)["metadata"].(map[string]any)
	if tags, _ := meta["tags"].([]any); len(tags) != 60 {
		t.Errorf("long metadata came back with %d tags, want 60", len(tags))
	}
	for _, it := range items {
		if _, ok := it.(map[string]any)["content"]; ok {
			t.Errorf("metadata-only list returned content")
		}
	}
	if got := listAll(t, tc.URL+"/api/v1/topics/t/contexts?limit=1&tag=x", "contexts", func(m map[string]any) string { return m["metadata"].(map[string]any)["id"].(string) }); fmt.Sprint(got) != "[b-big-body]" {
		t.Errorf("filtered list = %v, want [b-big-body]", got)
	}
	// The shards really were asked for a prefix: a scan with the limit cuts
	// the big context's value.
	p, err := tc.stores[0].Scan(t.Context(), schema.BucketContexts, storage.ScanOptions{Prefix: []byte("t" + schema.KeySep), Limit: 10, ValueLimit: coord.MetaPrefix})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range p.Records {
		if len(rec.Value) > coord.MetaPrefix {
			t.Errorf("scan with ValueLimit returned %d bytes", len(rec.Value))
		}
	}
}
