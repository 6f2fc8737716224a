package router

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kvdb/go-kvdb/router/authfile"
	"github.com/go-kvdb/go-kvdb/router/authfile/authfiletest"
)

func TestAuthRefusesWithoutAKey(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	tc := newSecureCluster(t, 1, func(c *Config) {
		c.Security.Auth = authfiletest.Load(t, file)
		c.MetricsHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("# metrics\n")) })
	})
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": "t1"}, bearerHeader(secrets["app"])...), 201, "create with a writer key")
	for _, tt := range []struct {
		name   string
		header []string
	}{
		{"no header", nil},
		{"basic auth", []string{"Authorization", "Basic YTpi"}},
		{"empty bearer", []string{"Authorization", "Bearer "}},
		{"unknown secret", bearerHeader("kvdb_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")},
		{"not a secret", bearerHeader("hunter2")},
	} {
		for _, req := range []struct{ method, path string }{
			{"GET", "/api/v1/topics"},
			{"GET", "/api/v1/topics/t1"},
			{"POST", "/api/v1/topics"},
			{"DELETE", "/api/v1/topics/t1"},
			{"GET", "/api/v1/cluster"},
			{"POST", "/api/v1/admin/repair"},
			{"GET", "/api/v1/no-such-route"},
			{"POST", "/api/v1/topics/t1/search"},
		} {
			var body any
			if req.method == "POST" {
				body = map[string]any{"name": "t2"}
			}
			r := call(t, req.method, tc.URL+req.path, body, tt.header...)
			if r.Status != 401 || r.errCode() != "unauthenticated" {
				t.Errorf("%s: %s %s = %d %s, want 401 unauthenticated", tt.name, req.method, req.path, r.Status, r.Raw)
			}
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: %s %s: no WWW-Authenticate header", tt.name, req.method, req.path)
			}
		}
		// The drop-in Ollama endpoint answers in Ollama's Shape.
		r := call(t, "POST", tc.URL+"/ollama/t1/c1/api/chat", map[string]any{"model": "m"}, tt.header...)
		if msg, _ := r.JSON["error"].(string); r.Status != 401 || msg == "" {
			t.Errorf("%s: POST /ollama/…/api/chat = %d %s, want 401 {\"error\":\"…\"}", tt.name, r.Status, r.Raw)
		}
	}
	// Nothing was created or deleted by the refused requests.
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t1", nil, bearerHeader(secrets["viewer"])...), 200, "t1 still there")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/t2", nil, bearerHeader(secrets["viewer"])...), 404, "t2 never made")
	// Probes and metrics stay open.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		must(t, call(t, "GET", tc.URL+p, nil), 200, "GET "+p+" without a key")
	}
	// A key that exists reaches the real 404.
	must(t, call(t, "GET", tc.URL+"/api/v1/no-such-route", nil, bearerHeader(secrets["viewer"])...), 404, "unknown route with a key")
}

