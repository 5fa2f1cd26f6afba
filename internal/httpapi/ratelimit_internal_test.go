package httpapi

import (
	"strconv"
	"testing"
	"time"
)

// With more busy keys than the prune mark, a new key must not scan every
// bucket: passes over the buckets stay logarithmic in the keys added, and
// full buckets are still forgotten once they have refilled.
func TestLimiterPruneIsAmortised(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(1, 2, func() time.Time { return now })
	const keys = 4 * minPruneAt
	for i := range keys {
		if _, ok := l.take("k" + strconv.Itoa(i)); !ok {
			t.Fatalf("key %d refused its first request", i)
		}
		if l.scans > 3 {
			t.Fatalf("%d passes over the buckets for %d new keys, want at most 3", l.scans, i+1)
		}
	}
	// Every bucket has spent a token and the clock has not moved, so no
	// prune could forget any: the old fixed mark scanned all of them for
	// each of the 30,000 keys past it.
	if len(l.buckets) != keys {
		t.Fatalf("%d buckets, want %d", len(l.buckets), keys)
	}

	// Once they have refilled, the next prune forgets them all, and the
	// mark comes back down.
	now = now.Add(time.Minute)
	for i := range l.pruneAt - len(l.buckets) + 1 {
		l.take("new" + strconv.Itoa(i))
	}
	if len(l.buckets) > minPruneAt {
		t.Fatalf("%d buckets after refilled ones were pruned", len(l.buckets))
	}
	if l.pruneAt != minPruneAt {
		t.Fatalf("prune mark %d after pruning, want %d", l.pruneAt, minPruneAt)
	}
	// A pruned key starts full again: its limit is what it was.
	for range 2 {
		if _, ok := l.take("k0"); !ok {
			t.Fatal("a refilled key was refused within its burst")
		}
	}
	if _, ok := l.take("k0"); ok {
		t.Fatal("a key was allowed past its burst")
	}
}
