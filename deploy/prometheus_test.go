package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestPromtoolChecksComposeConfig checks deploy/prometheus.yml with
// Prometheus' own checker, when it is installed.
func TestPromtoolChecksComposeConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
	}
	out, err := exec.Command(promtool, "check", "config", "prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config prometheus.yml: %v\n%s", err, out)
	}
}

// TestDashboardAgainstPrometheus starts a real cluster (three storaged and
// a router with replicas = 3, processes on loopback) and, beside one
// another, real Prometheus servers that scrape it under different job
// names: compose's (deploy/prometheus.yml: router, storaged), one job for
// every process, and names of their own. It drives traffic and, for each
// Prometheus, binds the dashboard's variables as Grafana would (their
// options from Prometheus, which must be exactly the Go-KVDB jobs and
// instances) and checks that every query of every panel, as Grafana would
// send it, returns data and only its role's series: with the variables'
// defaults (All), and with every option picked one by one. It also lints
// what both kinds of process expose.
func TestDashboardAgainstPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed: apt-get install prometheus (Debian package; .ci/run installs it)")
	}
	c := startCluster(t)
	namings := []struct {
		name string
		jobs []scrapeJob
	}{
		{"jobs router and storaged", []scrapeJob{{"router", c.addrs(roles[0])}, {"storaged", c.addrs(roles[1])}}},
		{"one job kvdb", []scrapeJob{{"kvdb", c.all()}}},
		{"jobs kvdb-router and kvdb-shards", []scrapeJob{{"kvdb-router", c.addrs(roles[0])}, {"kvdb-shards", c.addrs(roles[1])}}},
	}
	proms := make([]string, len(namings))
	for i, n := range namings {
		proms[i] = startPrometheus(t, promBin, n.jobs)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	driveTraffic(t, hc, c.base)

	d := loadDashboard(t)
	for i, n := range namings {
		t.Run(n.name, func(t *testing.T) { checkDashboard(t, hc, proms[i], d, c, n.jobs) })
	}
	// The search latency panel's series are both paths, not one of them.
	paths, err := promQuery(hc, proms[0], `count by (path) (kvdb_vindex_search_duration_seconds_count)`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range paths {
		got[s["path"]] = true
	}
	if !got["ann"] || !got["exact"] || len(got) != 2 {
		t.Errorf("vector search paths %v, want ann and exact", got)
	}

	// What the processes expose is lint-clean, Go runtime collectors
	// included; the metrics the dashboard tells the roles apart by are each
	// role's own, and it knows every metric both expose.
	exposed := map[string]map[string]bool{}
	for _, r := range roles {
		exposed[r.name] = map[string]bool{}
		for _, target := range c.addrs(r) {
			code, raw, err := send(hc, "GET", "http://"+target+"/metrics", nil)
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET %s/metrics = %d, %v", target, code, err)
			}
			problems, err := promlint.New(bytes.NewReader(raw)).Lint()
			if err != nil {
				t.Fatalf("lint %s: %v", target, err)
			}
			for _, p := range problems {
				t.Errorf("%s: metric %s: %s", target, p.Metric, p.Text)
			}
			for _, name := range metricFamilies(raw) {
				exposed[r.name][name] = true
			}
		}
	}
	for _, r := range roles {
		if !exposed[r.name][r.marker] || exposed[otherRole(&r).name][r.marker] {
			t.Errorf("%s exposed by %s %v, by %s %v: want by %[2]s only", r.marker, r.name, exposed[r.name][r.marker],
				otherRole(&r).name, exposed[otherRole(&r).name][r.marker])
		}
	}
	for name := range exposed[roles[0].name] {
		if strings.HasPrefix(name, "kvdb_") && exposed[roles[1].name][name] && !sharedMetric.MatchString(name) {
			t.Errorf("both roles expose %s, which sharedMetric %s does not know", name, sharedMetric)
		}
	}
}

// addrs is where the role's processes listen; all is every process.
func (c cluster) addrs(r role) []string {
	if r.name == roles[0].name {
		return []string{c.router}
	}
	return c.shards
}

func (c cluster) all() []string { return append([]string{c.router}, c.shards...) }

// scrapeJob is one job of a Prometheus configuration.
type scrapeJob struct {
	name    string
	targets []string
}

