package segment

import (
	"bytes"
	"os"
	"testing"
)

// FuzzRoundTrip: whatever lines are compressed come back byte for byte.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("{\"offset\":0,\"message\":\"hello\"}\n"))
	f.Add([]byte(""))
	// Small seeds: under the fuzzer's coverage instrumentation the encoder
	// takes seconds for 150 KB, and a 150 KB seed made this 15 runs a minute.
	f.Add(bytes.Repeat([]byte("Setting up libc6 (2.36-9) ...\n"), 100))
	f.Add([]byte("\x00\xff\u2028 ünï\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Decode(Zstd, Compress(raw), len(raw))
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("round trip of %d bytes: %v, equal %v", len(raw), err, bytes.Equal(got, raw))
		}
	})
}

// FuzzDecode: a stored segment that is not what Compress wrote (a damaged
// file, a bug elsewhere) is an error from Decode, never a panic or a wrong
// length passed off as the log.
func FuzzDecode(f *testing.F) {
	f.Add(Compress([]byte("{\"offset\":0,\"message\":\"hello\"}\n")), 32)
	f.Add(Compress(bytes.Repeat([]byte("Setting up libc6 (2.36-9) ...\n"), 100)), 3000)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, 0)
	f.Add([]byte("not zstd at all"), 15)
	f.Fuzz(func(t *testing.T, data []byte, size int) {
		if size < 0 || size > 1<<20 {
			return // the stores never ask for more than a segment
		}
		out, err := Decode(Zstd, data, size)
		if err == nil && size > 0 && len(out) != size {
			t.Fatalf("decoded %d bytes without an error, want %d", len(out), size)
		}
	})
}

func TestPlan(t *testing.T) {
	p := func(first uint64, count, size int) Piece { return Piece{First: first, Count: count, Size: size} }
	pieces := []Piece{p(0, 1, 100), p(1, 1, 100), p(2, 1, 100), p(10, 1, 100), p(11, 1, 100), p(12, 1, 100)}
	// A gap (the size cap's range) splits runs; a finished build plans all.
	if got := Plan(pieces, 150, true, 0); len(got) != 4 || got[0] != (Run{0, 2}) || got[1] != (Run{2, 3}) || got[2] != (Run{3, 5}) {
		t.Errorf("Plan(all) = %v", got)
	}
	// A running build keeps its newest bytes raw and plans full runs only.
	if got := Plan(pieces, 150, false, 150); len(got) != 1 || got[0] != (Run{0, 2}) {
		t.Errorf("Plan(running) = %v", got)
	}
}

// BenchmarkDecode: 1 MiB segments (Target) of the storage corpus, real
// build output, decoded as ReadLog decodes them.
func BenchmarkDecode(b *testing.B) {
	packed, err := os.ReadFile("../bench/testdata/corpus.txt.zst")
	if err != nil {
		b.Fatal(err)
	}
	text, err := Decode(Zstd, packed, 0)
	if err != nil {
		b.Fatal(err)
	}
	var segs [][]byte
	for ; len(text) >= Target; text = text[Target:] {
		segs = append(segs, Compress(text[:Target]))
	}
	b.SetBytes(Target)
	b.ResetTimer()
	for i := range b.N {
		if out, err := Decode(Zstd, segs[i%len(segs)], Target); err != nil || len(out) != Target {
			b.Fatal(len(out), err)
		}
	}
}
