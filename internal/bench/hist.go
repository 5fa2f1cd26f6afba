package bench

import (
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// hist is a latency histogram that many goroutines record into at once
// without a lock: log-linear buckets of microseconds, 64 per power of two,
// so a quantile is off by at most 1/64 (1.6%), in a fixed 20 KiB.
type hist struct {
	buckets [64 + 40*64]atomic.Uint64
	n       atomic.Uint64
	max     atomic.Int64 // ns, exact
}

func bucketOf(us uint64) int {
	if us < 64 {
		return int(us)
	}
	shift := bits.Len64(us) - 7 // us>>shift is in [64, 128)
	i := 64 + shift*64 + int(us>>shift) - 64
	if i >= len(hist{}.buckets) {
		i = len(hist{}.buckets) - 1
	}
	return i
}

// upperOf is the largest value, in µs, bucket i holds.
func upperOf(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	shift := (i - 64) / 64
	m := uint64((i-64)%64 + 64)
	return (m+1)<<shift - 1
}

func (h *hist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.buckets[bucketOf(uint64(d/time.Microsecond))].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *hist) count() uint64 { return h.n.Load() }

// quantile returns the upper bound of the bucket holding quantile q (never
// more than the exact maximum).
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			d := time.Duration(upperOf(i)) * time.Microsecond
			return min(d, h.maxDuration())
		}
	}
	return h.maxDuration()
}

func (h *hist) maxDuration() time.Duration { return time.Duration(h.max.Load()) }

// quantiles of an exact sample, which it sorts.
func sortedQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !sort.SliceIsSorted(ds, func(i, j int) bool { return ds[i] < ds[j] }) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	}
	i := int(q*float64(len(ds))+0.5) - 1
	i = max(0, min(i, len(ds)-1))
	return ds[i]
}