// startPrometheus starts a Prometheus that scrapes the jobs, and itself as
// job "prometheus" (a target that is not Go-KVDB), every second; it
// returns its URL.
func startPrometheus(t testing.TB, bin string, jobs []scrapeJob) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddrs(t, 1)[0]
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n")
	var names []string
	for _, j := range append(slices.Clone(jobs), scrapeJob{"prometheus", []string{addr}}) {
		names = append(names, j.name)
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: [\"%s\"]\n", j.name, strings.Join(j.targets, `", "`))
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "prometheus (jobs "+strings.Join(names, ", ")+")", bin, "--config.file="+file,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+addr, "--log.level=warn")
	waitOK(t, p, "http://"+addr+"/-/ready")
	return "http://" + addr
}

// driveTraffic writes (vectors too), hits, misses, lists, answers 404s,
// repairs, searches (ann and exact) and calls an MCP tool, then
// keeps every rate non-zero until the test ends.
func driveTraffic(t testing.TB, hc *http.Client, base string) {
	t.Helper()
	mustDo := func(method, u string, body any, want int) {
		t.Helper()
		code, raw, err := send(hc, method, u, body)
		if err != nil || code != want {
			t.Fatalf("%s %s = %d %s (%v), want %d", method, u, code, raw, err, want)
		}
	}
	mustDo("POST", base+"/api/v1/topics", map[string]string{"name": "dash"}, http.StatusCreated)
	text := strings.Repeat("words that compress well ", 30)
	for i := range 50 {
		mustDo("PUT", fmt.Sprintf("%s/api/v1/topics/dash/contexts/c-%02d", base, i), map[string]any{"content": map[string]any{"text": text}}, http.StatusCreated)
	}
	// Vectors, so the shards build ANN indexes (kvdb_vindex_*).
	mustDo("POST", base+"/api/v1/topics", map[string]string{"name": "vec"}, http.StatusCreated)
	for i := range 20 {
		emb := []float64{1, float64(i), float64(i % 3), 0.5}
		mustDo("PUT", fmt.Sprintf("%s/api/v1/topics/vec/contexts/v-%02d", base, i),
			map[string]any{"metadata": map[string]any{"embedding_model": "m"}, "content": map[string]any{"embeddings": emb}}, http.StatusCreated)
	}
	mustDo("POST", base+"/api/v1/admin/repair?wait=true", nil, http.StatusOK)
	mcpCall := mcpLister(t, base) // kvdb_mcp_tool_calls_total
	mcpCall()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			send(hc, "GET", fmt.Sprintf("%s/api/v1/topics/dash/contexts/c-%02d", base, i%60), nil) // 50..59: 404
			send(hc, "PUT", fmt.Sprintf("%s/api/v1/topics/dash/contexts/c-%02d", base, i%50), map[string]any{"content": map[string]any{"text": text}})
			if i%20 == 0 {
				send(hc, "GET", base+"/api/v1/topics/dash/contexts?limit=10", nil)
				// Both search paths: an index walk (ann) and a scan (exact).
				send(hc, "POST", base+"/api/v1/topics/vec/search", map[string]any{"embedding": []float64{1, 2, 1, 0.5}, "model": "m", "k": 3})
				send(hc, "POST", base+"/api/v1/topics/vec/search", map[string]any{"embedding": []float64{1, 2, 1, 0.5}, "model": "m", "k": 3, "exact": true})
				// Keyword and hybrid search (kvdb_search_duration_seconds{mode}, kvdb_keyword_*).
				send(hc, "POST", base+"/api/v1/topics/dash/search", map[string]any{"query": "compressing words", "mode": "keyword", "k": 3})
				send(hc, "POST", base+"/api/v1/topics/vec/search", map[string]any{"query": "anything", "embedding": []float64{1, 2, 1, 0.5}, "model": "m", "mode": "hybrid", "k": 3})
			}
			if i%100 == 0 {
				mcpCall()
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// mcpLister connects the MCP SDK's client to the router's /mcp and returns
// a function that calls the list_topics tool once (errors are ignored: the
// dashboard test sees the calls through the router's metrics).
func mcpLister(t testing.TB, base string) func() {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "kvdb-deploy-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Timeout: 10 * time.Second}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect to %s/mcp: %v", base, err)
	}
	t.Cleanup(func() { cs.Close() })
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_topics", Arguments: map[string]any{}})
	}
}

