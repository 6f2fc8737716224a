package router

import (
	"sync/atomic"
	"time"
)

// clock is a hybrid logical clock: versions are milliseconds since the Unix
// epoch shifted left by 16 bits, plus a counter for events within one
// millisecond. Versions it hands out are strictly increasing, stay close to
// wall time, and move past any version it has observed, so a router whose
// clock lags still writes versions newer than what it has seen.
type clock struct {
	last atomic.Uint64
	now  func() time.Time // nil means time.Now
}

const logicalBits = 16

// Next returns a version greater than every version returned or observed.
func (c *clock) Next() uint64 {
	now := time.Now
	if c.now != nil {
		now = c.now
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

// Observe moves the clock past a version seen elsewhere.
func (c *clock) Observe(v uint64) {
	for {
		last := c.last.Load()
		if v <= last || c.last.CompareAndSwap(last, v) {
			return
		}
	}
}

// versionTime is the wall time a version was issued at (to the millisecond).
func versionTime(v uint64) time.Time {
	return time.UnixMilli(int64(v >> logicalBits)).UTC()
}