func TestAuthRolesAndTopics(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	tc := newSecureCluster(t, 2, func(c *Config) { c.Security.Auth = authfiletest.Load(t, file) })
	root, app, viewer, teamA := bearerHeader(secrets["root"]), bearerHeader(secrets["app"]), bearerHeader(secrets["viewer"]), bearerHeader(secrets["team-a"])
	for _, name := range []string{"plain", "team-a-1"} {
		must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": name}, app...), 201, "create "+name)
		must(t, call(t, "PUT", tc.URL+"/api/v1/topics/"+name+"/contexts/c1", map[string]any{"content": map[string]any{"text": "hi"}}, app...), 201, "put in "+name)
	}
	doc := map[string]any{"content": map[string]any{"text": "x"}}
	search := map[string]any{"embedding": []float32{1, 0}}
	for _, tt := range []struct {
		who    string
		header []string
		method string
		path   string
		body   any
		want   int
	}{
		// a reader reads, searches, and changes nothing
		{"viewer", viewer, "GET", "/api/v1/topics/plain", nil, 200},
		{"viewer", viewer, "GET", "/api/v1/topics/plain/contexts/c1", nil, 200},
		{"viewer", viewer, "GET", "/api/v1/topics/plain/contexts", nil, 200},
		{"viewer", viewer, "POST", "/api/v1/topics/plain/search", search, 200},
		{"viewer", viewer, "POST", "/api/v1/topics", map[string]any{"name": "v"}, 403},
		{"viewer", viewer, "PUT", "/api/v1/topics/plain/contexts/c2", doc, 403},
		{"viewer", viewer, "POST", "/api/v1/topics/plain/contexts", doc, 403},
		{"viewer", viewer, "DELETE", "/api/v1/topics/plain/contexts/c1", nil, 403},
		{"viewer", viewer, "DELETE", "/api/v1/topics/plain", nil, 403},
		{"viewer", viewer, "POST", "/api/v1/topics/plain/contexts/c1/messages", map[string]any{"messages": []any{}}, 403},
		{"viewer", viewer, "POST", "/api/v1/topics/plain/contexts/c1/chat", map[string]any{"message": "hi"}, 403},
		{"viewer", viewer, "POST", "/ollama/plain/c1/api/chat", map[string]any{"model": "m"}, 403},
		{"viewer", viewer, "GET", "/api/v1/cluster", nil, 403},
		// a writer writes, and is no admin
		{"app", app, "POST", "/api/v1/admin/repair", nil, 403},
		{"app", app, "POST", "/api/v1/admin/reload", nil, 403},
		{"app", app, "POST", "/api/v1/admin/reencrypt", nil, 403},
		{"app", app, "POST", "/api/v1/admin/compression/train", nil, 403},
		{"app", app, "POST", "/api/v1/admin/compression/rewrite?wait=true", nil, 403},
		{"viewer", viewer, "GET", "/api/v1/admin/compression", nil, 403},
		{"app", app, "POST", "/api/v1/admin/remove?shard=sh-1", nil, 403},
		{"app", app, "GET", "/api/v1/cluster", nil, 403},
		{"app", app, "POST", "/ollama/plain/c1/api/pull", map[string]any{"model": "m"}, 403},
		{"app", app, "DELETE", "/ollama/plain/c1/api/delete", map[string]any{"model": "m"}, 403},
		{"app", app, "PUT", "/api/v1/topics/plain/contexts/c2", doc, 201},
		// a key limited to team-a-* sees nothing else, whatever its role
		{"team-a", teamA, "GET", "/api/v1/topics/team-a-1", nil, 200},
		{"team-a", teamA, "PUT", "/api/v1/topics/team-a-1/contexts/c2", doc, 201},
		{"team-a", teamA, "GET", "/api/v1/topics/plain", nil, 403},
		{"team-a", teamA, "GET", "/api/v1/topics/plain/contexts/c1", nil, 403},
		{"team-a", teamA, "GET", "/api/v1/topics/plain/contexts", nil, 403},
		{"team-a", teamA, "PUT", "/api/v1/topics/plain/contexts/c3", doc, 403},
		{"team-a", teamA, "DELETE", "/api/v1/topics/plain", nil, 403},
		{"team-a", teamA, "POST", "/api/v1/topics/plain/search", search, 403},
		{"team-a", teamA, "POST", "/api/v1/topics", map[string]any{"name": "plain-2"}, 403},
		{"team-a", teamA, "POST", "/api/v1/topics", map[string]any{"name": "team-a-2"}, 201},
		{"team-a", teamA, "GET", "/ollama/plain/c1", nil, 403},
		{"team-a", teamA, "GET", "/api/v1/topics/team-a%2F..%2Fplain", nil, 403},
		// an admin does all
		{"root", root, "GET", "/api/v1/cluster", nil, 200},
		{"root", root, "POST", "/api/v1/admin/repair?wait=true", nil, 200},
		{"root", root, "GET", "/api/v1/admin/compression", nil, 200},
		{"root", root, "POST", "/api/v1/admin/compression/train", nil, 412}, // too few contexts
	} {
		r := call(t, tt.method, tc.URL+tt.path, tt.body, tt.header...)
		if r.Status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.who, tt.method, tt.path, r.Status, r.Raw, tt.want)
			continue
		}
		if tt.want == 403 {
			if msg, _ := r.JSON["error"].(string); strings.HasPrefix(tt.path, "/ollama/") && msg == "" {
				t.Errorf("%s: %s %s = %s, want Ollama's error Shape", tt.who, tt.method, tt.path, r.Raw)
			} else if !strings.HasPrefix(tt.path, "/ollama/") && r.errCode() != "permission_denied" {
				t.Errorf("%s: %s %s = %s, want code permission_denied", tt.who, tt.method, tt.path, r.Raw)
			}
		}
	}
	// Refused writes changed nothing.
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/plain/contexts/c3", nil, root...), 404, "c3 never written")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/plain/contexts/c1", nil, root...), 200, "c1 not deleted")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics/plain-2", nil, root...), 404, "plain-2 never made")
}

func TestTopicListShowsOnlyAllowedTopics(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	tc := newSecureCluster(t, 3, func(c *Config) { c.Security.Auth = authfiletest.Load(t, file) })
	app, teamA := bearerHeader(secrets["app"]), bearerHeader(secrets["team-a"])
	var want []string
	for i := range 30 {
		name := fmt.Sprintf("b-%02d", i)
		if i%3 == 0 {
			name = fmt.Sprintf("team-a-%02d", i)
			want = append(want, name)
		}
		must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": name}, app...), 201, "create "+name)
	}
	for _, limit := range []int{1, 3, 100} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 40 {
				t.Fatalf("limit %d: more than 40 pages", limit)
			}
			r := must(t, call(t, "GET", fmt.Sprintf("%s/api/v1/topics?limit=%d&cursor=%s", tc.URL, limit, cursor), nil, teamA...), 200, "list")
			topics, _ := r.JSON["topics"].([]any)
			if len(topics) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(topics))
			}
			for _, tp := range topics {
				got = append(got, tp.(map[string]any)["name"].(string))
			}
			cursor, _ = r.JSON["next_cursor"].(string)
			if cursor == "" {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("limit %d: team-a lists %v, want %v", limit, got, want)
		}
	}
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics?limit=1000", nil, app...), 200, "list all")
	if n := len(r.JSON["topics"].([]any)); n != 30 {
		t.Errorf("app lists %d topics, want 30", n)
	}
}

func TestSetAuthReloadsKeys(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.Auth = authfiletest.Load(t, file) })
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil, bearerHeader(secrets["app"])...), 200, "app before reload")

	// A new file without app, with a new key.
	file2 := filepath.Join(t.TempDir(), "auth.toml")
	fresh, err := authfile.AddKey(file2, "fresh", authfile.RoleReader, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc.router.SetAuth(authfiletest.Load(t, file2))
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil, bearerHeader(secrets["app"])...), 401, "app after reload")
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil, bearerHeader(fresh)...), 200, "fresh after reload")
	tc.router.SetAuth(nil) // ignored: never opens up
	must(t, call(t, "GET", tc.URL+"/api/v1/topics", nil), 401, "no key after SetAuth(nil)")
}

func TestOpenRouterNeedsNoKey(t *testing.T) {
	tc := newSecureCluster(t, 1, nil)
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": "t"}), 201, "create without a key")
	must(t, call(t, "GET", tc.URL+"/api/v1/cluster", nil), 200, "cluster without a key")
}
