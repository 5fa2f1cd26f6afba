package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"buildlog"
)

// Capper is a store that enforces the per-build size cap.
type Capper interface {
	SetLogCap(c buildlog.LogCap, onOmit func(bytes int64))
}

// Compacter is a store that compacts logs into compressed segments of
// about target bytes.
type Compacter interface {
	Compact(ctx context.Context, target int) (int, error)
}

// storageTests are the suite's tests of compression, compaction and the
// size cap; Run adds them, and each skips on a store without the feature.
var storageTests = []struct {
	name string
	fn   func(t *testing.T, s buildlog.Store)
}{
	{"CompactionInvisible", testCompactionInvisible},
	{"CapDialectsAndStarts", testCap},
	{"CapRetries", testCapRetries},
}

// awkward are messages that exercise every escape the encoder makes.
var awkward = []string{"", "plain", "tab\there", "quote \" and \\ backslash", "ünïcödé ✓ 日本", "\x00\x01\x1f ctl",
	"<script>&amp;</script>", "\u2028\u2029 separators", strings.Repeat("long ", 300), "\r\nCRLF"}

func compacter(t *testing.T, s buildlog.Store) Compacter {
	c, ok := s.(Compacter)
	if !ok {
		t.Skip("store does not compact")
	}
	return c
}

