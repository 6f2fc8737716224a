package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/mcpserver"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
)

// alternate sends each request to the next of its routers in turn: one
// MCP client session spread over every router.
type alternate struct {
	hosts []string
	next  atomic.Int64
	sent  []atomic.Int64 // requests per router
}

func (a *alternate) RoundTrip(req *http.Request) (*http.Response, error) {
	i := int(a.next.Add(1)-1) % len(a.hosts)
	a.sent[i].Add(1)
	req = req.Clone(req.Context())
	req.URL.Host, req.Host = a.hosts[i], a.hosts[i]
	return http.DefaultTransport.RoundTrip(req)
}

// TestMCPStatelessOverShards: one SDK client session whose requests go
// to two routers in turn, over three shards, with the fake Ollama as the
// embedding model. The MCP server keeps no session, so every router
// answers every request; what one router's tool stores, the other's reads
// and finds.
func TestMCPStatelessOverShards(t *testing.T) {
	tc, fake := newLLMCluster(t, 3, nil)
	other := tc.newRouter(t, Config{Nodes: tc.want, CacheBytes: 16 << 20, Registry: prometheus.NewRegistry(), LLM: llmConfig(t, fake.URL)})
	srv := httptest.NewServer(other.Handler())
	t.Cleanup(srv.Close)
	waitFor(t, "second router's map", func() bool { return other.topo.Load().Epoch > 0 })

	u1, _ := url.Parse(tc.URL)
	u2, _ := url.Parse(srv.URL)
	rt := &alternate{hosts: []string{u1.Host, u2.Host}, sent: make([]atomic.Int64, 2)}
	client := mcp.NewClient(&mcp.Implementation{Name: "router-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: tc.URL + "/mcp", HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer cs.Close()
	tool := func(name string, args map[string]any, out any) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError {
			b, _ := json.Marshal(res)
			t.Fatalf("CallTool(%s, %v) = %s, %v; want success", name, args, b, err)
		}
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("CallTool(%s): structured result %s: %v", name, b, err)
		}
	}

	texts := []string{"apples and pears in the orchard", "ships sail across the ocean", "the engine of the car roars", "bread rises in the oven", "stars shine over the desert"}
	for i, text := range texts {
		var st mcpserver.StoreContextOut
		tool("store_context", map[string]any{"topic": "mem", "id": fmt.Sprintf("m%d", i), "text": text}, &st)
	}
	for i, text := range texts {
		var got mcpserver.ContextOut
		tool("get_context", map[string]any{"topic": "mem", "id": fmt.Sprintf("m%d", i)}, &got)
		if got.Content.Text != text {
			t.Errorf("get_context m%d = %q, want %q", i, got.Content.Text, text)
		}
	}
	var list mcpserver.ContextsOut
	tool("list_contexts", map[string]any{"topic": "mem", "limit": 2}, &list)
	if len(list.Contexts) != 2 || list.NextCursor == "" {
		t.Fatalf("list_contexts limit=2 = %+v, want 2 and a cursor", list)
	}
	seen := len(list.Contexts)
	cursor := list.NextCursor
	list = mcpserver.ContextsOut{}
	tool("list_contexts", map[string]any{"topic": "mem", "cursor": cursor}, &list)
	if seen += len(list.Contexts); seen != len(texts) || list.NextCursor != "" {
		t.Errorf("list_contexts over two pages = %d contexts (last cursor %q), want %d and no cursor", seen, list.NextCursor, len(texts))
	}
	var found mcpserver.SearchOut
	tool("search_memory", map[string]any{"topic": "mem", "query": "ships on the ocean", "k": 3}, &found)
	if len(found.Results) != 3 || found.Results[0].Metadata.ID != "m1" {
		t.Errorf("search_memory = %+v, want m1 first of 3", found.Results)
	}
	for i := 1; i < len(found.Results); i++ {
		if found.Results[i].Score > found.Results[i-1].Score {
			t.Errorf("search_memory results not best first: %+v", found.Results)
		}
	}
	if rt.sent[0].Load() < 3 || rt.sent[1].Load() < 3 {
		t.Errorf("requests per router = %d, %d; want both to have served the session", rt.sent[0].Load(), rt.sent[1].Load())
	}
}
