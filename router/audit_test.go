package router

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/authfile/authfiletest"
	"github.com/go-kvdb/go-kvdb/router/httpapi"
)

// auditBuffer collects audit lines.
type auditBuffer struct {
	mu    sync.Mutex // guards buf and gate
	buf   bytes.Buffer
	gate  chan struct{} // when set, a Write signals entered and waits for it
	entry chan struct{}
}

func (a *auditBuffer) Write(p []byte) (int, error) {
	a.mu.Lock()
	gate, entry := a.gate, a.entry
	a.mu.Unlock()
	if gate != nil {
		entry <- struct{}{}
		<-gate
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.Write(p)
}

func (a *auditBuffer) lines(t testing.TB) []httpapi.AuditLine {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []httpapi.AuditLine
	for _, l := range strings.Split(strings.TrimSpace(a.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var al httpapi.AuditLine
		if err := json.Unmarshal([]byte(l), &al); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, al)
	}
	return out
}

func (a *auditBuffer) raw() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.String()
}

func TestAuditLog(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	audit := &auditBuffer{}
	tc := newSecureCluster(t, 1, func(c *Config) {
		c.Security.Auth = authfiletest.Load(t, file)
		c.Security.Audit = audit
	})
	app, viewer := bearerHeader(secrets["app"]), bearerHeader(secrets["viewer"])
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": "t"}, app...), 201, "create")
	r := must(t, call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/c1", map[string]any{"content": map[string]any{"text": "x"}},
		append(app, "X-Request-Id", "client-req-1")...), 201, "put")
	if got := r.Header.Get("X-Request-Id"); got != "client-req-1" {
		t.Errorf("X-Request-Id echoed = %q, want client-req-1", got)
	}
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil, viewer...), 200, "read (not audited)")
	must(t, call(t, "POST", tc.URL+"/api/v1/topics/t/search", map[string]any{"embedding": []float32{1}}, viewer...), 200, "search (a read)")
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/nope/contexts/c1", map[string]any{"content": map[string]any{}}, app...), 404, "failed mutation")
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/t/contexts/c1", nil, viewer...), 403, "forbidden")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil, "Authorization", "Bearer kvdb_0000000000000000_nope", "X-Request-Id", "bad id with spaces"), 401, "unknown key")
	must(t, call(t, "DELETE", tc.URL+"/api/v1/topics/t/contexts/c1", nil, app...), 204, "delete")

	lines := audit.lines(t)
	type want struct {
		event, key, method, route, topic, id string
		status                               int
	}
	wants := []want{
		{"mutation", "app", "POST", "/api/v1/topics", "", "", 201},
		{"mutation", "app", "PUT", "/api/v1/topics/:topic/contexts/:id", "t", "c1", 201},
		{"mutation", "app", "PUT", "/api/v1/topics/:topic/contexts/:id", "nope", "c1", 404},
		{"auth_failure", "", "DELETE", "/api/v1/topics/:topic/contexts/:id", "t", "c1", 403},
		{"auth_failure", "", "GET", "/api/v1/topics", "", "", 401},
		{"mutation", "app", "DELETE", "/api/v1/topics/:topic/contexts/:id", "t", "c1", 204},
	}
	if len(lines) != len(wants) {
		t.Fatalf("audit has %d lines, want %d:\n%s", len(lines), len(wants), audit.raw())
	}
	for i, w := range wants {
		l := lines[i]
		key := w.key
		if w.status == 403 {
			key = "viewer" // authenticated, then refused
		}
		if l.Event != w.event || l.Key != key || l.Method != w.method || l.Route != w.route || l.Topic != w.topic || l.Context != w.id || l.Status != w.status {
			t.Errorf("audit line %d = %+v, want %+v (key %s)", i, l, w, key)
		}
		if l.ClientIP != "127.0.0.1" || l.RequestID == "" || l.Time == "" {
			t.Errorf("audit line %d = %+v: want client_ip, request_id and time", i, l)
		}
	}
	if lines[1].RequestID != "client-req-1" {
		t.Errorf("request id of the PUT = %q, want the client's", lines[1].RequestID)
	}
	if lines[4].RequestID == "bad id with spaces" {
		t.Errorf("a malformed X-Request-Id was kept")
	}
	for name, sec := range secrets {
		if strings.Contains(audit.raw(), sec) {
			t.Errorf("the audit log holds the secret of %s", name)
		}
	}
}

// TestAuditLineBeforeAnswer: the line of a mutation is written before the
// client can see the answer, so every acknowledged change is in the trail.
func TestAuditLineBeforeAnswer(t *testing.T) {
	audit := &auditBuffer{gate: make(chan struct{}), entry: make(chan struct{})}
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.Audit = audit })
	gate := audit.gate
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", tc.URL+"/api/v1/topics", strings.NewReader(`{"name":"t"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-audit.entry // the line is being written...
	select {
	case code := <-answered:
		t.Fatalf("the client got %d before the audit line was written", code)
	default:
	}
	audit.mu.Lock()
	audit.gate = nil // later lines pass
	audit.mu.Unlock()
	close(gate)
	if code := <-answered; code != 201 {
		t.Fatalf("create = %d, want 201", code)
	}
	if lines := audit.lines(t); len(lines) != 1 || lines[0].Status != 201 || lines[0].Key != "" {
		t.Errorf("audit = %+v, want one line with status 201 and no key (open router)", lines)
	}
}