// checkDashboard checks the dashboard against one Prometheus scraping c
// under jobs; see TestDashboardAgainstPrometheus. Scrapes take a few
// seconds to list every target and give rate() two samples.
func checkDashboard(t *testing.T, hc *http.Client, promURL string, d dashboard, c cluster, jobs []scrapeJob) {
	deadline := time.Now().Add(60 * time.Second)
	want := map[string][]string{instanceVar: slices.Sorted(slices.Values(c.all()))}
	for _, r := range roles {
		for _, j := range jobs {
			if slices.ContainsFunc(j.targets, func(a string) bool { return slices.Contains(c.addrs(r), a) }) {
				want[r.jobVar] = append(want[r.jobVar], j.name)
			}
		}
	}
	ds := provisionedDatasource(t)
	var bs bindings
	for {
		var err error
		bs, err = bindVariables(hc, promURL, d.Templating.List, ds)
		diff := optionsDiff(bs, want)
		if err == nil && diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("variables: %v %s", err, diff)
			break
		}
		time.Sleep(time.Second)
	}

	qs := d.queries()
	everyOption := bindings{}
	for name, b := range bs {
		if b.v.Multi {
			b = b.pickAll()
		}
		everyOption[name] = b
	}
	found := map[int][]map[string]string{}
	for _, view := range []struct {
		name string
		bs   bindings
	}{{"defaults (All)", bs}, {"every option picked", everyOption}} {
		n := 0
		for i, series := range panelData(t, hc, promURL, qs, view.bs, deadline) {
			found[i] = append(found[i], series...)
			n++
		}
		t.Logf("%s: %d of %d queries return data", view.name, n, len(qs))
	}

	// A query reads only its role's series, even when both roles are one
	// job: its routes are routes the role served, its instances the role's.
	for _, r := range roles {
		escaped := make([]string, len(c.addrs(r)))
		for i, a := range c.addrs(r) {
			escaped[i] = promRegexEscape(a)
		}
		truth, err := promQuery(hc, promURL, fmt.Sprintf(`count by (route) (kvdb_http_requests_total{instance=~"%s"})`, strings.Join(escaped, "|")))
		if err != nil {
			t.Fatal(err)
		}
		routes := map[string]bool{}
		for _, s := range truth {
			routes[s["route"]] = true
		}
		for i, q := range qs {
			if q.role == nil || q.role.name != r.name {
				continue
			}
			alien := map[string]bool{}
			for _, s := range found[i] {
				if route, ok := s["route"]; ok && !routes[route] {
					alien["route "+route] = true
				}
				if inst, ok := s["instance"]; ok && !slices.Contains(c.addrs(r), inst) {
					alien["instance "+inst] = true
				}
			}
			if len(alien) > 0 {
				t.Errorf("%s (%s): series of %q, which are not the %s's", q, q.expr, slices.Sorted(maps.Keys(alien)), r.name)
			}
		}
	}
}

// optionsDiff says how the variables' options differ from want ("" when
// they do not).
func optionsDiff(bs bindings, want map[string][]string) string {
	var diff []string
	for name, w := range want {
		var got []string
		for _, o := range bs[name].options {
			got = append(got, o.value)
		}
		if !slices.Equal(got, w) {
			diff = append(diff, fmt.Sprintf("%s lists %q, want %q", name, got, w))
		}
	}
	slices.Sort(diff)
	return strings.Join(diff, "; ")
}

// panelData runs every query as Grafana would send it under bs until each
// returns data or the deadline passes, fails the test for each that
// never does, and returns by query index the series of those that did.
func panelData(t *testing.T, hc *http.Client, promURL string, qs []query, bs bindings, deadline time.Time) map[int][]map[string]string {
	t.Helper()
	pending := map[int]string{} // index → the query as sent
	for i, q := range qs {
		sent, err := bs.interpolate(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q, err)
		}
		pending[i] = sent
	}
	found := map[int][]map[string]string{}
	last := map[int]string{}
	for len(pending) > 0 {
		for i, sent := range pending {
			series, err := promQuery(hc, promURL, sent)
			switch {
			case err != nil:
				last[i] = err.Error()
			case len(series) == 0:
				last[i] = "no data"
			default:
				found[i] = series
				delete(pending, i)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for i, sent := range pending {
		t.Errorf("%s: query %s: %s", qs[i], sent, last[i])
	}
	if len(pending) > 0 {
		code, raw, _ := send(hc, "GET", promURL+"/api/v1/targets?state=active", nil)
		t.Logf("targets (%d): %s", code, raw)
	}
	return found
}

// promQuery runs an instant query and returns the label sets it found.
func promQuery(hc *http.Client, base, expr string) ([]map[string]string, error) {
	code, raw, err := send(hc, "GET", base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("answer %d %s: %v", code, raw, err)
	}
	if ans.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", ans.Error)
	}
	series := make([]map[string]string, len(ans.Data.Result))
	for i, r := range ans.Data.Result {
		series[i] = r.Metric
	}
	return series, nil
}

// metricFamilies lists the families a /metrics page declares (# TYPE).
func metricFamilies(page []byte) []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(page))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	return names
}
