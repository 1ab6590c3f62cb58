package webhookserver

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (per user). Buckets idle longer than
// idleTTL are dropped, so the map stays as small as the set of active users.
type keyedLimiter struct {
	limit   rate.Limit
	burst   int
	idleTTL time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(limit rate.Limit, burst int, idleTTL time.Duration) *keyedLimiter {
	return &keyedLimiter{limit: limit, burst: burst, idleTTL: idleTTL, buckets: map[string]*bucket{}}
}

// allow takes a token for key at now; when there is none it says how long
// until there will be one.
func (k *keyedLimiter) allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if k.limit == rate.Inf {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweep(now)
	b := k.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
		k.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Hour
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (k *keyedLimiter) sweep(now time.Time) {
	if now.Sub(k.lastSweep) < k.idleTTL {
		return
	}
	k.lastSweep = now
	for key, b := range k.buckets {
		if now.Sub(b.seen) > k.idleTTL {
			delete(k.buckets, key)
		}
	}
}

// recentKeys remembers when each key was last let through, to let one action
// per key through per interval (recheck requests per purchase).
type recentKeys struct {
	interval time.Duration

	mu        sync.Mutex
	last      map[string]time.Time
	lastSweep time.Time
}

func newRecentKeys(interval time.Duration) *recentKeys {
	return &recentKeys{interval: interval, last: map[string]time.Time{}}
}

// take reports whether key may act at now, and if so records it.
func (r *recentKeys) take(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.lastSweep) >= r.interval {
		r.lastSweep = now
		for k, t := range r.last {
			if now.Sub(t) >= r.interval {
				delete(r.last, k)
			}
		}
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < r.interval {
		return false
	}
	r.last[key] = now
	return true
}
