package webhook

import (
	"testing"
	"time"
)

// SetStatsEvery refreshes the queue metrics every d for one test. Call it
// before starting deliverers: it is not synchronised.
func SetStatsEvery(t testing.TB, d time.Duration) {
	old := statsEvery
	statsEvery = d
	t.Cleanup(func() { statsEvery = old })
}
