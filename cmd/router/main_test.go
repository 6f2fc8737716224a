package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

// syncBuffer is a bytes.Buffer safe for the daemon's logger and the test.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRouter runs the router with args until the test ends, and waits
// until its healthcheck subcommand succeeds.
func startRouter(t testing.TB, addr string, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- run(ctx, append([]string{"-http-addr=" + addr}, args...), logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("router run = %v, want nil after cancel", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("router did not stop within 15 s")
		}
		if t.Failed() {
			t.Logf("router log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for healthcheck(addr) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("router healthcheck never succeeded; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return logs
}

func healthcheck(addr string) error {
	var out bytes.Buffer
	return run(context.Background(), []string{"healthcheck", "-url=http://" + addr + "/healthz", "-timeout=1s"}, &out, &out)
}

func TestHealthcheckSubcommand(t *testing.T) {
	addr := freeAddr(t)
	if err := healthcheck(addr); err == nil {
		t.Fatalf("healthcheck with no router = nil, want an error")
	}
	startRouter(t, addr, "-db-location="+filepath.Join(t.TempDir(), "kvdb.db"), "-cache-size=0")
	if err := healthcheck(addr); err != nil {
		t.Fatalf("healthcheck = %v, want nil", err)
	}
}
