package daemon

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/go-kvdb/go-kvdb/internal/proctest"
)

// The tests that start the daemons on port 0 learn where they serve from
// the "serving" line: it must name the port bound, not the one asked for.
func TestServeLogsTheBoundAddress(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs proctest.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), Logger(&logs, "test"), time.Second)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v, want nil after its context ends", err)
		}
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serving line with an address in the log:\n%s", logs.String())
		}
		addr, _ = proctest.ServingAddr(logs.String())
	}
	if addr != ln.Addr().String() {
		t.Errorf("ServingAddr(log) = %q, want %q (the address bound)", addr, ln.Addr().String())
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET the logged address: %v", err)
	}
	resp.Body.Close()
}
