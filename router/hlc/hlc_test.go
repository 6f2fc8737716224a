package hlc

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	c := Clock{Now: func() time.Time { return now }}
	a, b := c.Next(), c.Next()
	if b <= a {
		t.Errorf("Next() = %d then %d, want increasing within one millisecond", a, b)
	}
	if got := Time(a); !got.Equal(now) {
		t.Errorf("Time(%d) = %v, want %v", a, got, now)
	}
	c.Observe(b + 1000)
	if n := c.Next(); n <= b+1000 {
		t.Errorf("Next() after Observe(%d) = %d, want greater", b+1000, n)
	}
	now = now.Add(time.Second)
	if n := c.Next(); Time(n) != now.UTC() {
		t.Errorf("Next() after the Clock moved = %v, want %v", Time(n), now)
	}
}
