package acme

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// limiter counts events per key in fixed windows. It is per node: with
// several nodes each enforces its own count.
type limiter struct {
	max    int
	window time.Duration

	mu     sync.Mutex
	counts map[string]*windowCount
}

type windowCount struct {
	start time.Time
	n     int
}

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, counts: map[string]*windowCount{}}
}

// take counts one event for key at now; over the limit it returns how long
// until the window ends. A limiter with max 0 allows everything.
func (l *limiter) take(key string, now time.Time) (bool, time.Duration) {
	if l == nil || l.max <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[key]
	if c == nil || !now.Before(c.start.Add(l.window)) {
		if len(l.counts) > 100_000 {
			for k, v := range l.counts {
				if !now.Before(v.start.Add(l.window)) {
					delete(l.counts, k)
				}
			}
		}
		c = &windowCount{start: now}
		l.counts[key] = c
	}
	if c.n >= l.max {
		return false, c.start.Add(l.window).Sub(now)
	}
	c.n++
	return true, 0
}

// rateLimited is the problem for a limit hit; the caller sets Retry-After.
func rateLimited(what string) *Problem {
	return problem(http.StatusTooManyRequests, "rateLimited", "too many %s; retry later", what)
}

func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)+1))
}
