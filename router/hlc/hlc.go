package hlc

import (
	"sync/atomic"
	"time"
)

// Clock is a hybrid logical clock: versions are milliseconds since the Unix
// epoch shifted left by 16 bits, plus a counter for events within one
// millisecond. Versions it hands out are strictly increasing, stay close to
// wall time, and move past any version it has observed, so a router whose
// clock lags still writes versions newer than what it has seen.
type Clock struct {
	last atomic.Uint64
	Now  func() time.Time // nil means time.Now
}

const logicalBits = 16

// Next returns a version greater than every version returned or observed.
func (c *Clock) Next() uint64 {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	phys := uint64(now().UnixMilli()) << logicalBits
	for {
		last := c.last.Load()
		next := phys
		if next <= last {
			next = last + 1
		}
		if c.last.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Observe moves the Clock past a version seen elsewhere.
func (c *Clock) Observe(v uint64) {
	for {
		last := c.last.Load()
		if v <= last || c.last.CompareAndSwap(last, v) {
			return
		}
	}
}

// Time is the wall time a version was issued at (to the millisecond).
func Time(v uint64) time.Time {
	return time.UnixMilli(int64(v >> logicalBits)).UTC()
}
