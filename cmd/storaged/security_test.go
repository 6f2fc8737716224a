package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/cmd/internal/daemon"
	"github.com/go-kvdb/go-kvdb/storage"
)

func TestStoragedRefusesOpenNonLoopback(t *testing.T) {
	t.Setenv(daemon.TokenEnv, "")
	dbFile := filepath.Join(t.TempDir(), "sh.db")
	var out bytes.Buffer
	err := run(context.Background(), []string{"-db-location=" + dbFile, "-http-addr=0.0.0.0:0"}, &out, &out)
	var usage *daemon.UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "-insecure") {
		t.Fatalf("storaged on 0.0.0.0 without a token = %v, want a usage error naming -insecure", err)
	}
	if _, statErr := os.Stat(dbFile); statErr == nil {
		t.Errorf("the refused daemon created its BoltDB file")
	}
}

func TestStoragedWithTokenRefusesRequestsWithout(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	const token = "a-cluster-token-of-enough-bytes"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-db-location=" + filepath.Join(dir, "sh.db"), "-http-addr=" + addr, "-cluster-token-file=" + tokenFile}, &logs, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("storaged did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz") // open without the token
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("storaged never healthy: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	bg := context.Background()
	w := []storage.Write{{Record: storage.Record{Key: []byte("k"), Version: 1, Value: []byte("v")}}}
	bare := storage.NewClient("sh-1", addr, nil)
	if _, err := bare.Apply(bg, "things", w); !errors.Is(err, storage.ErrUnauthenticated) {
		t.Fatalf("Apply without the token = %v, want ErrUnauthenticated", err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /metrics without the token = %d, want 200", resp.StatusCode)
	}
	closed := storage.NewClient("sh-1", addr, &http.Client{Transport: &storage.TokenTransport{Token: token}})
	if _, err := closed.Get(bg, "things", []byte("k")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get with the token after a refused Apply = %v, want ErrNotFound (nothing written)", err)
	}
	if _, err := closed.Apply(bg, "things", w); err != nil {
		t.Errorf("Apply with the token = %v", err)
	}
}
