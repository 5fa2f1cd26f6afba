package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// Micro-benchmarks of the per-entry work of a stream, for profiling:
//
//	go test -run '^$' -bench . -benchmem -cpuprofile cpu.out ./internal/httpapi
//
// b.N counts entries; each loop turns one stored chunk of benchChunkLen
// entries into the bytes a reader is sent.

const benchChunkLen = 1000

// benchSink is a ResponseWriter that throws the bytes away, so only the
// framing is measured.
type benchSink struct {
	h http.Header
	n int64
}

func (s *benchSink) Header() http.Header         { return s.h }
func (s *benchSink) WriteHeader(int)             {}
func (s *benchSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return len(p), nil }
func (s *benchSink) Flush()                      {}

func benchChunk(b *testing.B) buildlog.Chunk {
	b.Helper()
	levels := []string{"info", "info", "debug", "warn"}
	var body []byte
	body = append(body, '[')
	for i := range benchChunkLen {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"timestamp":"2026-03-17T00:00:%02d.%06dZ","level":%q,"phase":"install","source":"npm","message":"added %d packages, and audited 1433 packages in 31s"}`,
			i%60, i, levels[i%len(levels)], i)
	}
	body = append(body, ']')
	entries, _, err := wire.DecodeBatch(body, false, buildlog.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	data := wire.EncodeBatch(wire.NewBatch(entries, nil, nil), "0f8fad5b-d9cb-469f-a165-70867728950e", "tmpl_123", 0)
	return buildlog.Chunk{First: 0, Count: benchChunkLen, Data: data}
}

func benchStream(b *testing.B, c buildlog.Chunk, frame func(s *streamWriter, off uint64, line []byte), f filter) {
	sink := &benchSink{h: http.Header{}}
	s := startStream(sink, "text/event-stream; charset=utf-8")
	b.SetBytes(int64(len(c.Data) / c.Count))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += c.Count {
		c.Lines(func(off uint64, line []byte) bool {
			if f.keep(c, off, line) {
				frame(s, off, line)
			}
			return s.maybeFlush() == nil
		})
		if err := s.flush(); err != nil {
			b.Fatal(err)
		}
	}
	if sink.n == 0 {
		b.Fatal("nothing written")
	}
}

// BenchmarkSSEFrame is dialect A's replay: the stored line framed as an
// SSE event, no re-encoding.
func BenchmarkSSEFrame(b *testing.B) {
	benchStream(b, benchChunk(b), func(s *streamWriter, off uint64, line []byte) { s.sseFrame(off, "log", line) }, filter{})
}

// BenchmarkSSEFrameFiltered is the same with level=warn, which looks
// inside each line.
func BenchmarkSSEFrameFiltered(b *testing.B) {
	r, _ := http.NewRequest("GET", "/x?"+url.Values{"level": {"warn"}}.Encode(), nil)
	f, err := parseFilter(r)
	if err != nil {
		b.Fatal(err)
	}
	benchStream(b, benchChunk(b), func(s *streamWriter, off uint64, line []byte) { s.sseFrame(off, "log", line) }, f)
}

// BenchmarkNDJSONFrame is dialect A's NDJSON form.
func BenchmarkNDJSONFrame(b *testing.B) {
	benchStream(b, benchChunk(b), func(s *streamWriter, _ uint64, line []byte) {
		s.buf = append(append(s.buf, line...), '\n')
	}, filter{})
}

// BenchmarkPollLine is dialect C's per-line work: format the stored entry
// as the JSON string "[source] time message" (wire.AppendCLine).
func BenchmarkPollLine(b *testing.B) {
	c := benchChunk(b)
	b.ReportAllocs()
	b.ResetTimer()
	var dst []byte
	for i := 0; i < b.N; i += c.Count {
		c.Lines(func(_ uint64, line []byte) bool {
			var err error
			if dst, err = wire.AppendCLine(dst[:0], line); err != nil {
				b.Fatal(err)
			}
			return true
		})
	}
}
