package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/client"
	"github.com/go-kvdb/go-kvdb/llmbridge"
	"github.com/go-kvdb/go-kvdb/llmbridge/ollamatest"
	"github.com/go-kvdb/go-kvdb/router"
)

func TestTopicsAndContexts(t *testing.T) {
	tc := newCluster(t, 2, 1, router.LLMConfig{})
	u := tc.URL
	out := mustCtl(t, u, "", "topics", "create", "docs", "-description", "my docs", "-default-ttl", "3600")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "my docs") || !strings.Contains(out, "1h0m0s") {
		t.Errorf("topics create printed %q, want a table with the topic", out)
	}
	mustCtl(t, u, "", "topics", "create", "other")
	var topics []client.Topic
	if err := json.Unmarshal([]byte(mustCtl(t, u, "", "-o", "json", "topics", "list")), &topics); err != nil || len(topics) != 2 {
		t.Errorf("topics list -o json = %v (%v), want 2 topics", topics, err)
	}
	if out := mustCtl(t, u, "", "topics", "list", "-prefix", "oth"); strings.Contains(out, "docs") || !strings.Contains(out, "other") {
		t.Errorf("topics list -prefix oth printed %q, want only other", out)
	}

	// A document from stdin and from a file.
	out = mustCtl(t, u, `{"metadata":{"tags":["a"]},"content":{"text":"hello"}}`, "contexts", "put", "docs", "c1")
	if !strings.Contains(out, "created") {
		t.Errorf("contexts put printed %q, want created", out)
	}
	file := filepath.Join(t.TempDir(), "doc.json")
	os.WriteFile(file, []byte(`{"content":{"text":"from a file","messages":[{"role":"user","content":"hi"}]}}`), 0o600)
	mustCtl(t, u, "", "contexts", "put", "docs", "c2", "-f", file)
	out = mustCtl(t, u, `{"content":{"text":"no id"}}`, "-o", "json", "contexts", "put", "docs")
	var made client.Document
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.Metadata.ID == "" {
		t.Errorf("contexts put without an id printed %q, want the stored document with an id", out)
	}
	out = mustCtl(t, u, "", "contexts", "get", "docs", "c2")
	if !strings.Contains(out, "from a file") || !strings.Contains(out, "user: hi") || !strings.Contains(out, "expires:") {
		t.Errorf("contexts get printed %q", out)
	}
	var docs []client.Document
	json.Unmarshal([]byte(mustCtl(t, u, "", "contexts", "list", "docs", "-o", "json", "-content")), &docs)
	// Generated ids (timestamps in hex) sort before c1.
	if len(docs) != 3 || docs[1].Metadata.ID != "c1" || docs[1].Content.Text != "hello" || docs[1].Metadata.ExpiresAt.IsZero() {
		t.Errorf("contexts list -content -o json = %+v, want 3 with content and the topic's expiry", docs)
	}
	if out := mustCtl(t, u, "", "contexts", "list", "docs", "-tag", "a"); !strings.Contains(out, "c1") || strings.Contains(out, "c2") {
		t.Errorf("contexts list -tag a printed %q, want c1 only", out)
	}
	if out := mustCtl(t, u, "", "contexts", "list", "docs", "-limit", "1"); strings.Count(out, "\n") != 2 {
		t.Errorf("contexts list -limit 1 printed %q, want a header and one row", out)
	}
	mustCtl(t, u, "", "contexts", "delete", "docs", "c1")
	mustCtl(t, u, "", "topics", "delete", "other")

	// Error answers exit 1 with the router's message; usage errors exit 2.
	for _, tt := range []struct {
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"", []string{"contexts", "get", "docs", "c1"}, 1, "not found"},
		{"", []string{"topics", "create", "docs"}, 1, "already exists"},
		{`{"content":{}}`, []string{"contexts", "put", "docs", "c2", "-if-none-match"}, 1, "already exists"},
		{"", []string{"topics", "get", "gone"}, 1, "not_found"},
		{"", []string{"topics"}, 2, "which one"},
		{"", []string{"frobnicate"}, 2, "unknown command"},
		{"", []string{"topics", "get"}, 2, "want NAME"},
		{"", []string{"topics", "get", "a", "b"}, 2, "want NAME"},
		{"", []string{"-o", "yaml", "cluster"}, 2, "table or json"},
		{"", []string{"topics", "list", "-nope"}, 2, "flag provided but not defined"},
		{`{"content":{"colour":"red"}}`, []string{"contexts", "put", "docs", "x"}, 2, "unknown field"},
		{"", []string{"contexts", "put", "docs", "x", "-f", "/no/such/file"}, 2, "no such file"},
		{"", []string{"backup"}, 2, "-o FILE is required"},
	} {
		r := ctl(t, u, tt.stdin, tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.msg) {
			t.Errorf("kvdbctl %s = exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.code, tt.msg)
		}
	}
	if r := ctl(t, "http://127.0.0.1:1", "", "cluster"); r.code != 1 || !strings.Contains(r.stderr, "unavailable") {
		t.Errorf("kvdbctl against nothing = exit %d %q, want 1 unavailable", r.code, r.stderr)
	}
}

