package proctest

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

func TestFreeAddrsAreDistinctAndFree(t *testing.T) {
	addrs := FreeAddrs(t, 8)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Errorf("FreeAddrs returned %s twice", a)
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("listen on %s: %v", a, err)
			continue
		}
		ln.Close()
	}
}

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { fmt.Fprintf(&b, "%d\n", i) })
	}
	wg.Wait()
	if got := len(b.String()); got != 20 {
		t.Errorf("len(String()) = %d, want 20", got)
	}
}

func TestServingAddr(t *testing.T) {
	tests := []struct {
		log, want string
		ok        bool
	}{
		{"time=x level=INFO msg=serving component=router addr=127.0.0.1:41234\n", "127.0.0.1:41234", true},
		{"time=x level=INFO msg=\"shard open\" component=storaged\ntime=y level=INFO msg=serving component=storaged addr=127.0.0.1:5\n", "127.0.0.1:5", true},
		{"time=x level=INFO msg=\"shard open\" component=storaged addr=127.0.0.1:6\n", "", false}, // not the serving line
		{"time=x level=INFO msg=serving component=router addr=127.0.0.1:4", "", false},            // half a line: the port may go on
		{"", "", false},
	}
	for _, tt := range tests {
		if got, ok := ServingAddr(tt.log); got != tt.want || ok != tt.ok {
			t.Errorf("ServingAddr(%q) = %q, %v, want %q, %v", tt.log, got, ok, tt.want, tt.ok)
		}
	}
}
