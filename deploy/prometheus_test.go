package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
// a router with replicas = 3, processes on loopback) and a real Prometheus
// scraping it under the job names of deploy/prometheus.yml, drives traffic,
// and checks that every query of every dashboard panel returns data
// through Prometheus' HTTP API. It also lints what both kinds of process
// expose.
func TestDashboardAgainstPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed: apt-get install prometheus (Debian package; .ci/run installs it)")
	}
	router, storaged := binaries(t)
	dir := t.TempDir()
	addrs := freeAddrs(t, 5)
	shardAddrs, routerAddr, promAddr := addrs[:3], addrs[3], addrs[4]

	var toml strings.Builder
	toml.WriteString("replicas = 3\n")
	for i, a := range shardAddrs {
		fmt.Fprintf(&toml, "\n[[shards]]\nname = \"sh-%d\"\nidx = %d\naddress = %q\n", i+1, i, a)
	}
	config := filepath.Join(dir, "sharding.toml")
	if err := os.WriteFile(config, []byte(toml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, a := range shardAddrs {
		p := start(t, fmt.Sprintf("storaged sh-%d", i+1), storaged,
			"-db-location="+filepath.Join(dir, fmt.Sprintf("sh-%d.db", i+1)), "-http-addr="+a)
		waitOK(t, p, "http://"+a+"/healthz")
	}
	rp := start(t, "router", router, "-config-file="+config, "-http-addr="+routerAddr, "-cache-size=16777216")
	base := "http://" + routerAddr
	waitOK(t, rp, base+"/readyz")

	promConfig := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: router
    static_configs:
      - targets: [%q]
  - job_name: storaged
    static_configs:
      - targets: [%s]
`, routerAddr, `"`+strings.Join(shardAddrs, `", "`)+`"`)
	promFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promFile, []byte(promConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	pp := start(t, "prometheus", promBin, "--config.file="+promFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	promURL := "http://" + promAddr
	waitOK(t, pp, promURL+"/-/ready")

	// Traffic: writes, hits, misses, lists, 404s, a repair; and a loop that
	// keeps every rate non-zero until the checks are done.
	hc := &http.Client{Timeout: 10 * time.Second}
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
	mustDo("POST", base+"/api/v1/admin/repair?wait=true", nil, http.StatusOK)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			send(hc, "GET", fmt.Sprintf("%s/api/v1/topics/dash/contexts/c-%02d", base, i%60), nil) // 50..59: 404
			send(hc, "PUT", fmt.Sprintf("%s/api/v1/topics/dash/contexts/c-%02d", base, i%50), map[string]any{"content": map[string]any{"text": text}})
			if i%20 == 0 {
				send(hc, "GET", base+"/api/v1/topics/dash/contexts?limit=10", nil)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Every panel's every query must return data; scrapes take a few
	// seconds to give rate() two samples.
	d := loadDashboard(t)
	pending := map[string]string{} // expr → panel title
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			pending[tg.Expr] = p.Title
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	last := map[string]string{}
	for len(pending) > 0 && time.Now().Before(deadline) {
		for expr := range pending {
			n, err := promQuery(hc, promURL, expr)
			if err != nil {
				last[expr] = err.Error()
				continue
			}
			if n > 0 {
				delete(pending, expr)
				continue
			}
			last[expr] = "no data"
		}
		time.Sleep(time.Second)
	}
	for expr, title := range pending {
		t.Errorf("panel %q: query %s: %s", title, expr, last[expr])
	}
	if len(pending) > 0 {
		if n, _ := promQuery(hc, promURL, "up"); n > 0 {
			code, raw, _ := send(hc, "GET", promURL+"/api/v1/targets?state=active", nil)
			t.Logf("targets (%d): %s", code, raw)
		}
	}

	// What the processes expose is lint-clean, Go runtime collectors included.
	for _, target := range append([]string{routerAddr}, shardAddrs...) {
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
	}
}

// promQuery runs an instant query and returns how many series it found.
func promQuery(hc *http.Client, base, expr string) (int, error) {
	code, raw, err := send(hc, "GET", base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, err
	}
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return 0, fmt.Errorf("answer %d %s: %v", code, raw, err)
	}
	if ans.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s", ans.Error)
	}
	return len(ans.Data.Result), nil
}
