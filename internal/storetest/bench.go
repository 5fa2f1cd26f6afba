package storetest

import (
	"context"
	"fmt"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// BenchAppend is the append benchmark every store runs from its own
// BenchmarkAppend, so that their figures compare: batch appended
// round-robin over 100 builds by one writer, each append its own durable
// commit. It reports entries/s and the bytes an entry takes as encoded
// for storage.
func BenchAppend(b *testing.B, s buildlog.Store, batch *buildlog.Batch) {
	ctx := context.Background()
	const builds = 100
	for i := range builds {
		if err := s.CreateBuild(ctx, NewBuild(fmt.Sprintf("bench-%d", i), At(0))); err != nil {
			b.Fatal(err)
		}
	}
	size := len(batch.Tails)
	bytesPerEntry := float64(len(wire.EncodeBatch(batch, "bench-0", "tmpl_1", 0))) / float64(size)
	i := 0
	for b.Loop() {
		if _, err := s.Append(ctx, fmt.Sprintf("bench-%d", i%builds), batch, At(1)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i*size)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(bytesPerEntry, "B/entry")
}
