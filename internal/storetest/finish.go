package storetest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

// finishEntryChunk is the chunk Finish must store for f at offset first.
func finishEntryChunk(b *buildlog.Build, f *buildlog.Finish, first uint64) buildlog.Chunk {
	batch := wire.NewBatch([]buildlog.Entry{f.Entry()}, nil, nil)
	return buildlog.Chunk{First: first, Count: 1, Terminal: true, Data: wire.EncodeBatch(batch, b.ID, b.TemplateID, first)}
}

func testFinish(t *testing.T, s buildlog.Store) {
	b := NewBuild("fin", At(0))
	create(t, s, b)
	phased := Entries("compiling")
	phased[0].Phase = "compile"
	appendOK(t, s, b.ID, wire.NewBatch(phased, nil, nil), At(10))
	appendOK(t, s, b.ID, BatchOf("x", "y"), At(20))

	f := &buildlog.Finish{
		Status: buildlog.StatusFailed, Message: ptr("it broke"),
		Result:      json.RawMessage(`{"ok":false,"code":2}`),
		ErrorDetail: json.RawMessage(`{"step":"compile"}`),
		Timestamp:   "2026-03-17T00:01:00.25+01:00",
	}
	got, chunk, err := s.Finish(t.Context(), b.ID, f, At(50))
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	want := *b
	want.Status = buildlog.StatusFailed
	want.StartedAt, want.FinishedAt = ptr(At(10)), ptr(At(50))
	want.UpdatedAt = At(50)
	want.LastActivity = got.LastActivity // whether finishing counts as activity is the store's choice
	want.NextOffset, want.EntryCount = 4, 4
	want.Result = f.Result
	want.LastPhase = "compile" // the terminal entry has no phase
	wantBuild(t, got, &want, "Finish result")
	wantBuild(t, getBuild(t, s, b.ID), got, "Build after Finish")
	wantChunk(t, chunk, finishEntryChunk(b, f, 3), "Finish chunk")

	chunks := ReadAll(t, s, b.ID)
	for i, c := range chunks {
		if wantTerm := i == len(chunks)-1; c.Terminal != wantTerm {
			t.Errorf("chunk %d: Terminal = %v, want %v", i, c.Terminal, wantTerm)
		}
	}
	wantChunk(t, chunks[len(chunks)-1], finishEntryChunk(b, f, 3), "stored terminal chunk")

	t.Run("sealed", func(t *testing.T) {
		_, err := s.Append(t.Context(), b.ID, BatchOf("late"), At(60))
		wantCode(t, err, buildlog.EConflict, "Append after Finish")
	})
	t.Run("unknown build", func(t *testing.T) {
		_, _, err := s.Finish(t.Context(), "no-such-build", &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: Timestamp}, At(1))
		wantCode(t, err, buildlog.ENotFound, "Finish of an unknown build")
	})
}

func testFinishStatuses(t *testing.T, s buildlog.Store) {
	for i, status := range []buildlog.Status{buildlog.StatusReady, buildlog.StatusFailed, buildlog.StatusCancelled, buildlog.StatusTimeout} {
		t.Run(string(status), func(t *testing.T) {
			b := NewBuild(fmt.Sprintf("st%d", i), At(0))
			create(t, s, b)
			appendOK(t, s, b.ID, BatchOf("one"), At(1))
			f := &buildlog.Finish{Status: status, Timestamp: Timestamp}
			got, chunk, err := s.Finish(t.Context(), b.ID, f, At(2))
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if got.Status != status {
				t.Errorf("Status = %s, want %s", got.Status, status)
			}
			if len(got.Result) != 0 {
				t.Errorf("Result = %q, want none", got.Result)
			}
			wantChunk(t, chunk, finishEntryChunk(b, f, 1), "Finish chunk")
		})
	}
}

func testFinishAgain(t *testing.T, s buildlog.Store) {
	b := NewBuild("again", At(0))
	create(t, s, b)
	appendOK(t, s, b.ID, BatchOf("one"), At(1))
	first, _ := finishOK(t, s, b.ID, buildlog.StatusReady, At(2))
	log := ReadAll(t, s, b.ID)

	t.Run("same status", func(t *testing.T) {
		got, chunk, err := s.Finish(t.Context(), b.ID, &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: Timestamp}, At(9))
		if err != nil {
			t.Fatalf("Finish again: %v", err)
		}
		wantBuild(t, got, first, "Finish again")
		if chunk.Count != 0 || len(chunk.Data) != 0 || chunk.Terminal {
			t.Errorf("Finish again: chunk {Count %d, %d bytes, Terminal %v}, want empty", chunk.Count, len(chunk.Data), chunk.Terminal)
		}
	})
	t.Run("other status", func(t *testing.T) {
		_, _, err := s.Finish(t.Context(), b.ID, &buildlog.Finish{Status: buildlog.StatusFailed, Timestamp: Timestamp}, At(9))
		wantCode(t, err, buildlog.EConflict, "Finish with another status")
	})
	wantBuild(t, getBuild(t, s, b.ID), first, "Build after finishing again")
	if got := ReadAll(t, s, b.ID); len(got) != len(log) {
		t.Errorf("log after finishing again: %d chunks, want %d", len(got), len(log))
	}
}

