package httpapi

import (
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per key: each request takes a token, tokens
// come back at rate a second up to burst. Buckets exist only for keys that
// authenticated, so their number is bounded by the keys (and, for stream
// tokens, the builds) in use; full buckets are forgotten when there are many.
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	// pruneAt is how many buckets make the next new key prune. After a
	// prune it is twice what was kept (and at least minPruneAt), so each
	// pass over n buckets is paid for by n new keys: with many keys busy,
	// a fixed mark made every new key scan them all under the lock.
	pruneAt int
	scans   int // prune passes, for tests
}

type bucket struct {
	tokens float64
	at     time.Time
}

// minPruneAt is the fewest buckets that make take forget the full ones.
const minPruneAt = 10000

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: make(map[string]*bucket), pruneAt: minPruneAt}
}

// take spends one of id's tokens. When there is none it returns false and
// the whole seconds until there will be one, for Retry-After.
func (l *limiter) take(id string) (retryAfter int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= l.pruneAt {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[id] = b
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return max(1, int(math.Ceil((1-b.tokens)/l.rate))), false
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	}
}

// prune forgets buckets that have refilled: a new bucket starts full, so
// forgetting a full one changes nothing.
func (l *limiter) prune(now time.Time) {
	l.scans++
	for id, b := range l.buckets {
		b.refill(now, l.rate, l.burst)
		if b.tokens >= l.burst {
			delete(l.buckets, id)
		}
	}
	l.pruneAt = max(minPruneAt, 2*len(l.buckets))
}
