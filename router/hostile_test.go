package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/router/authfile/authfiletest"
	"github.com/go-kvdb/go-kvdb/router/cluster"
	"github.com/go-kvdb/go-kvdb/router/httpapi"
	"github.com/go-kvdb/go-kvdb/router/schema"
	"github.com/go-kvdb/go-kvdb/storage"
)

// rawResponse sends req (a whole HTTP/1.1 request, as bytes) on a fresh
// connection to the server at base and reads the answer. It reaches what
// http.Client would refuse to send (bad escapes, huge request lines).
func rawResponse(t testing.TB, base string, req []byte) (int, []byte, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go conn.Write(req) // the server may answer before it read it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, nil
}

// snapshot is every record of every bucket on every shard.
func snapshot(t testing.TB, tc *testCluster) string {
	t.Helper()
	var b strings.Builder
	for i, st := range tc.stores {
		for _, bucket := range cluster.Buckets {
			p, err := st.Scan(context.Background(), bucket, storage.ScanOptions{Limit: storage.MaxScanLimit, Tombstones: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				fmt.Fprintf(&b, "%d %s %q %d %v %x\n", i, bucket, r.Key, r.Version, r.Tombstone, r.Value)
			}
		}
	}
	return b.String()
}

func isErrorBody(b []byte) bool {
	var e httpapi.ErrorBody
	return json.Unmarshal(b, &e) == nil && e.Error.Code != "" && e.Error.Message != ""
}

func TestHostileInputs(t *testing.T) {
	file, secrets := authfiletest.Keys(t)
	tc := newSecureCluster(t, 2, func(c *Config) {
		c.Security.Auth = authfiletest.Load(t, file)
		c.Security.BodyTimeout = 300 * time.Millisecond
		c.MaxBodyBytes = 1 << 20
	})
	auth := "Bearer " + secrets["app"]
	must(t, call(t, "POST", tc.URL+"/api/v1/topics", map[string]any{"name": "t"}, "Authorization", auth), 201, "create topic")
	must(t, call(t, "PUT", tc.URL+"/api/v1/topics/t/contexts/c1", map[string]any{"content": map[string]any{"text": "keep me"}}, "Authorization", auth), 201, "put c1")
	before := snapshot(t, tc)

	doc := func(s string) string { return s }
	long := strings.Repeat("a", 10000)
	nums := func(n int) string { return strings.TrimSuffix(strings.Repeat("0.5,", n), ",") }
	type hostile struct {
		name   string
		method string
		path   string // sent as is on the request line
		header map[string]string
		body   string
		want   int  // 0: any 4xx
		server bool // net/http refuses it before the router sees it, in plain text
	}
	cases := []hostile{
		// path traversal and encodings in names
		{name: "dotdot topic", method: "GET", path: "/api/v1/topics/.."},
		{name: "dotdot in context path", method: "GET", path: "/api/v1/topics/t/contexts/../../topics/t"},
		{name: "encoded slash topic", method: "GET", path: "/api/v1/topics/..%2F..%2Fetc%2Fpasswd"},
		{name: "encoded slash id", method: "PUT", path: "/api/v1/topics/t/contexts/..%2Fc1", body: `{"content":{}}`},
		{name: "encoded NUL id", method: "PUT", path: "/api/v1/topics/t/contexts/c1%00x", body: `{"content":{}}`},
		{name: "encoded NUL topic", method: "DELETE", path: "/api/v1/topics/t%00"},
		{name: "bad escape", method: "GET", path: "/api/v1/topics/%ZZ", server: true},
		{name: "encoded dots", method: "DELETE", path: "/api/v1/topics/%2e%2e"},
		{name: "invalid UTF-8 in path", method: "GET", path: "/api/v1/topics/%FF%FE"},
		{name: "topic named by traversal in body", method: "POST", path: "/api/v1/topics", body: `{"name":"../t"}`},
		{name: "id by traversal in body", method: "POST", path: "/api/v1/topics/t/contexts", body: `{"metadata":{"id":"../c1"}}`},
		{name: "ollama traversal", method: "POST", path: "/ollama/..%2Ft/c1/api/chat", body: `{"model":"m","messages":[]}`},
		// overlong names, paths, headers
		{name: "overlong topic", method: "GET", path: "/api/v1/topics/" + long},
		{name: "overlong id", method: "PUT", path: "/api/v1/topics/t/contexts/" + long, body: `{"content":{}}`},
		{name: "overlong path", method: "GET", path: "/api/v1/" + strings.Repeat("x/", 200000)},
		{name: "overlong If-Match", method: "PUT", path: "/api/v1/topics/t/contexts/c1", header: map[string]string{"If-Match": long}, body: `{"content":{}}`},
		{name: "overlong Content-Type", method: "PUT", path: "/api/v1/topics/t/contexts/c1", header: map[string]string{"Content-Type": "application/" + long}, body: `{"content":{}}`},
		{name: "overlong Authorization", method: "PUT", path: "/api/v1/topics/t/contexts/c1", header: map[string]string{"Authorization": "Bearer " + long}, body: `{"content":{}}`, want: 401},
		{name: "headers over the server's cap", method: "GET", path: "/api/v1/topics/t", header: map[string]string{"X-Big": strings.Repeat("b", 2<<20)}, want: 431, server: true},
		{name: "overlong query", method: "GET", path: "/api/v1/topics?limit=" + strings.Repeat("9", 5000)},
		{name: "overlong cursor", method: "GET", path: "/api/v1/topics?cursor=" + strings.Repeat("QQ", 5000)},
		// deep nesting, huge arrays
		{name: "deep arrays", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: strings.Repeat("[", 100000)},
		{name: "deep objects", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)},
		{name: "deep in content", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"text":` + strings.Repeat("[", 50000) + `}}`},
		{name: "too many embeddings", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"embeddings":[` + nums(schema.MaxEmbeddings+1) + `]}}`},
		{name: "too many tags", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"metadata":{"tags":[` + strings.TrimSuffix(strings.Repeat(`"x",`, 1000), ",") + `]}}`},
		{name: "body over the limit", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"text":"` + strings.Repeat("x", 2<<20) + `"}}`, want: 413},
		{name: "huge search", method: "POST", path: "/api/v1/topics/t/search", body: `{"embedding":[` + nums(schema.MaxEmbeddings+1) + `]}`},
		// wrong types
		{name: "metadata a string", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"metadata":"x"}`},
		{name: "embeddings a string", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"embeddings":"x"}}`},
		{name: "content an array", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":[]}`},
		{name: "top level array", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `[]`},
		{name: "top level string", method: "POST", path: "/api/v1/topics", body: `"t2"`},
		{name: "name a number", method: "POST", path: "/api/v1/topics", body: `{"name":12}`},
		{name: "NaN", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"embeddings":[NaN]}}`},
		{name: "float32 overflow", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"embeddings":[1e39]}}`},
		{name: "k negative", method: "POST", path: "/api/v1/topics/t/search", body: `{"embedding":[1],"k":-1}`},
		{name: "messages not a list", method: "POST", path: "/api/v1/topics/t/contexts/c1/messages", body: `{"messages":{"role":"user"}}`},
		{name: "bad role", method: "POST", path: "/api/v1/topics/t/contexts/c1/messages", body: `{"messages":[{"role":"root","content":"x"}]}`},
		{name: "max_tokens a string", method: "POST", path: "/api/v1/topics", body: `{"name":"t3","max_tokens":"lots"}`},
		// invalid UTF-8, duplicate keys
		{name: "invalid UTF-8", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: "{\"content\":{\"text\":\"\xc3\x28\"}}"},
		{name: "invalid UTF-8 in a key", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: "{\"con\xfftent\":{}}"},
		{name: "duplicate keys", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"text":"a"},"content":{"text":"b"}}`},
		{name: "duplicate escaped keys", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"text":"a","t\u0065xt":"b"}}`},
		{name: "duplicate topic name", method: "POST", path: "/api/v1/topics", body: `{"name":"t4","name":"t5"}`},
		{name: "unknown field", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{"text":"x"},"owner":"root"}`},
		{name: "trailing data", method: "PUT", path: "/api/v1/topics/t/contexts/c1", body: `{"content":{}}{"content":{}}`},
		{name: "not JSON", method: "PUT", path: "/api/v1/topics/t/contexts/c1", header: map[string]string{"Content-Type": "text/plain"}, body: `hello`, want: 415},
		// bad queries
		{name: "limit too big", method: "GET", path: "/api/v1/topics?limit=99999999999999999999"},
		{name: "cursor not base64", method: "GET", path: "/api/v1/topics/t/contexts?cursor=%25%25"},
		{name: "prefix traversal", method: "GET", path: "/api/v1/topics?prefix=../"},
		{name: "include unknown", method: "GET", path: "/api/v1/topics/t/contexts?include=everything"},
		{name: "If-None-Match on delete", method: "DELETE", path: "/api/v1/topics/t/contexts/c1", header: map[string]string{"If-None-Match": "*"}},
	}
	for _, h := range cases {
		var req bytes.Buffer
		fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: kvdb\r\nConnection: close\r\n", h.method, h.path)
		hdr := map[string]string{"Authorization": auth, "Content-Type": "application/json"}
		for k, v := range h.header {
			hdr[k] = v
		}
		for k, v := range hdr {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
		fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n%s", len(h.body), doc(h.body))
		status, body, err := rawResponse(t, tc.URL, req.Bytes())
		if err != nil {
			t.Errorf("%s: no answer: %v", h.name, err)
			continue
		}
		switch {
		case h.want != 0 && status != h.want:
			t.Errorf("%s: %d %.200s, want %d", h.name, status, body, h.want)
		case status < 400 || status >= 500:
			t.Errorf("%s: %d %.200s, want a 4xx", h.name, status, body)
		case h.server:
		case strings.HasPrefix(h.path, "/ollama/"):
			if !bytes.Contains(body, []byte(`"error"`)) {
				t.Errorf("%s: %d %.200s, want Ollama's error body", h.name, status, body)
			}
		case !isErrorBody(body):
			t.Errorf("%s: %d %.200s, want the API's error body", h.name, status, body)
		}
	}

	// A body that trickles in is cut off by the body deadline: a 4xx or a
	// closed connection, never a request held open.
	conn, err := net.Dial("tcp", strings.TrimPrefix(tc.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /api/v1/topics/t/contexts/c1 HTTP/1.1\r\nHost: kvdb\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"content\":", auth)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	close(stop)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || !isErrorBody(body) {
			t.Errorf("slow body: %d %s, want a 4xx with the error body", resp.StatusCode, body)
		}
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("slow body: no answer and no close within 15 s")
	}

	if after := snapshot(t, tc); after != before {
		t.Errorf("hostile requests changed the stored data:\nbefore\n%s\nafter\n%s", before, after)
	}
	r := must(t, call(t, "GET", tc.URL+"/api/v1/topics/t/contexts/c1", nil, "Authorization", auth), 200, "c1 after the attack")
	if r.JSON["content"].(map[string]any)["text"] != "keep me" {
		t.Errorf("c1 = %s", r.Raw)
	}
}

// TestBooleanParametersAgree checks that every route with a boolean query
// parameter reads it the same way: "true" and "false" only, anything else
// a 400 that names the parameter (never a silent false).
func TestBooleanParametersAgree(t *testing.T) {
	kr := keyring(t, newKey(t))
	tc := newSecureCluster(t, 1, func(c *Config) { c.Security.Keyring = kr })
	for _, tc2 := range []struct{ method, path, param string }{
		{"POST", "/api/v1/admin/repair", "wait"},
		{"POST", "/api/v1/admin/reencrypt", "wait"},
		{"POST", "/api/v1/admin/compression/rewrite", "wait"},
		{"POST", "/api/v1/admin/compression/train", "rewrite"},
		{"POST", "/api/v1/admin/restore", "dry_run"},
	} {
		for _, v := range []string{"1", "yes", "TRUE"} {
			r := call(t, tc2.method, tc.URL+tc2.path+"?"+tc2.param+"="+v, nil)
			if r.Status != 400 || r.errCode() != "invalid_argument" || !strings.Contains(r.errMessage(), tc2.param) {
				t.Errorf("%s %s?%s=%s = %d %s, want 400 invalid_argument naming %s", tc2.method, tc2.path, tc2.param, v, r.Status, r.Raw, tc2.param)
			}
		}
	}
}