func TestURLFromEnvironment(t *testing.T) {
	tc := newCluster(t, 1, 1, router.LLMConfig{})
	t.Setenv("KVDB_URL", tc.URL)
	var out, errb strings.Builder
	err := run(t.Context(), []string{"cluster"}, strings.NewReader(""), &out, &errb)
	if err != nil || !strings.Contains(out.String(), "sh-1") {
		t.Errorf("kvdbctl cluster with KVDB_URL set = %v, %q, want the cluster", err, out.String())
	}
}

func TestClusterSearchChat(t *testing.T) {
	fake := ollamatest.New(t)
	llm, err := llmbridge.New(fake.URL, llmbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tc := newCluster(t, 3, 2, router.LLMConfig{Client: llm, ChatModel: "chat-model", EmbedModel: "embed-a"})
	u := tc.URL
	out := mustCtl(t, u, "", "cluster")
	for _, want := range []string{"sharded", "replicas:  2", "sh-1", "sh-2", "sh-3", "up"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster printed %q, want %q in it", out, want)
		}
	}
	mustCtl(t, u, "", "topics", "create", "kb")
	mustCtl(t, u, `{"content":{"text":"rivers flow to the ocean"}}`, "contexts", "put", "kb", "rivers")
	mustCtl(t, u, `{"content":{"text":"a piano has keys"}}`, "contexts", "put", "kb", "piano")
	out = mustCtl(t, u, "", "search", "kb", "-k", "1", "-content", "rivers", "ocean")
	if !strings.Contains(out, "rivers flow") || strings.Contains(out, "piano") {
		t.Errorf("search printed %q, want the rivers context only", out)
	}
	r := ctl(t, u, "", "chat", "kb", "conv", "hello", "world")
	if r.code != 0 || r.stdout != "You said: hello world\n" || !strings.Contains(r.stderr, "2 messages stored") {
		t.Errorf("chat = exit %d, stdout %q, stderr %q; want the streamed answer", r.code, r.stdout, r.stderr)
	}
	out = mustCtl(t, u, "", "-o", "json", "chat", "kb", "conv", "again")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last client.ChatChunk
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if len(lines) < 2 || !last.Done || last.MessagesCount != 4 || last.ETag == "" {
		t.Errorf("chat -o json printed %q, want NDJSON pieces ending with done", out)
	}
	if r := ctl(t, u, "", "chat", "kb", "conv", "-model", "no-such-model", "hi"); r.code != 1 || !strings.Contains(r.stderr, "no-such-model") {
		t.Errorf("chat with an unknown model = exit %d, %q, want 1 naming the model", r.code, r.stderr)
	}
}
