package wire_test

import (
	"fmt"
	"strings"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// Micro-benchmarks of the per-entry hot paths, for profiling:
//
//	go test -run '^$' -bench . -benchmem -cpuprofile cpu.out ./internal/wire
//
// Each reports ns and allocations per entry (b.N counts entries, not batches).

// typicalBody is a batch of n entries as a builder sends them (~150 B each).
func typicalBody(n int) []byte {
	msgs := []string{
		"Get:12 http://deb.debian.org/debian bookworm/main amd64 libssl3 amd64 3.0.15-1 [2025 kB]",
		"Collecting numpy==1.26.4 (from -r requirements.txt (line 3))",
		"added 1432 packages, and audited 1433 packages in 31s",
		"Step 4/12 : RUN npm ci --omit=dev",
		`npm warn deprecated inflight@1.0.6: "This module is not supported"`,
	}
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"timestamp":"2026-03-17T00:00:%02d.%06dZ","level":"info","phase":"install","source":"npm","message":%q}`,
			i%60, i, msgs[i%len(msgs)])
	}
	sb.WriteByte(']')
	return []byte(sb.String())
}

const benchBatch = 1000

// typicalEntries is typicalBody(benchBatch) decoded.
func typicalEntries(b *testing.B) []buildlog.Entry {
	entries, _, err := wire.DecodeBatch(typicalBody(benchBatch), false, buildlog.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	return entries
}

// BenchmarkDecodeBatch is the validation of an append body: split, decode
// strictly, check every field.
func BenchmarkDecodeBatch(b *testing.B) {
	body := typicalBody(benchBatch)
	b.SetBytes(int64(len(body) / benchBatch))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		if _, _, err := wire.DecodeBatch(body, false, buildlog.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewBatch is the canonical encoding of validated entries (the
// part of an append done outside the store's lock).
func BenchmarkNewBatch(b *testing.B) {
	entries := typicalEntries(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		wire.NewBatch(entries, nil, nil)
	}
}

// BenchmarkBatchEncode is the work under the store's lock: heads with the
// offsets, and the tails copied after them.
func BenchmarkBatchEncode(b *testing.B) {
	entries := typicalEntries(b)
	batch := wire.NewBatch(entries, nil, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		wire.EncodeBatch(batch, "0f8fad5b-d9cb-469f-a165-70867728950e", "tmpl_123", uint64(i))
	}
}

// BenchmarkHashEntries is the fingerprint of an idempotent append (with
// first_offset).
func BenchmarkHashEntries(b *testing.B) {
	entries := typicalEntries(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		wire.HashEntries(entries)
	}
}

func storedChunk(b *testing.B) buildlog.Chunk {
	entries := typicalEntries(b)
	data := wire.EncodeBatch(wire.NewBatch(entries, nil, nil), "0f8fad5b-d9cb-469f-a165-70867728950e", "tmpl_123", 5000)
	return buildlog.Chunk{First: 5000, Count: benchBatch, Data: data}
}

// BenchmarkChunkFrom is a resume in the middle of a stored chunk: skipping
// to the offset, then walking the lines a reader is sent.
func BenchmarkChunkFrom(b *testing.B) {
	c := storedChunk(b)
	for _, skip := range []int{0, benchBatch / 2, benchBatch - 1} {
		b.Run(fmt.Sprintf("skip=%d", skip), func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				c.From(c.First + uint64(skip)).Lines(func(uint64, []byte) bool { n++; return true })
			}
			if n == 0 {
				b.Fatal("no lines")
			}
		})
	}
}

// BenchmarkChunkLines is the per-entry walk of a whole stored chunk.
func BenchmarkChunkLines(b *testing.B) {
	c := storedChunk(b)
	b.SetBytes(int64(len(c.Data) / benchBatch))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		c.Lines(func(uint64, []byte) bool { return true })
	}
}

// BenchmarkHashTails is the same fingerprint taken from the stored
// encoding (a batch whose timestamps the producer gave).
func BenchmarkHashTails(b *testing.B) {
	batch := wire.NewBatch(typicalEntries(b), nil, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += benchBatch {
		wire.HashTails(batch.Tails)
	}
}
