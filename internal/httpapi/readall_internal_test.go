package httpapi

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// readAll returns exactly the body whatever Content-Length said (requests
// without one say -1) and however the reader splits it.
func TestReadAll(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 160 << 10, preallocMax, preallocMax + 1, 3 << 20} {
		body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		for _, cl := range []int64{int64(size), -1, 0, int64(size) / 2, 16 << 20} {
			for name, r := range map[string]io.Reader{
				"whole": bytes.NewReader(body),
				"bytes": iotest.OneByteReader(bytes.NewReader(body)),
				"half":  iotest.HalfReader(bytes.NewReader(body)),
			} {
				if size > 1<<20 && name == "bytes" {
					continue // slow, and says nothing new
				}
				got, err := readAll(r, cl, 16<<20)
				if err != nil || !bytes.Equal(got, body) {
					t.Fatalf("size %d, Content-Length %d, %s reads: %d bytes, %v", size, cl, name, len(got), err)
				}
			}
		}
	}
	// An error is returned, not swallowed.
	if _, err := readAll(iotest.ErrReader(io.ErrUnexpectedEOF), 100, 1000); err != io.ErrUnexpectedEOF {
		t.Fatalf("reader error: %v", err)
	}
}

func BenchmarkReadAll(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 160<<10)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := readAll(bytes.NewReader(body), int64(len(body)), 16<<20); err != nil {
			b.Fatal(err)
		}
	}
}
