package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/storage"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestHealthcheckSubcommand(t *testing.T) {
	addr := freeAddr(t)
	url := "-url=http://" + addr + "/healthz"
	check := func() error {
		var out bytes.Buffer
		return run(context.Background(), []string{"healthcheck", url, "-timeout=1s"}, &out, &out)
	}
	if err := check(); err == nil {
		t.Fatalf("healthcheck with no daemon = nil, want an error")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-db-location=" + filepath.Join(t.TempDir(), "sh.db"), "-http-addr=" + addr}, &logs, &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for check() != nil {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("healthcheck never succeeded; daemon log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v, want nil after cancel", err)
	}
	if err := check(); err == nil {
		t.Errorf("healthcheck after stop = nil, want an error")
	}
}

// startStoraged runs the daemon on addr until the test ends and waits until
// it is healthy.
func startStoraged(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer // written by the daemon only until done
	go func() {
		done <- run(ctx, []string{"-db-location=" + filepath.Join(t.TempDir(), "sh.db"), "-http-addr=" + addr}, io.Discard, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run = %v, want nil after cancel; log:\n%s", err, logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out bytes.Buffer
		if run(context.Background(), []string{"healthcheck", "-url=http://" + addr + "/healthz"}, &out, &out) == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("storaged never became healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsLint drives real traffic through a storaged and checks that
// what /metrics exposes follows Prometheus conventions (promlint, as
// testutil.GatherAndLint runs it) and holds the storage metrics.
func TestMetricsLint(t *testing.T) {
	addr := freeAddr(t)
	startStoraged(t, addr)
	ctx := context.Background()
	c := storage.NewClient("sh", addr, nil)
	for i := range 50 {
		w := storage.Write{Record: storage.Record{Key: []byte(fmt.Sprintf("k%03d", i)), Version: uint64(i + 1), Value: []byte("v")}}
		if _, err := c.Apply(ctx, "contexts", []storage.Write{w}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	if _, err := c.Get(ctx, "contexts", []byte("k001")); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if _, err := c.Get(ctx, "contexts", []byte("nope")); err == nil {
		t.Fatalf("Get(nope) = nil error, want not found")
	}
	if _, err := c.Scan(ctx, "contexts", storage.ScanOptions{Limit: 10}); err != nil {
		t.Fatalf("Scan: %v", err)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{
		`kvdb_bolt_keys{bucket="contexts"} 50`,
		"kvdb_bolt_size_bytes ",
		"kvdb_bolt_commit_duration_seconds_count ",
		"kvdb_bolt_disk_write_seconds_total ",
		"kvdb_bolt_disk_writes_total ",
		"kvdb_bolt_read_transactions_total ",
		`kvdb_http_requests_total{code="200",method="POST",route="/v1/apply/{bucket}"} 50`,
		`kvdb_http_request_duration_seconds_count{method="GET",route="/v1/get/{bucket}"} 2`,
		"go_build_info{",
		`kvdb_node_info{node_id="`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestChangeStreamEndsOnShutdown: a follower's change stream does not hold
// the daemon's graceful shutdown for its grace; the follower is told the
// shard is gone. With a grace of a minute, a stream that held on would make
// Shutdown give up and run return its error.
func TestChangeStreamEndsOnShutdown(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-db-location=" + filepath.Join(t.TempDir(), "sh.db"), "-http-addr=" + addr, "-shutdown-grace=1m"}, io.Discard, &logs)
	}()
	c := storage.NewClient("sh", addr, nil)
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()) != nil {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("storaged never answered; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.Apply(context.Background(), "contexts", []storage.Write{{Record: storage.Record{Key: []byte("k"), Version: 1, Value: []byte("v")}}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	following := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		var once sync.Once
		ended <- c.Changes(context.Background(), storage.ChangesRequest{}, func(b storage.ChangeBatch) error {
			once.Do(func() { close(following) })
			return nil
		})
	}()
	<-following
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run with a change stream open = %v, want nil after cancel; log:\n%s", err, logs.String())
	}
	if err := <-ended; !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Changes() across the daemon's shutdown = %v, want ErrUnavailable", err)
	}
}

// TestChangesFlags: retention flags that keep nothing are refused.
func TestChangesFlags(t *testing.T) {
	for _, flag := range []string{"-changes-retain=0", "-changes-retain=-5", "-changes-max-age=0s", "-changes-max-age=-1h"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"-db-location=" + filepath.Join(t.TempDir(), "sh.db"), "-http-addr=" + freeAddr(t), flag}, &out, &out)
		var usage *daemon.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("run(%s) = %v, want a usage error", flag, err)
		}
	}
}

// TestRouteLabels: every route the shard serves has a label of its own in
// the request metrics (bucketed paths by their prefix), and nothing else
// does: an operator reads latency by route.
func TestRouteLabels(t *testing.T) {
	for path, want := range map[string]string{
		"/v1/get/contexts":           "/v1/get/{bucket}",
		"/v1/apply/text":             "/v1/apply/{bucket}",
		"/v1/txn":                    "/v1/txn",
		"/v1/multiget/contexts":      "/v1/multiget/{bucket}",
		"/v1/purge/vectors":          "/v1/purge/{bucket}",
		"/v1/topk/vectors":           "/v1/topk/{bucket}",
		"/v1/kwstats/text":           "/v1/kwstats/{bucket}",
		"/v1/keyword/message_text":   "/v1/keyword/{bucket}",
		"/v1/scan/contexts":          "/v1/scan/{bucket}",
		"/v1/delete-prefix/contexts": "/v1/delete-prefix/{bucket}",
		"/v1/changes":                "/v1/changes",
		"/v1/changes/head":           "/v1/changes/head",
		"/v1/reindex":                "/v1/reindex",
		"/v1/snapshot":               "/v1/snapshot",
		"/v1/info":                   "/v1/info",
		"/healthz":                   "/healthz",
		"/v1/txns":                   "unmatched",
		"/v2/get/contexts":           "unmatched",
	} {
		if got := route(&http.Request{URL: &url.URL{Path: path}}); got != want {
			t.Errorf("route(%s) = %q, want %q", path, got, want)
		}
	}
}
