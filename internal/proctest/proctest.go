// Package proctest holds what the tests that start real processes share:
// a buffer that collects a process's output while the test reads it, free
// loopback addresses to listen on, and the address a daemon started on
// port 0 reports. It imports nothing of the project.
package proctest

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for a process's writes and a test's
// reads at once.
type SyncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddrs returns n distinct loopback addresses that were free a moment
// ago. All listeners are held until every port is picked, so no two are
// the same.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	lns := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		lns[i], addrs[i] = ln, ln.Addr().String()
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

// ServingAddr finds, in a daemon's log, the address it serves on: the
// "serving" line cmd/internal/daemon writes once it has bound its port
// (addr=host:port), once the whole line is written. A test that starts a daemon on port 0 reads it there,
// so no other process can take the port between picking and binding it.
func ServingAddr(log string) (addr string, ok bool) {
	for line := range strings.Lines(log) {
		if !strings.HasSuffix(line, "\n") || !strings.Contains(line, " msg=serving ") {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if a, found := strings.CutPrefix(f, "addr="); found {
				return a, true
			}
		}
	}
	return "", false
}

// WaitServingAddr waits until the log of a daemon started on port 0 names
// the address it serves on (see ServingAddr) and returns it. The test
// fails if the daemon exits first (done is closed) or timeout passes.
func WaitServingAddr(t testing.TB, name string, log *SyncBuffer, done <-chan struct{}, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if addr, ok := ServingAddr(log.String()); ok {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no serving address in its log within %s", name, timeout)
		}
		select {
		case <-done:
			t.Fatalf("%s exited before it served", name)
		case <-time.After(25 * time.Millisecond):
		}
	}
}
