package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/openaitest"
	"github.com/go-kvdb/go-kvdb/metrics"
	"github.com/go-kvdb/go-kvdb/router/httpapi"
	"github.com/go-kvdb/go-kvdb/router/maintenance"
	"github.com/go-kvdb/go-kvdb/router/schema"
)

var registerDecoders sync.Once

// specChecker sends requests to a router and validates every answer (and
// the requests meant to be valid) against the OpenAPI description,
// remembering which operations it saw.
type specChecker struct {
	t      *testing.T
	base   string
	doc    *openapi3.T
	routes routers.Router
	seen   map[string]map[int]bool // "METHOD /path" → statuses validated
}

func newSpecChecker(t *testing.T, base string) *specChecker {
	t.Helper()
	registerDecoders.Do(func() {
		// The stream types are ours: NDJSON is checked line by line, as
		// the array the description says; binaries are opaque.
		openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			var lines []any
			sc := bufio.NewScanner(body)
			sc.Buffer(nil, 16<<20)
			for sc.Scan() {
				var v any
				if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
					return nil, fmt.Errorf("NDJSON line %q: %w", sc.Bytes(), err)
				}
				lines = append(lines, v)
			}
			return lines, sc.Err()
		})
		openapi3filter.RegisterBodyDecoder(backup.ContentType, openapi3filter.FileBodyDecoder)
		openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.FileBodyDecoder)
		openapi3filter.RegisterBodyDecoder(backup.RecordsContentType, openapi3filter.FileBodyDecoder)
	})
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(httpapi.OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	doc.Servers = nil // match requests to any host
	rt, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("route openapi.yaml: %v", err)
	}
	return &specChecker{t: t, base: base, doc: doc, routes: rt, seen: map[string]map[int]bool{}}
}

// call sends a request; validReq says whether the request itself must
// match the description (false for the deliberately bad ones, whose
// error answers are validated all the same). It returns the answer.
func (s *specChecker) call(method, path string, body any, validReq bool, header ...string) response {
	s.t.Helper()
	var raw []byte
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		raw, ctype = []byte(b), "application/json"
	case []byte:
		raw, ctype = b, backup.RecordsContentType
	default:
		raw, _ = json.Marshal(b)
		ctype = "application/json"
	}
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(raw))
	if err != nil {
		s.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)

	// Validate against a copy of the request, its body intact.
	vreq, _ := http.NewRequest(method, s.base+path, bytes.NewReader(raw))
	vreq.Header = req.Header.Clone()
	route, params, err := s.routes.FindRoute(vreq)
	if err != nil {
		s.t.Errorf("%s %s: no operation in openapi.yaml: %v", method, path, err)
		return response{Status: resp.StatusCode, Header: resp.Header, Raw: out}
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: opts}
	if validReq {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			s.t.Errorf("%s %s: the request does not match openapi.yaml: %v", method, path, err)
		}
	}
	rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	rin.SetBodyBytes(out)
	if err := openapi3filter.ValidateResponse(context.Background(), rin); err != nil {
		s.t.Errorf("%s %s = %d %s: the answer does not match openapi.yaml: %v", method, path, resp.StatusCode, schema.Truncate(string(out)), err)
	}
	op := method + " " + route.Path
	if s.seen[op] == nil {
		s.seen[op] = map[int]bool{}
	}
	s.seen[op][resp.StatusCode] = true
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: out}
	if len(out) > 0 {
		json.Unmarshal(out, &r.JSON)
	}
	return r
}

// want fails the test unless the answer has the status.
func (s *specChecker) want(r response, status int, what string) response {
	s.t.Helper()
	if r.Status != status {
		s.t.Errorf("%s = %d %s, want %d", what, r.Status, schema.Truncate(string(r.Raw)), status)
	}
	return r
}

// errorShape checks an answer no operation describes (no route, wrong
// method) against the Error schema.
func (s *specChecker) errorShape(method, path string, status int) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		s.t.Errorf("%s %s: body is not JSON: %v", method, path, err)
	}
	if resp.StatusCode != status {
		s.t.Errorf("%s %s = %d, want %d", method, path, resp.StatusCode, status)
	}
	if err := s.doc.Components.Schemas["Error"].Value.VisitJSON(v); err != nil {
		s.t.Errorf("%s %s: the error does not match the Error schema: %v", method, path, err)
	}
}

