package httpapi

import (
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters holds one token bucket per caller (an API key, or a client IP
// when the router runs open). The map is bounded: entries idle for
// limiterIdle are swept when it grows, and when it is full of busy callers
// some are dropped at random, so a flood of addresses cannot grow
// it without end. A dropped caller starts again with a full bucket, which
// is the price of the bound.
type limiters struct {
	max  int
	idle time.Duration

	// mu guards m and nextSweep.
	mu        sync.Mutex
	m         map[string]*limiterEntry
	nextSweep time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	n    int // the limit it was made with, so a reload can change it
	seen time.Time
}

const (
	defaultMaxLimiters = 100000
	limiterIdle        = 10 * time.Minute
)

func newLimiters(max int, idle time.Duration) *limiters {
	return &limiters{max: max, idle: idle, m: map[string]*limiterEntry{}}
}

// allow takes one token from who's bucket of n requests per second (burst
// n). When none is left it returns false and how long until one is.
func (l *limiters) allow(who string, n int, now time.Time) (bool, time.Duration) {
	if n <= 0 {
		return true, 0
	}
	l.mu.Lock()
	e := l.m[who]
	if e == nil {
		l.makeRoom(now)
		e = &limiterEntry{lim: rate.NewLimiter(rate.Limit(n), n), n: n}
		l.m[who] = e
	} else if e.n != n {
		e.lim.SetLimitAt(now, rate.Limit(n))
		e.lim.SetBurstAt(now, n)
		e.n = n
	}
	e.seen = now
	l.mu.Unlock()
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// makeRoom sweeps idle entries now and then; when the map is still full
// of busy callers it drops a sixteenth of them, picked by map order (at
// random), so the cost of a flood of new callers stays constant per
// request. l.mu is held.
func (l *limiters) makeRoom(now time.Time) {
	if len(l.m) < l.max && now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(l.idle / 4)
	for k, e := range l.m {
		if now.Sub(e.seen) > l.idle {
			delete(l.m, k)
		}
	}
	if len(l.m) < l.max {
		return
	}
	drop := max(1, l.max/16)
	for k := range l.m {
		if drop == 0 {
			break
		}
		delete(l.m, k)
		drop--
	}
}

func (l *limiters) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// retryAfter renders a delay as whole seconds for Retry-After, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
