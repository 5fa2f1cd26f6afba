package bench

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The histogram's quantiles are within its stated 1/64 of the exact ones.
func TestHistQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h hist
	var exact []time.Duration
	for range 100000 {
		// Log-uniform from 10 µs to 1 s, as latencies spread.
		d := time.Duration(float64(10*time.Microsecond) * math.Pow(1e5, rng.Float64()))
		h.record(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got, want := h.quantile(q), sortedQuantile(exact, q)
		if diff := float64(got-want) / float64(want); diff < -0.02 || diff > 0.02 {
			t.Errorf("q%.3f: got %v, want %v (±2%%)", q, got, want)
		}
	}
	if h.maxDuration() != exact[len(exact)-1] {
		t.Errorf("max: got %v, want %v", h.maxDuration(), exact[len(exact)-1])
	}
	if h.count() != uint64(len(exact)) {
		t.Errorf("count: got %d, want %d", h.count(), len(exact))
	}
}

// countWriter finds every event however the stream is cut into writes.
func TestCountWriter(t *testing.T) {
	var stream []byte
	stream = append(stream, "retry: 2000\n\n"...)
	for i := range 1000 {
		stream = append(stream, "id: "...)
		stream = append(stream, byte('0'+i%10))
		stream = append(stream, "\nevent: log\ndata: {\"message\":\"event: log\"}\n\n"...)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		var cw countWriter
		for b := stream; len(b) > 0; {
			n := min(len(b), 1+rng.IntN(40))
			cw.Write(b[:n])
			b = b[n:]
		}
		if cw.n != 1000 || cw.bytes != int64(len(stream)) {
			t.Fatalf("got %d events, %d bytes; want 1000, %d", cw.n, cw.bytes, len(stream))
		}
	}
	if !bytes.Contains(stream, eventLine) {
		t.Fatal("test stream lacks the event line")
	}
}
