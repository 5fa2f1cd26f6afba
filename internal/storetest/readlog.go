package storetest

import (
	"fmt"
	"slices"
	"testing"

	"buildlog"
	"buildlog/internal/wire"
)

// readLogFixture stores chunks of 3, 1, 4 and 2 entries and a terminal
// chunk, and returns every line by offset.
func readLogFixture(t *testing.T, s buildlog.Store, id string) []string {
	t.Helper()
	b := NewBuild(id, At(0))
	create(t, s, b)
	var lines []string
	for i, n := range []int{3, 1, 4, 2} {
		batch := BatchOf(Messages(fmt.Sprintf("batch %d", i), n)...)
		res := appendOK(t, s, id, batch, At(i+1))
		lines = append(lines, Lines(t, []buildlog.Chunk{{First: res.FirstOffset, Count: n, Data: wire.EncodeBatch(batch, id, b.TemplateID, res.FirstOffset)}})...)
	}
	_, c := finishOK(t, s, id, buildlog.StatusReady, At(9))
	return append(lines, Lines(t, []buildlog.Chunk{c})...)
}

func testReadLog(t *testing.T, s buildlog.Store) {
	const id = "read"
	all := readLogFixture(t, s, id) // chunks start at 0, 3, 4, 8, 10; end 11
	tests := []struct {
		name      string
		from      uint64
		wantFirst uint64 // First of the first chunk returned
	}{
		{"from 0", 0, 0},
		{"inside the first chunk", 2, 0},
		{"at a boundary", 4, 4},
		{"inside a chunk", 5, 4},
		{"last entry of a chunk", 7, 4},
		{"the terminal chunk", 10, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks, err := s.ReadLog(t.Context(), id, tt.from, 1<<20)
			if err != nil {
				t.Fatalf("ReadLog: %v", err)
			}
			if len(chunks) == 0 {
				t.Fatalf("ReadLog(%d): no chunks", tt.from)
			}
			if chunks[0].First != tt.wantFirst {
				t.Errorf("first chunk starts at %d, want %d", chunks[0].First, tt.wantFirst)
			}
			chunks[0] = chunks[0].From(tt.from)
			got := Lines(t, chunks)
			if want := all[tt.from:]; !slices.Equal(got, want) {
				t.Errorf("lines from %d:\n%q\nwant\n%q", tt.from, got, want)
			}
			for i, c := range chunks {
				if wantTerm := c.End() == uint64(len(all)); c.Terminal != wantTerm {
					t.Errorf("chunk %d at %d: Terminal = %v, want %v", i, c.First, c.Terminal, wantTerm)
				}
			}
		})
	}

	none := []struct {
		name string
		id   string
		from uint64
	}{
		{"at the end", id, 11},
		{"past the end", id, 12},
		{"far past the end", id, 1 << 40},
		{"unknown build", "no-such-build", 0},
	}
	for _, tt := range none {
		t.Run(tt.name, func(t *testing.T) {
			chunks, err := s.ReadLog(t.Context(), tt.id, tt.from, 1<<20)
			if err != nil {
				t.Fatalf("ReadLog: %v", err)
			}
			if len(chunks) != 0 {
				t.Errorf("ReadLog(%q, %d): %d chunks from %d, want none", tt.id, tt.from, len(chunks), chunks[0].First)
			}
		})
	}

	t.Run("running build past the end", func(t *testing.T) {
		create(t, s, NewBuild("running", At(0)))
		appendOK(t, s, "running", BatchOf("a", "b"), At(1))
		chunks, err := s.ReadLog(t.Context(), "running", 2, 1<<20)
		if err != nil || len(chunks) != 0 {
			t.Errorf("ReadLog past the end of a running build = %d chunks, %v; want none", len(chunks), err)
		}
	})
}

func testReadLogPaging(t *testing.T, s buildlog.Store) {
	const id = "paging"
	all := readLogFixture(t, s, id)
	for _, maxBytes := range []int{1, 200, 600, 1 << 20} {
		t.Run(fmt.Sprintf("maxBytes %d", maxBytes), func(t *testing.T) {
			var got []string
			for from := uint64(0); from < uint64(len(all)); {
				chunks, err := s.ReadLog(t.Context(), id, from, maxBytes)
				if err != nil {
					t.Fatalf("ReadLog(%d): %v", from, err)
				}
				if len(chunks) == 0 {
					t.Fatalf("ReadLog(%d, %d): no chunks before the end", from, maxBytes)
				}
				// Reading stops once about maxBytes were read: every chunk
				// but the last was read while still under the budget.
				read := 0
				for _, c := range chunks[:len(chunks)-1] {
					read += len(c.Data)
				}
				if read >= maxBytes {
					t.Errorf("ReadLog(%d, %d): kept reading after %d bytes", from, maxBytes, read)
				}
				if chunks[0].First > from || chunks[0].End() <= from {
					t.Fatalf("ReadLog(%d): first chunk [%d, %d) does not hold %d", from, chunks[0].First, chunks[0].End(), from)
				}
				chunks[0] = chunks[0].From(from)
				for i := 1; i < len(chunks); i++ {
					if chunks[i].First != chunks[i-1].End() {
						t.Fatalf("ReadLog(%d): chunk at %d follows one ending at %d", from, chunks[i].First, chunks[i-1].End())
					}
				}
				got = append(got, Lines(t, chunks)...)
				from = chunks[len(chunks)-1].End()
			}
			if !slices.Equal(got, all) {
				t.Errorf("paged lines:\n%q\nwant\n%q", got, all)
			}
		})
	}
}

// testReadLogBounds checks the promise followers wait on: a read returns at
// most MaxReadChunks chunks, and one under both of its bounds ended at the
// log's end.
func testReadLogBounds(t *testing.T, s buildlog.Store) {
	b := NewBuild("bounds", At(0))
	create(t, s, b)
	const batches = buildlog.MaxReadChunks + 44
	for i := range batches {
		appendOK(t, s, b.ID, BatchOf(fmt.Sprintf("line %d", i)), At(1))
	}
	for _, from := range []uint64{0, 10, batches - buildlog.MaxReadChunks, batches - buildlog.MaxReadChunks + 1, batches - 1} {
		chunks, err := s.ReadLog(t.Context(), b.ID, from, 1<<30)
		if err != nil {
			t.Fatalf("ReadLog(%d): %v", from, err)
		}
		if len(chunks) > buildlog.MaxReadChunks {
			t.Fatalf("ReadLog(%d) returned %d chunks, more than MaxReadChunks", from, len(chunks))
		}
		end := chunks[len(chunks)-1].End()
		if len(chunks) < buildlog.MaxReadChunks && end != batches {
			t.Fatalf("ReadLog(%d): %d chunks, under both bounds, end at %d; the log ends at %d", from, len(chunks), end, batches)
		}
		if len(chunks) == buildlog.MaxReadChunks && end != from+buildlog.MaxReadChunks {
			t.Fatalf("ReadLog(%d): a full read ends at %d, want %d", from, end, from+buildlog.MaxReadChunks)
		}
	}
}