// TestOpenAPI drives every operation of openapi.yaml against a real
// router (real shards, a fake Ollama) and validates each answer, errors
// included, against the description.
func TestOpenAPI(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	reg := metrics.NewRegistry()
	rt := tc.newRouter(t, Config{Nodes: tc.want, Registry: reg, MetricsHandler: metrics.Handler(reg), CacheBytes: 16 << 20, LLM: llmConfig(t, fake.URL)})
	srv := httptest.NewServer(rt.Handler())
	t.Cleanup(srv.Close)
	waitFor(t, "cluster map loaded", func() bool { return rt.topo.Load().Epoch > 0 })
	s := newSpecChecker(t, srv.URL)

	// Operations.
	s.want(s.call("GET", "/healthz", nil, true), 200, "healthz")
	s.want(s.call("GET", "/readyz", nil, true), 200, "readyz")
	s.want(s.call("GET", "/metrics", nil, true), 200, "metrics")
	r := s.want(s.call("GET", "/openapi.yaml", nil, true), 200, "openapi.yaml")
	if r.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(r.Raw, httpapi.OpenAPI()) {
		t.Errorf("GET /openapi.yaml: Content-Type %q, want application/yaml and the embedded file", r.Header.Get("Content-Type"))
	}
	s.want(s.call("GET", "/api/v1/cluster", nil, true), 200, "cluster")
	s.want(s.call("POST", "/api/v1/admin/repair", nil, true), 202, "repair")
	s.want(s.call("POST", "/api/v1/admin/repair?wait=true", nil, true), 200, "repair wait")
	s.want(s.call("POST", "/api/v1/admin/reindex", nil, true), 202, "reindex")
	s.want(s.call("POST", "/api/v1/admin/reload", nil, true), 202, "reload")
	s.want(s.call("POST", "/api/v1/admin/remove?shard=sh-1", nil, true), 412, "remove a configured shard")
	s.want(s.call("DELETE", "/api/v1/admin/shards/sh-1", nil, true), 412, "remove a configured shard")
	s.want(s.call("POST", "/api/v1/admin/reencrypt", nil, true), 412, "reencrypt without a key")

	// Topics.
	s.want(s.call("POST", "/api/v1/topics", `{"name":"kb","description":"docs","max_tokens":1000,"default_ttl_seconds":3600}`, true), 201, "create topic")
	s.want(s.call("POST", "/api/v1/topics", `{"name":"tmp"}`, true), 201, "create topic")
	s.want(s.call("POST", "/api/v1/topics", `{"name":"kb"}`, true), 409, "duplicate topic")
	s.want(s.call("POST", "/api/v1/topics", `{"name":"kb","colour":"red"}`, false), 400, "unknown field")
	s.want(s.call("POST", "/api/v1/topics", `{"name":"x"}`, false, "Content-Type", "text/plain"), 415, "wrong media type")
	s.want(s.call("GET", "/api/v1/topics?limit=1", nil, true), 200, "list topics")
	s.want(s.call("GET", "/api/v1/topics?limit=0", nil, false), 400, "bad limit")
	s.want(s.call("GET", "/api/v1/topics/kb", nil, true), 200, "get topic")
	s.want(s.call("GET", "/api/v1/topics/nope", nil, true), 404, "missing topic")
	s.want(s.call("GET", "/api/v1/topics/-bad", nil, false), 400, "bad topic name")
	s.want(s.call("DELETE", "/api/v1/topics/tmp", nil, true), 204, "delete topic")
	s.want(s.call("DELETE", "/api/v1/topics/tmp", nil, true), 404, "delete missing topic")

	// Contexts.
	doc := map[string]any{
		"metadata": map[string]any{"model": "llama3", "tags": []string{"a", "b"}, "ttl_seconds": 600},
		"content":  map[string]any{"text": "rivers flow to the sea", "messages": []schema.Message{{Role: "user", Content: "hi"}}},
	}
	r = s.want(s.call("POST", "/api/v1/topics/kb/contexts", doc, true), 201, "create context")
	s.want(s.call("PUT", "/api/v1/topics/kb/contexts/c1", doc, true), 201, "put new context")
	r = s.want(s.call("PUT", "/api/v1/topics/kb/contexts/c1", `{"content":{"text":"rivers and the ocean","embeddings":[0.5,0.25]},"metadata":{"embedding_model":"mine"}}`, true), 200, "replace context")
	etag := r.Header.Get("ETag")
	s.want(s.call("PUT", "/api/v1/topics/kb/contexts/c1", `{}`, true, "If-Match", `"1"`), 412, "stale If-Match")
	s.want(s.call("PUT", "/api/v1/topics/kb/contexts/c1", `{}`, true, "If-None-Match", "*"), 412, "If-None-Match on an existing context")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts", `{"metadata":{"id":"c1"}}`, true), 409, "create over an existing id")
	s.want(s.call("PUT", "/api/v1/topics/kb/contexts/c2", `{"metadata":{"ttl_seconds":60,"expires_at":"2001-01-01T00:00:00Z"}}`, false), 400, "inconsistent expiry")
	s.want(s.call("PUT", "/api/v1/topics/nope/contexts/c2", `{}`, true), 404, "context of a missing topic")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/_bulk", `{"contexts":[{"metadata":{"id":"b1"},"content":{"text":"one"}},{"metadata":{"id":"b2","tags":["x"]},"content":{"text":"two","embeddings":[0.5,0.25]}}]}`, true), 200, "bulk write")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/_bulk", `{"contexts":[{"content":{"text":"no id"}}]}`, false), 400, "bulk without ids")
	s.want(s.call("POST", "/api/v1/topics/nope/contexts/_bulk", `{"contexts":[{"metadata":{"id":"b1"}}]}`, true), 404, "bulk of a missing topic")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts/c1", nil, true), 200, "get context (miss)")
	r = s.want(s.call("GET", "/api/v1/topics/kb/contexts/c1", nil, true), 200, "get context (hit)")
	if r.Header.Get("X-Kvdb-Cache") != "hit" || r.Header.Get("ETag") != etag {
		t.Errorf("second GET: X-Kvdb-Cache %q, ETag %q; want hit, %s", r.Header.Get("X-Kvdb-Cache"), r.Header.Get("ETag"), etag)
	}
	s.want(s.call("GET", "/api/v1/topics/kb/contexts/nope", nil, true), 404, "missing context")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts?limit=1", nil, true), 200, "list contexts")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts?tag=a&tag=b&model=llama3&include=content", nil, true), 200, "list contexts filtered")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts?cursor=%21%21", nil, true), 400, "bad cursor")
	s.want(s.call("GET", "/api/v1/topics/kb/changes?since=%21%21", nil, true), 400, "bad feed token")

	// Messages, search, chat.
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/conv/messages", `{"messages":[{"role":"user","content":"hello"},{"role":"assistant","content":"hi"}]}`, true), 200, "append")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/conv/messages", `{"messages":[{"role":"robot","content":"x"}]}`, false), 400, "bad role")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts/conv/messages?last=1", nil, true), 200, "messages")
	s.want(s.call("GET", "/api/v1/topics/kb/contexts/nope/messages", nil, true), 404, "messages of a missing context")
	s.want(s.call("POST", "/api/v1/topics/kb/search", `{"query":"rivers","k":2}`, true), 200, "search by query")
	s.want(s.call("POST", "/api/v1/topics/kb/search?include=content", `{"embedding":[1,0.5],"model":"mine"}`, true), 200, "search by embedding")
	s.want(s.call("POST", "/api/v1/topics/kb/search", `{"query":"hi","scope":"messages","k":3}`, true), 200, "search of messages")
	s.want(s.call("POST", "/api/v1/topics/kb/search", `{"query":"a","embedding":[1]}`, false), 400, "query and embedding")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/chat1/chat", `{"message":"hello there"}`, true), 200, "chat")
	r = s.want(s.call("POST", "/api/v1/topics/kb/contexts/chat1/chat", `{"message":"again","stream":true}`, true), 200, "streamed chat")
	if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("streamed chat: Content-Type %q, want application/x-ndjson", ct)
	}
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/chat1/chat", `{"message":"x","model":"no-such-model"}`, true), 404, "chat with a missing model")
	s.want(s.call("POST", "/api/v1/topics/kb/contexts/chat1/chat", `{"message":""}`, false), 400, "empty message")

	// The drop-in Ollama endpoint.
	s.want(s.call("GET", "/ollama/kb/drop-in", nil, true), 200, "ollama root")
	s.want(s.call("GET", "/ollama/kb/drop-in/api/version", nil, true), 200, "ollama version")
	s.want(s.call("POST", "/ollama/kb/drop-in/api/chat", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":false}`, true), 200, "ollama chat")
	s.want(s.call("POST", "/ollama/kb/drop-in/api/chat", `{"model":"chat-model","messages":[{"role":"user","content":"more"}]}`, true), 200, "ollama chat streamed")
	s.want(s.call("POST", "/ollama/kb/drop-in/api/chat", `{"model":"no-such-model","messages":[{"role":"user","content":"x"}],"stream":false}`, true), 404, "ollama chat with a missing model")
	s.want(s.call("POST", "/ollama/kb/drop-in/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}`, true), 200, "ollama's OpenAI chat")
	s.want(s.call("POST", "/ollama/kb/drop-in/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}],"stream":true}`, true), 200, "ollama's OpenAI chat streamed")
	s.want(s.call("POST", "/ollama/kb/drop-in/v1/chat/completions", `{"messages":[{"role":"user","content":1}]}`, false), 400, "ollama's OpenAI chat with a bad message")

	// The drop-in OpenAI endpoint, on a second router whose provider is
	// an OpenAI-compatible server.
	oa := openaitest.New(t)
	oaCfg := llmConfig(t, fake.URL)
	oaClient, err := llmbridge.NewOpenAI(oa.URL, "", llmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	oaCfg.Client = oaClient
	rt2 := tc.newRouter(t, Config{Nodes: tc.want, Registry: metrics.NewRegistry(), CacheBytes: 16 << 20, LLM: oaCfg})
	srv2 := httptest.NewServer(rt2.Handler())
	t.Cleanup(srv2.Close)
	waitFor(t, "second router's cluster map loaded", func() bool { return rt2.topo.Load().Epoch > 0 })
	s.base = srv2.URL
	s.want(s.call("POST", "/openai/kb/oa/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}`, true), 200, "openai chat")
	s.want(s.call("POST", "/openai/kb/oa/v1/chat/completions", `{"model":"chat-model","messages":[{"role":"user","content":"more"}],"stream":true}`, true), 200, "openai chat streamed")
	s.want(s.call("POST", "/openai/kb/oa/v1/chat/completions", `{"model":"chat-model","messages":[]}`, false), 400, "openai chat without messages")
	s.want(s.call("POST", "/openai/kb/oa/v1/chat/completions", `{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}`, true), 404, "openai chat with a missing model")
	s.want(s.call("GET", "/openai/kb/oa/v1/models", nil, true), 200, "openai models")
	s.want(s.call("POST", "/openai/kb/oa/v1/embeddings", `{"model":"embed-a","input":"hi"}`, true), 200, "openai embeddings")
	s.base = srv.URL

	// Compression dictionaries: refused on too few contexts, then trained
	// on a corpus (whose records the backup below carries).
	s.want(s.call("GET", "/api/v1/admin/compression", nil, true), 200, "compression status")
	s.want(s.call("POST", "/api/v1/admin/compression/rewrite?wait=true", nil, true), 412, "rewrite without a dictionary")
	s.want(s.call("POST", "/api/v1/admin/compression/rewrite?wait=maybe", nil, false), 400, "rewrite?wait=maybe")
	s.want(s.call("POST", "/api/v1/admin/compression/train", nil, true), 412, "train on too few contexts")
	s.want(s.call("POST", "/api/v1/admin/compression/train?rewrite=maybe", nil, false), 400, "train?rewrite=maybe")
	must(t, call(t, "POST", srv.URL+"/api/v1/topics", map[string]any{"name": "corpus"}), 201, "create corpus")
	for i := range maintenance.TrainMinSamples + 10 {
		must(t, call(t, "PUT", fmt.Sprintf("%s/api/v1/topics/corpus/contexts/c%03d", srv.URL, i), chatDoc(i)), 201, "PUT corpus")
	}
	s.want(s.call("POST", "/api/v1/admin/compression/train?rewrite=true", nil, true), 200, "train")
	s.want(s.call("GET", "/api/v1/admin/compression", nil, true), 200, "compression status with a dictionary")
	s.want(s.call("POST", "/api/v1/admin/compression/rewrite?wait=true", nil, true), 200, "rewrite")
	s.want(s.call("POST", "/api/v1/admin/compression/rewrite", nil, true), 202, "rewrite in the background")

	// Backup and restore.
	r = s.want(s.call("GET", "/api/v1/admin/backup", nil, true), 200, "backup")
	sr, err := backup.NewStreamReader(bytes.NewReader(r.Raw))
	if err != nil {
		t.Fatal(err)
	}
	_, data, err := sr.NextSection()
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := io.ReadAll(data)
	r = s.want(s.call("POST", "/api/v1/admin/restore?dry_run=true", snap, true), 200, "restore dry run")
	s.want(s.call("POST", "/api/v1/admin/restore", snap, true), 200, "restore")
	s.want(s.call("POST", "/api/v1/admin/restore", snap[:len(snap)-1], true), 400, "truncated restore")
	s.want(s.call("POST", "/api/v1/admin/restore", `{}`, false), 415, "restore of JSON")

	// The MCP server answers JSON-RPC.
	s.want(s.call("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"spec","version":"1"}}}`, true,
		"Accept", "application/json, text/event-stream"), 200, "mcp initialize")

	// Deletes last.
	s.want(s.call("DELETE", "/api/v1/topics/kb/contexts/c1", nil, true, "If-Match", `"1"`), 412, "delete with a stale If-Match")
	s.want(s.call("DELETE", "/api/v1/topics/kb/contexts/c1", nil, true), 204, "delete context")
	s.want(s.call("DELETE", "/api/v1/topics/kb/contexts/c1", nil, true), 404, "delete missing context")

	// Answers no operation describes still have the error Shape.
	s.errorShape("GET", "/api/v1/nope", 404)
	s.errorShape("PATCH", "/api/v1/topics/kb", 405)

	// Every operation of the description was driven.
	var missing []string
	for path, item := range s.doc.Paths.Map() {
		for method := range item.Operations() {
			if len(s.seen[method+" "+path]) == 0 {
				missing = append(missing, method+" "+path)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("operations of openapi.yaml never exercised: %s", strings.Join(missing, ", "))
	}
}