func testFinishQueued(t *testing.T, s buildlog.Store) {
	b := NewBuild("never-started", At(0))
	create(t, s, b)
	f := &buildlog.Finish{Status: buildlog.StatusCancelled, Timestamp: Timestamp}
	got, chunk, err := s.Finish(t.Context(), b.ID, f, At(5))
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if got.Status != buildlog.StatusCancelled || got.StartedAt != nil || got.FinishedAt == nil || !got.FinishedAt.Equal(At(5)) {
		t.Errorf("Finish of a queued build: Status %s, StartedAt %v, FinishedAt %v; want cancelled, nil, %v",
			got.Status, got.StartedAt, got.FinishedAt, At(5))
	}
	if got.NextOffset != 1 || got.EntryCount != 1 {
		t.Errorf("NextOffset, EntryCount = %d, %d, want 1, 1", got.NextOffset, got.EntryCount)
	}
	wantChunk(t, chunk, finishEntryChunk(b, f, 0), "Finish chunk")
	wantBuild(t, getBuild(t, s, b.ID), got, "Build after Finish")
}

func testFinishIdle(t *testing.T, s buildlog.Store) {
	b := NewBuild("idle", At(0))
	create(t, s, b)
	appendOK(t, s, b.ID, BatchOf("one"), At(10)) // last activity At(10)
	before := getBuild(t, s, b.ID)

	// "Active since" includes activity exactly at IdleBefore: only a build
	// whose last activity is strictly before it is idle.
	for _, idleBefore := range []time.Time{At(5), At(10)} {
		t.Run(fmt.Sprintf("active since %v", idleBefore.Format(time.StampMicro)), func(t *testing.T) {
			f := &buildlog.Finish{Status: buildlog.StatusTimeout, Timestamp: Timestamp, IdleBefore: idleBefore}
			_, _, err := s.Finish(t.Context(), b.ID, f, At(20))
			wantCode(t, err, buildlog.EConflict, "conditional Finish of an active build")
			wantBuild(t, getBuild(t, s, b.ID), before, "Build after refused Finish")
			if got := ReadAll(t, s, b.ID); len(got) != 1 {
				t.Errorf("log after refused Finish: %d chunks, want 1", len(got))
			}
		})
	}
	t.Run("idle", func(t *testing.T) {
		f := &buildlog.Finish{Status: buildlog.StatusTimeout, Timestamp: Timestamp, IdleBefore: At(10).Add(time.Microsecond)}
		got, chunk, err := s.Finish(t.Context(), b.ID, f, At(20))
		if err != nil {
			t.Fatalf("conditional Finish of an idle build: %v", err)
		}
		if got.Status != buildlog.StatusTimeout {
			t.Errorf("Status = %s, want timeout", got.Status)
		}
		wantChunk(t, chunk, finishEntryChunk(b, f, 1), "Finish chunk")
	})
}

func testFinishRacesAppends(t *testing.T, s buildlog.Store) {
	b := NewBuild("race", At(0))
	create(t, s, b)
	appendOK(t, s, b.ID, BatchOf("first"), At(1))
	var wg sync.WaitGroup
	started := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			<-started
			for i := range 30 {
				_, err := s.Append(t.Context(), b.ID, BatchOf(fmt.Sprintf("w%d %d", w, i)), At(2))
				if err != nil {
					if code := buildlog.ErrorCode(err); code != buildlog.EConflict {
						t.Errorf("Append racing Finish: %v, want success or conflict", err)
					}
					return
				}
			}
		})
	}
	close(started)
	got, chunk, err := s.Finish(t.Context(), b.ID, &buildlog.Finish{Status: buildlog.StatusCancelled, Timestamp: Timestamp}, At(3))
	wg.Wait()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	chunks := ReadAll(t, s, b.ID)
	last := chunks[len(chunks)-1]
	if !last.Terminal || last.First != chunk.First || got.NextOffset != last.End() {
		t.Errorf("terminal chunk at %d (Terminal %v), Finish said %d, NextOffset %d: want the terminal chunk last",
			last.First, last.Terminal, chunk.First, got.NextOffset)
	}
	wantBuild(t, getBuild(t, s, b.ID), got, "Build after Finish")
}
