package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
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
