package router

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

type bulkAnswer struct {
	Created, Replaced, Failed int
	Results                   []struct {
		ID     string
		Status int
		ETag   string
		Error  *struct{ Code, Message string }
	}
	Error *struct{ Code, Message string }
}

func bulkOf(t testing.TB, r response) bulkAnswer {
	t.Helper()
	var a bulkAnswer
	if err := json.Unmarshal(r.Raw, &a); err != nil {
		t.Fatalf("bulk answer %s: %v", r.Raw, err)
	}
	return a
}

// bulkDoc is context i of a bulk: its words, a tag, and an embedding.
func bulkDoc(i int, text string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"id": fmt.Sprintf("b%03d", i), "tags": []string{fmt.Sprintf("g%d", i%3)}, "embedding_model": "client"},
		"content":  map[string]any{"text": fmt.Sprintf("%s item%03d", text, i), "embeddings": []float32{float32(i%7) + 1, float32(i % 5), 1}},
	}
}

func bulkBody(n int, text string) map[string]any {
	docs := make([]map[string]any, n)
	for i := range docs {
		docs[i] = bulkDoc(i, text)
	}
	return map[string]any{"contexts": docs}
}

// TestBulkWrite: a bulk stores every context as its PUT would (readable,
// found by its words and its vector), again replaces them (no stale cache
// entry), and answers each one's result.
func TestBulkWrite(t *testing.T) {
	tc, _ := newLLMCluster(t, 3, func(c *LLMConfig) { c.EmbedModel = "" })
	tc.createTopic(t, "kb")
	const n = 300
	a := bulkOf(t, must(t, call(t, "POST", tc.URL+"/api/v1/topics/kb/contexts/_bulk", bulkBody(n, "first")), 200, "bulk"))
	if a.Created != n || a.Replaced != 0 || a.Failed != 0 || len(a.Results) != n || a.Error != nil {
		t.Fatalf("bulk answer: %d created, %d replaced, %d failed, %d results, error %v; want %d created", a.Created, a.Replaced, a.Failed, len(a.Results), a.Error, n)
	}
	for i, r := range a.Results {
		g := must(t, call(t, "GET", tc.URL+"/api/v1/topics/kb/contexts/"+r.ID, nil), 200, "GET "+r.ID)
		if r.ID != fmt.Sprintf("b%03d", i) || r.Status != 201 || g.Header.Get("ETag") != r.ETag || !strings.Contains(string(g.Raw), fmt.Sprintf("first item%03d", i)) {
			t.Errorf("result %d = %+v; GET %s %s", i, r, g.Header.Get("ETag"), g.Raw)
		}
	}
	if got := searchFor(t, tc, "kb", "", map[string]any{"query": "item042", "mode": "keyword", "k": 3}); len(got) != 1 || got[0].Metadata.ID != "b042" {
		t.Errorf("keyword search for item042 = %+v, want b042", got)
	}
	if got := searchFor(t, tc, "kb", "", map[string]any{"embedding": []float32{7, 0, 1}, "model": "client", "k": 100, "mode": "vector", "exact": true}); len(got) != 100 {
		t.Errorf("vector search found %d contexts, want 100", len(got))
	}
	vectors := 0
	for s := range tc.stores {
		vectors += countVectors(t, tc, s)
	}
	if vectors != n {
		t.Errorf("the shards hold %d vectors, want %d", vectors, n)
	}

	// Again, changed: each one replaced; the cached first versions (read
	// above) are never served.
	a = bulkOf(t, must(t, call(t, "POST", tc.URL+"/api/v1/topics/kb/contexts/_bulk", bulkBody(n, "second")), 200, "second bulk"))
	if a.Created != 0 || a.Replaced != n {
		t.Errorf("second bulk: %d created, %d replaced; want %d replaced", a.Created, a.Replaced, n)
	}
	for i, r := range a.Results {
		g := must(t, call(t, "GET", tc.URL+"/api/v1/topics/kb/contexts/"+r.ID, nil), 200, "GET "+r.ID)
		if r.Status != 200 || g.Header.Get("ETag") != r.ETag || !strings.Contains(string(g.Raw), fmt.Sprintf("second item%03d", i)) {
			t.Errorf("after the second bulk, %s: result %+v; GET %s %s", r.ID, r, g.Header.Get("ETag"), g.Raw)
		}
	}
	if got := searchFor(t, tc, "kb", "", map[string]any{"query": "first", "mode": "keyword", "k": 3}); len(got) != 0 {
		t.Errorf("keyword search for the replaced words = %+v, want nothing", got)
	}
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/nope/contexts/_bulk", bulkBody(2, "x")), 404, "bulk of a missing topic")
}

