package sqlite

import (
	"bytes"
	"context"
	"testing"

	"buildlog"
	"buildlog/internal/segment"
	"buildlog/internal/storetest"
)

// TestCompactionLeftovers checks the raw chunks a compaction leaves in
// place for Collect: every read, from every offset and in pages of any
// size, is the log as it was before compaction, also while Collect is
// halfway through; a second pass does not compact them again; kept bytes
// do not count them; Collect removes every one.
func TestCompactionLeftovers(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	ids := []string{"left-a", "left-b", "left-c"}
	for _, id := range ids {
		if err := s.CreateBuild(ctx, storetest.NewBuild(id, storetest.At(0))); err != nil {
			t.Fatal(err)
		}
	}
	// Interleaved, as a fleet appends, so the builds share pages.
	batch := benchBatch(10)
	for range 40 {
		for _, id := range ids {
			if _, err := s.Append(ctx, id, batch, storetest.At(1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids[:2] { // left-c stays running
		if _, _, err := s.Finish(ctx, id, &buildlog.Finish{Status: buildlog.StatusReady}, storetest.At(2)); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string][][]byte{}
	for _, id := range ids {
		for from := uint64(0); from <= 401; from++ {
			before[id] = append(before[id], readFrom(t, s, id, from, 1<<20))
		}
	}
	check := func(when string) {
		t.Helper()
		for _, id := range ids {
			for from := uint64(0); from <= 401; from++ {
				for _, page := range []int{1, 3000, 1 << 20} {
					if got := readFrom(t, s, id, from, page); !bytes.Equal(got, before[id][from]) {
						t.Fatalf("%s: %s from %d in pages of %d: %d bytes, want %d as before compaction",
							when, id, from, page, len(got), len(before[id][from]))
					}
				}
			}
		}
	}
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := s.w.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Small segments, so that each build has several, and no Collect.
	l := compactLog{s}
	for {
		s.compactor.Appended("left-c", 1<<30) // due
		n, err := s.compactor.Pass(ctx, l, 4096, 64)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	segs := count(`SELECT count(*) FROM chunks WHERE codec = 1`)
	if segs < 6 || count(`SELECT count(*) FROM leftovers`) == 0 {
		t.Fatalf("after compaction: %d segments, %d leftover ranges; want several of each", segs, count(`SELECT count(*) FROM leftovers`))
	}
	check("with every leftover")
	s.compactor.Appended("left-c", 1<<30)
	if n, err := s.compactor.Pass(ctx, l, 4096, 64); err != nil || n != 0 || count(`SELECT count(*) FROM chunks WHERE codec = 1`) != segs {
		t.Fatalf("second pass: %d builds, %v, %d segments; want none compacted again (%d)", n, err,
			count(`SELECT count(*) FROM chunks WHERE codec = 1`), segs)
	}
	kept := map[string]int64{}
	for _, id := range ids[:2] {
		b, err := s.Build(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		kept[id] = int64(b.KeptBytes)
	}

	// The size cap, on the running build with leftovers: what it drops and
	// keeps is whole pieces of the log, every offset once.
	// A head one byte longer than the first segment ends in the range of
	// the second, among its leftovers.
	head := int64(count(`SELECT size FROM chunks WHERE build_id = 'left-c' AND codec = 1 ORDER BY first_offset LIMIT 1`)) + 1
	s.SetLogCap(buildlog.LogCap{MaxBytes: 20 << 10, HeadBytes: head}, nil)
	for range 20 {
		if _, err := s.Append(ctx, "left-c", batch, storetest.At(3)); err != nil {
			t.Fatal(err)
		}
	}
	s.SetLogCap(buildlog.LogCap{}, nil)
	b, err := s.Build(ctx, "left-c")
	if err != nil {
		t.Fatal(err)
	}
	if b.Omitted == nil {
		t.Fatalf("left-c: nothing dropped past the cap (kept %d bytes)", b.KeptBytes)
	}
	capped := readFrom(t, s, "left-c", 0, 3000)
	if !bytes.HasPrefix(capped, before["left-c"][0][:head]) {
		t.Fatal("left-c: the head changed under the cap")
	}
	// Every offset once: the head, the notice, what follows the range.
	o := b.Omitted
	if lines, want := uint64(bytes.Count(capped, []byte("\n"))), o.From+1+(b.NextOffset-o.To-1); lines != want {
		t.Fatalf("left-c past the cap: %d lines, want %d (omitted %d..%d of %d)", lines, want, o.From, o.To, b.NextOffset)
	}
	before["left-c"] = nil
	for from := uint64(0); from <= 401; from++ {
		before["left-c"] = append(before["left-c"], readFrom(t, s, "left-c", from, 1<<20))
	}
	check("past the cap")

	// Collect halfway: every other leftover gone, in no build's order.
	if _, err := s.w.ExecContext(ctx, `DELETE FROM chunks WHERE rowid IN (SELECT c.rowid FROM leftovers l JOIN chunks c
		ON c.build_id = l.build_id AND c.first_offset > l.first_offset AND c.first_offset < l.end_offset WHERE c.rowid % 2 = 0)`); err != nil {
		t.Fatal(err)
	}
	check("halfway through Collect")

	if err := l.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM leftovers`); n != 0 {
		t.Fatalf("after Collect: %d leftover ranges", n)
	}
	for _, id := range ids[:2] {
		if n := count(`SELECT count(*) FROM chunks WHERE build_id = ? AND codec = 0`, id); n != 0 {
			t.Fatalf("after Collect: finished %s has %d raw chunks", id, n)
		}
		stored := int64(count(`SELECT sum(coalesce(size, length(data))) FROM chunks WHERE build_id = ?`, id))
		if kept[id] != stored {
			t.Fatalf("%s: kept_bytes %d with leftovers present, want %d (what is stored without them)", id, kept[id], stored)
		}
	}
	check("after Collect")
}

// readFrom reads build id's log from offset from to its end, maxBytes
// at a time, as a reader pages through it.
func readFrom(t *testing.T, s *Store, id string, from uint64, maxBytes int) []byte {
	t.Helper()
	var out []byte
	for pos := from; ; {
		chunks, err := s.ReadLog(context.Background(), id, pos, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(chunks) == 0 {
			return out
		}
		for i, c := range chunks {
			if i == 0 {
				c = c.From(pos)
			}
			// The size cap's notice stands at the last offset it
			// dropped, in place of the range.
			if c.First != pos && !(c.Notice && c.First > pos) {
				t.Fatalf("%s from %d: chunk at %d, want %d", id, from, c.First, pos)
			}
			out = append(out, c.Data...)
			pos = c.End()
		}
	}
}

var _ segment.Collector = compactLog{}