// testCompactionInvisible: a reader part way through a log, and a retry
// of a batch, see the same bytes and answers whether or not the chunks
// they are reading were compacted in between, running and finished.
func testCompactionInvisible(t *testing.T, s buildlog.Store) {
	c := compacter(t, s)
	create(t, s, NewBuild("cmp", At(1)))
	var firsts []uint64
	var batches []*buildlog.Batch
	for i := range 60 {
		msgs := append(Messages(fmt.Sprintf("b%d", i), 3), awkward[i%len(awkward)])
		b := RetryBatchOf(uint64(i*4), msgs...)
		res := appendOK(t, s, "cmp", b, At(2))
		firsts, batches = append(firsts, res.FirstOffset), append(batches, RetryBatchOf(res.FirstOffset, msgs...))
	}
	before := Lines(t, ReadAll(t, s, "cmp"))
	// A reader that has read up to offset 37 goes on after compaction.
	mid, err := s.ReadLog(t.Context(), "cmp", 37, 1<<20)
	if err != nil || len(mid) == 0 {
		t.Fatalf("ReadLog(37): %v, %d chunks", err, len(mid))
	}
	n, err := c.Compact(t.Context(), 2048)
	if err != nil {
		t.Fatalf("Compact (running): %v", err)
	}
	if n == 0 {
		t.Fatalf("Compact (running): compacted nothing of a %d-byte log", len(strings.Join(before, "\n")))
	}
	after := ReadAll(t, s, "cmp")
	if got := Lines(t, after); strings.Join(got, "\n") != strings.Join(before, "\n") {
		t.Fatalf("log changed by compaction of a running build")
	}
	if len(after) >= 60 {
		t.Errorf("after compaction %d chunks, want fewer than the 60 appended", len(after))
	}
	resumed, err := s.ReadLog(t.Context(), "cmp", 37, 1<<20)
	if err != nil || len(resumed) == 0 || resumed[0].First > 37 || resumed[0].End() <= 37 {
		t.Fatalf("ReadLog(37) after compaction: %v, %v", err, resumed)
	}
	var got []string
	for _, ch := range resumed {
		ch.From(37).Lines(func(_ uint64, line []byte) bool { got = append(got, string(line)); return true })
	}
	if len(got) == 0 || got[0] != before[37] {
		t.Fatalf("a reader resuming at 37 after compaction gets %.80q, want %.80q", first(got), before[37])
	}
	// Every batch is still recognised on retry.
	for i, b := range batches {
		res, err := s.Append(t.Context(), "cmp", b, At(3))
		if err != nil || !res.Replayed || res.FirstOffset != firsts[i] {
			t.Fatalf("retry of batch %d after compaction: %+v, %v; want replayed at %d", i, res, err, firsts[i])
		}
	}
	finishOK(t, s, "cmp", buildlog.StatusReady, At(4))
	want := Lines(t, ReadAll(t, s, "cmp"))
	if _, err := c.Compact(t.Context(), 2048); err != nil {
		t.Fatalf("Compact (finished): %v", err)
	}
	final := ReadAll(t, s, "cmp")
	if strings.Join(Lines(t, final), "\n") != strings.Join(want, "\n") {
		t.Fatalf("log changed by compaction of a finished build")
	}
	if !final[len(final)-1].Terminal {
		t.Errorf("after compaction the last chunk is not terminal")
	}
	if res, err := s.Append(t.Context(), "cmp", batches[5], At(5)); err != nil || !res.Replayed {
		t.Errorf("retry after the finished build's compaction: %+v, %v; want replayed", res, err)
	}
	if b := getBuild(t, s, "cmp"); b.KeptBytes != uint64(len(strings.Join(want, "\n"))+1) {
		t.Errorf("kept_bytes = %d, want %d", b.KeptBytes, len(strings.Join(want, "\n"))+1)
	}
	// Compacting again changes nothing.
	if _, err := c.Compact(t.Context(), 2048); err != nil {
		t.Fatal(err)
	}
	if got := Lines(t, ReadAll(t, s, "cmp")); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("a second compaction changed the log")
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// capLine is a line of a read: an entry, or a notice standing for
// offsets from..to.
type capLine struct {
	off      uint64
	notice   bool
	from, to uint64
	line     string
}

// readCapped reads the log from offset from to its end as a reader of any
// dialect does (each page from where the last ended), failing t unless
// every offset from on is accounted for exactly once.
func readCapped(t *testing.T, s buildlog.Store, id string, from uint64) []capLine {
	t.Helper()
	var out []capLine
	pos := from
	for {
		chunks, err := s.ReadLog(t.Context(), id, pos, 700)
		if err != nil {
			t.Fatalf("ReadLog(%d): %v", pos, err)
		}
		if len(chunks) == 0 {
			return out
		}
		for _, c := range chunks {
			if c.End() <= pos {
				continue
			}
			if c.Notice {
				var e buildlog.Entry
				if err := json.Unmarshal(c.Data, &e); err != nil {
					t.Fatalf("notice: %v: %s", err, c.Data)
				}
				var m struct {
					From    uint64 `json:"omitted_from"`
					To      uint64 `json:"omitted_to"`
					Entries uint64 `json:"omitted_entries"`
				}
				json.Unmarshal(e.ResultMetadata, &m)
				if e.Kind != buildlog.KindWarning || e.Level != buildlog.LevelWarn || e.Offset != c.First || m.To != c.First ||
					m.From != pos || m.Entries != m.To-m.From+1 || !strings.Contains(e.Message, "omitted") {
					t.Fatalf("read from %d: notice %s at %d, want one for [%d, %d]", pos, c.Data, c.First, pos, c.First)
				}
				out = append(out, capLine{off: c.First, notice: true, from: m.From, to: m.To, line: string(c.Data)})
				pos = c.End()
				continue
			}
			c = c.From(pos)
			if c.First != pos {
				t.Fatalf("read from %d: chunk at %d", pos, c.First)
			}
			c.Lines(func(off uint64, line []byte) bool {
				out = append(out, capLine{off: off, line: string(line)})
				return true
			})
			pos = c.End()
		}
	}
}

func capped(t *testing.T, s buildlog.Store) (dropped *int64) {
	cp, ok := s.(Capper)
	if !ok {
		t.Skip("store has no size cap")
	}
	dropped = new(int64)
	cp.SetLogCap(buildlog.LogCap{MaxBytes: 4000, HeadBytes: 1000}, func(n int64) { *dropped += n })
	return dropped
}

// testCap: a build writing many times its cap keeps its head and its most
// recent entries, at most the cap plus one batch, and every read, from
// every start (before, inside, after the range, and resuming as the
// range grows), meets one notice in place of what was dropped.
func testCap(t *testing.T, s buildlog.Store) {
	dropped := capped(t, s)
	create(t, s, NewBuild("cap", At(1)))
	var all []string // every line as appended
	batchMax := 0
	for i := range 80 {
		res := appendOK(t, s, "cap", BatchOf(Messages(fmt.Sprintf("batch %02d", i), 3)...), At(2))
		batchMax = max(batchMax, len(res.Chunk.Data))
		for _, l := range strings.SplitAfter(string(res.Chunk.Data), "\n") {
			if l != "" {
				all = append(all, strings.TrimSuffix(l, "\n"))
			}
		}
		b := getBuild(t, s, "cap")
		if b.KeptBytes > 4000+uint64(batchMax) {
			t.Fatalf("after batch %d: kept_bytes %d, over the cap 4000 plus one batch", i, b.KeptBytes)
		}
		if i == 40 {
			// A reader resuming inside a range that then grows meets a
			// notice for each part, and never an offset twice.
			om := b.Omitted
			if om == nil {
				t.Fatalf("after %d batches of 3 entries, nothing omitted (kept %d)", i+1, b.KeptBytes)
			}
			part := readCapped(t, s, "cap", om.From+2)
			if !part[0].notice || part[0].from != om.From+2 || part[0].to != om.To {
				t.Fatalf("read from inside the range: first %+v", part[0])
			}
			defer func(to uint64) {
				grown := readCapped(t, s, "cap", to+1)
				if !grown[0].notice || grown[0].from != to+1 {
					t.Errorf("resume after a notice at %d once the range grew: first %+v, want a notice from %d", to, grown[0], to+1)
				}
			}(om.To)
		}
	}
	finishOK(t, s, "cap", buildlog.StatusFailed, At(3))
	b := getBuild(t, s, "cap")
	om := b.Omitted
	if om == nil || om.From == 0 || om.To+1 >= b.NextOffset || om.Entries != om.To-om.From+1 || om.Bytes == 0 {
		t.Fatalf("omitted = %+v (next %d)", om, b.NextOffset)
	}
	if int64(om.Bytes) != *dropped {
		t.Errorf("the store reported %d dropped bytes, the build says %d", *dropped, om.Bytes)
	}
	if b.EntryCount != b.NextOffset || b.NextOffset != uint64(len(all))+1 {
		t.Errorf("next_offset %d, entry_count %d; want %d", b.NextOffset, b.EntryCount, len(all)+1)
	}
	if c, ok := s.(Compacter); ok {
		if _, err := c.Compact(t.Context(), 1500); err != nil {
			t.Fatal(err)
		}
	}
	for _, from := range []uint64{0, 1, om.From - 1, om.From, om.From + 1, om.To, om.To + 1, om.To + 2, b.NextOffset - 1, b.NextOffset} {
		lines := readCapped(t, s, "cap", from)
		pos := from
		notices := 0
		for _, l := range lines {
			if l.notice {
				notices++
				if l.from != pos {
					t.Fatalf("read from %d: notice from %d at %d", from, l.from, pos)
				}
				pos = l.to + 1
				continue
			}
			if l.off != pos {
				t.Fatalf("read from %d: entry %d where %d was next", from, l.off, pos)
			}
			if l.off < uint64(len(all)) && l.line != all[l.off] {
				t.Fatalf("read from %d: line %d is %q, want %q", from, l.off, l.line, all[l.off])
			}
			if l.off >= om.From && l.off <= om.To {
				t.Fatalf("read from %d: dropped offset %d read", from, l.off)
			}
			pos++
		}
		if pos != b.NextOffset {
			t.Fatalf("read from %d ends at %d, want %d", from, pos, b.NextOffset)
		}
		if want := from <= om.To; (notices == 1) != want || notices > 1 {
			t.Fatalf("read from %d: %d notices", from, notices)
		}
	}
}

// testCapRetries: a retry of a batch the cap dropped is conflict with the
// next offset; of one it kept, answered as the first time.
func testCapRetries(t *testing.T, s buildlog.Store) {
	capped(t, s)
	create(t, s, NewBuild("capr", At(1)))
	var batches []*buildlog.Batch
	next := uint64(0)
	for i := range 60 {
		b := RetryBatchOf(next, Messages(fmt.Sprintf("r%02d", i), 3)...)
		res := appendOK(t, s, "capr", b, At(2))
		batches = append(batches, RetryBatchOf(next, Messages(fmt.Sprintf("r%02d", i), 3)...))
		next = res.NextOffset
	}
	b := getBuild(t, s, "capr")
	if b.Omitted == nil {
		t.Fatal("nothing omitted")
	}
	// Each retry is asked twice: the answer is the same both times.
	for i, batch := range batches {
		fo := *batch.FirstOffset
		for try := range 2 {
			res, err := s.Append(t.Context(), "capr", batch, At(3))
			inRange := fo >= b.Omitted.From && fo <= b.Omitted.To
			switch {
			case inRange:
				wantCode(t, err, buildlog.EConflict, fmt.Sprintf("retry %d of dropped batch %d", try, i))
				var e *buildlog.Error
				if !errors.As(err, &e) || e.NextOffset == nil || *e.NextOffset != next {
					t.Fatalf("retry %d of dropped batch %d: %v, want next_offset %d", try, i, err, next)
				}
			default:
				if err != nil || !res.Replayed || res.FirstOffset != fo || res.NextOffset != fo+3 {
					t.Fatalf("retry %d of kept batch %d at %d: %+v, %v", try, i, fo, res, err)
				}
			}
		}
	}
	// Retries change nothing: not the log's end, the range, the kept bytes.
	after := getBuild(t, s, "capr")
	if after.NextOffset != b.NextOffset || *after.Omitted != *b.Omitted || after.KeptBytes != b.KeptBytes {
		t.Fatalf("after the retries: next %d, omitted %+v, kept %d; before: %d, %+v, %d",
			after.NextOffset, after.Omitted, after.KeptBytes, b.NextOffset, b.Omitted, b.KeptBytes)
	}
}
