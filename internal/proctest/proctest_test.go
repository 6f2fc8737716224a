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