// TestBulkRefusesBadInput: one bad document refuses the whole bulk with a
// 400 naming it, and nothing of the bulk is written.
func TestBulkRefusesBadInput(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	tc.createTopic(t, "kb")
	withItem := func(i int, doc any) map[string]any {
		b := bulkBody(10, "bad")
		b["contexts"].([]map[string]any)[i] = doc.(map[string]any)
		return b
	}
	tooMany := bulkBody(1001, "x")
	for _, tt := range []struct {
		name string
		body any
		want string
	}{
		{"no contexts", `{"contexts":[]}`, "want 1..1000"},
		{"too many", tooMany, "1001 documents"},
		{"not a list", `{"contexts":{}}`, "contexts"},
		{"unknown field", `{"contexts":[{"metadata":{"id":"a"}}],"upsert":true}`, "upsert"},
		{"no id", withItem(4, map[string]any{"content": map[string]any{"text": "x"}}), "contexts[4]: field \"metadata.id\" is required"},
		{"bad id", withItem(5, map[string]any{"metadata": map[string]any{"id": "-x"}}), "contexts[5]: context id"},
		{"twice", withItem(6, map[string]any{"metadata": map[string]any{"id": "b002"}}), "contexts[6]: id \"b002\" is also contexts[2]'s"},
		{"bad field", withItem(7, map[string]any{"metadata": map[string]any{"id": "z", "ttl_seconds": -5}}), "contexts[7]"},
		{"bad embedding", withItem(8, map[string]any{"metadata": map[string]any{"id": "z"}, "content": map[string]any{"embeddings": []any{1, "x"}}}), "contexts"},
		{"duplicate key", `{"contexts":[{"metadata":{"id":"a","id":"b"}}]}`, "appears twice"},
		{"contexts twice", `{"contexts":[{"metadata":{"id":"a"}}],"contexts":[{"metadata":{"id":"b"}}]}`, "\"contexts\" appears twice"},
		{"not an object", `[{"metadata":{"id":"a"}}]`, "must be an object"},
		{"trailing data", `{"contexts":[{"metadata":{"id":"a"}}]} {}`, "data after"},
	} {
		r := call(t, "POST", tc.URL+"/api/v1/topics/kb/contexts/_bulk", tt.body)
		if r.Status != 400 || r.errCode() != "invalid_argument" || !strings.Contains(r.errMessage(), tt.want) {
			t.Errorf("%s: bulk = %d %s, want 400 saying %q", tt.name, r.Status, r.Raw, tt.want)
		}
	}
	r := call(t, "POST", tc.URL+"/api/v1/topics/kb/contexts/_bulk", `{"contexts":[{"metadata":{"id":"a"}}]}`, "Content-Type", "text/plain")
	if r.Status != 415 {
		t.Errorf("bulk as text/plain = %d %s, want 415", r.Status, r.Raw)
	}
	if got := totalRecords(t, tc); got["contexts"] != 0 || got["text"] != 0 || got["vectors"] != 0 {
		t.Errorf("after refused bulks the shards hold %v, want nothing", got)
	}
}

// TestBulkWithAShardDown: with a shard down (one replica) the contexts it
// owns are not stored: the answer is 503 with the API's error, each result
// says which were stored, and those are; sent again once the shard is back,
// the same bulk stores everything.
func TestBulkWithAShardDown(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{})
	// Topics whose own record sh-2 does not hold: the bulk reads it first.
	var topics []string
	for i := range 6 {
		topics = append(topics, fmt.Sprintf("kb%d", i))
		tc.createTopic(t, topics[i])
	}
	tc.faults[1].down.Store(true)
	const n = 60
	var r response
	var a bulkAnswer
	topic := ""
	for _, name := range topics {
		r = call(t, "POST", tc.URL+"/api/v1/topics/"+name+"/contexts/_bulk", bulkBody(n, "x"))
		if r.Status != 503 {
			t.Fatalf("bulk with sh-2 down = %d %s, want 503", r.Status, r.Raw)
		}
		if a = bulkOf(t, r); a.Created > 0 {
			topic = name
			break
		}
	}
	if topic == "" {
		t.Fatalf("every topic's record is on sh-2; last answer %s", r.Raw)
	}
	if a.Error == nil || a.Error.Code != "unavailable" || !strings.Contains(a.Error.Message, fmt.Sprintf("of %d contexts not stored", n)) {
		t.Fatalf("bulk with sh-2 down = %d %s, want 503 unavailable", r.Status, r.Raw)
	}
	if a.Failed == 0 || a.Created+a.Failed != n {
		t.Fatalf("bulk with sh-2 down: %d created, %d failed of %d; want some of each", a.Created, a.Failed, n)
	}
	for _, res := range a.Results {
		g := call(t, "GET", tc.URL+"/api/v1/topics/"+topic+"/contexts/"+res.ID, nil)
		switch {
		case res.Status == 201 && g.Status != 200:
			t.Errorf("%s answered 201 in the bulk, then GET = %d", res.ID, g.Status)
		case res.Status == 503 && (res.Error == nil || res.Error.Code != "unavailable" || res.ETag != ""):
			t.Errorf("%s not stored: result %+v, want its unavailable error and no ETag", res.ID, res)
		case res.Status != 201 && res.Status != 503:
			t.Errorf("%s: result %+v, want 201 or 503", res.ID, res)
		}
	}
	tc.faults[1].down.Store(false)
	waitFor(t, "sh-2 up", func() bool { return tc.router.topo.Load().All[1].Up() })
	a = bulkOf(t, must(t, call(t, "POST", tc.URL+"/api/v1/topics/"+topic+"/contexts/_bulk", bulkBody(n, "x")), 200, "bulk again"))
	if a.Failed != 0 || a.Created+a.Replaced != n || a.Replaced == 0 {
		t.Errorf("bulk again: %+v, want every context stored, those stored before replaced", a)
	}
}
