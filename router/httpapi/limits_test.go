package httpapi

import (
	"fmt"
	"testing"
	"time"
)

func TestLimitersStayBounded(t *testing.T) {
	l := newLimiters(64, time.Minute)
	now := time.Now()
	for i := range 10000 {
		l.allow(fmt.Sprintf("ip:%d", i), 5, now)
	}
	if n := l.len(); n > 64 {
		t.Errorf("limiters after 10000 callers = %d, want at most 64", n)
	}
	// Idle callers are swept.
	l.allow("fresh", 5, now.Add(2*time.Minute))
	if n := l.len(); n != 1 {
		t.Errorf("limiters after everyone went idle = %d, want 1", n)
	}
	// A limit of 0 takes no entry and never refuses.
	for range 100 {
		if ok, _ := l.allow("unlimited", 0, now); !ok {
			t.Fatal("limit 0 refused a request")
		}
	}
}
