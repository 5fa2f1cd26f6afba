package storetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/wire"
)

func testAppend(t *testing.T, s buildlog.Store) {
	b := NewBuild("build-1", At(0))
	create(t, s, b)

	withPhase := Entries("compiling", "still compiling", "done")
	withPhase[1].Phase = "compile"
	batchA := wire.NewBatch(withPhase, nil, nil)
	installing := Entries("installing", "installed")
	installing[1].Phase = "install"
	batchB := wire.NewBatch(installing, nil, nil)
	batchC := BatchOf("no phase here")

	steps := []struct {
		batch         *buildlog.Batch
		now           time.Time
		first, next   uint64
		wantLastPhase string
	}{
		{batchA, At(10), 0, 3, "compile"},
		{batchB, At(20), 3, 5, "install"},
		{batchC, At(30), 5, 6, "install"}, // a batch without a phase keeps the last one
	}
	want := *b
	var wantChunks []buildlog.Chunk
	for i, st := range steps {
		res := appendOK(t, s, b.ID, st.batch, st.now)
		what := fmt.Sprintf("append %d", i)
		if res.FirstOffset != st.first || res.NextOffset != st.next || res.Replayed {
			t.Errorf("%s: result {First %d, Next %d, Replayed %v}, want {%d, %d, false}",
				what, res.FirstOffset, res.NextOffset, res.Replayed, st.first, st.next)
		}
		wantC := buildlog.Chunk{First: st.first, Count: st.batch.Len(), Data: wire.EncodeBatch(st.batch, b.ID, b.TemplateID, st.first)}
		wantChunk(t, res.Chunk, wantC, what+": AppendResult.Chunk")
		wantChunks = append(wantChunks, wantC)

		want.Status = buildlog.StatusBuilding
		want.StartedAt = ptr(At(10)) // the first append's time, kept after
		want.NextOffset, want.EntryCount = st.next, st.next
		want.LastPhase = st.wantLastPhase
		want.LastActivity, want.UpdatedAt = st.now, st.now
		wantBuild(t, getBuild(t, s, b.ID), &want, what+": Build")
	}

	got, err := s.ReadLog(t.Context(), b.ID, 0, 1<<20)
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
	if len(got) != len(wantChunks) {
		t.Fatalf("ReadLog: %d chunks, want %d", len(got), len(wantChunks))
	}
	for i := range got {
		wantChunk(t, got[i], wantChunks[i], fmt.Sprintf("ReadLog chunk %d", i))
	}
}

func testAppendErrors(t *testing.T, s buildlog.Store) {
	t.Run("unknown build", func(t *testing.T) {
		_, err := s.Append(t.Context(), "no-such-build", BatchOf("x"), At(1))
		wantCode(t, err, buildlog.ENotFound, "Append to an unknown build")
	})
	t.Run("finished build", func(t *testing.T) {
		create(t, s, NewBuild("done", At(0)))
		appendOK(t, s, "done", BatchOf("a", "b"), At(1))
		finishOK(t, s, "done", buildlog.StatusReady, At(2))
		before := getBuild(t, s, "done")

		_, err := s.Append(t.Context(), "done", BatchOf("late"), At(3))
		wantCode(t, err, buildlog.EConflict, "Append after Finish")
		_, err = s.Append(t.Context(), "done", RetryBatchOf(3, "late"), At(3))
		wantCode(t, err, buildlog.EConflict, "Append with first offset after Finish")

		wantBuild(t, getBuild(t, s, "done"), before, "Build after refused appends")
		if got := ReadAll(t, s, "done"); len(got) != 2 || !got[1].Terminal {
			t.Errorf("log after refused appends: %d chunks, want the batch and the terminal chunk", len(got))
		}
	})
}

func testAppendRetry(t *testing.T, s buildlog.Store) {
	const id = "retry"
	create(t, s, NewBuild(id, At(0)))
	a := RetryBatchOf(0, "a0", "a1", "a2")
	b := RetryBatchOf(3, "b0", "b1")
	plain := BatchOf("p0")
	resA := appendOK(t, s, id, a, At(1))
	resB := appendOK(t, s, id, b, At(2))
	resP := appendOK(t, s, id, plain, At(3))
	if resA.FirstOffset != 0 || resA.NextOffset != 3 || resB.FirstOffset != 3 || resB.NextOffset != 5 || resP.FirstOffset != 5 {
		t.Fatalf("appends at next offset: got %+v %+v %+v", resA, resB, resP)
	}
	stored := ReadAll(t, s, id)
	before := getBuild(t, s, id)
	const next = 6

	unchanged := func(t *testing.T) {
		t.Helper()
		wantBuild(t, getBuild(t, s, id), before, "Build after retry")
		got := ReadAll(t, s, id)
		if len(got) != len(stored) {
			t.Fatalf("log after retry: %d chunks, want %d", len(got), len(stored))
		}
		for i := range got {
			wantChunk(t, got[i], stored[i], fmt.Sprintf("chunk %d after retry", i))
		}
	}

	replays := []struct {
		name        string
		batch       *buildlog.Batch
		first, next uint64
	}{
		{"first batch, after later ones", RetryBatchOf(0, "a0", "a1", "a2"), 0, 3},
		{"middle batch", RetryBatchOf(3, "b0", "b1"), 3, 5},
	}
	for _, tt := range replays {
		t.Run("replay "+tt.name, func(t *testing.T) {
			res, err := s.Append(t.Context(), id, tt.batch, At(50))
			if err != nil {
				t.Fatalf("Append retry: %v", err)
			}
			if !res.Replayed || res.FirstOffset != tt.first || res.NextOffset != tt.next {
				t.Errorf("retry = {First %d, Next %d, Replayed %v}, want {%d, %d, true}",
					res.FirstOffset, res.NextOffset, res.Replayed, tt.first, tt.next)
			}
			if res.Chunk.Count != 0 || len(res.Chunk.Data) != 0 {
				t.Errorf("replayed retry carries a chunk of %d entries; want none (nothing is fanned out twice)", res.Chunk.Count)
			}
			unchanged(t)
		})
	}

	conflicts := []struct {
		name  string
		batch *buildlog.Batch
	}{
		{"different entries at an old offset", RetryBatchOf(0, "a0", "a1", "CHANGED")},
		{"past the next offset", RetryBatchOf(next+1, "x")},
		{"far past the next offset", RetryBatchOf(1<<40, "x")},
		{"inside a stored chunk", RetryBatchOf(1, "a1", "a2")},
		// The same hash as a stored batch, but not where it was stored.
		{"stored batch at another offset", RetryBatchOf(1, "a0", "a1", "a2")},
		// A batch stored without first_offset has no hash to match.
		{"batch stored without first offset", RetryBatchOf(5, "p0")},
	}
	for _, tt := range conflicts {
		t.Run("conflict "+tt.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), id, tt.batch, At(60))
			wantConflictAt(t, err, next, "Append")
			unchanged(t)
		})
	}

	t.Run("at the next offset stores", func(t *testing.T) {
		c := RetryBatchOf(next, "c0")
		res := appendOK(t, s, id, c, At(70))
		if res.Replayed || res.FirstOffset != next || res.NextOffset != next+1 {
			t.Errorf("Append at next = %+v, want stored at %d", res, next)
		}
		wantChunk(t, res.Chunk, buildlog.Chunk{First: next, Count: 1, Data: wire.EncodeBatch(c, id, "tmpl_1", next)}, "AppendResult.Chunk")
		if got := getBuild(t, s, id); got.NextOffset != next+1 {
			t.Errorf("NextOffset = %d, want %d", got.NextOffset, next+1)
		}
	})
}

// appended is one batch a goroutine appended and what the store answered.
type appended struct {
	batch *buildlog.Batch
	res   buildlog.AppendResult
}

// checkAppended fails t unless the batches tile the build's log densely
// from 0, each stored intact where the store said.
func checkAppended(t *testing.T, s buildlog.Store, b *buildlog.Build, done []appended) {
	t.Helper()
	sort.Slice(done, func(i, j int) bool { return done[i].res.FirstOffset < done[j].res.FirstOffset })
	var next uint64
	for _, d := range done {
		if d.res.FirstOffset != next || d.res.NextOffset != next+uint64(d.batch.Len()) {
			t.Fatalf("batch of %d answered [%d, %d), want to start at %d", d.batch.Len(), d.res.FirstOffset, d.res.NextOffset, next)
		}
		next = d.res.NextOffset
	}
	if got := getBuild(t, s, b.ID); got.NextOffset != next || got.EntryCount != next {
		t.Errorf("NextOffset, EntryCount = %d, %d, want %d", got.NextOffset, got.EntryCount, next)
	}
	stored := ReadAll(t, s, b.ID)
	if len(stored) != len(done) {
		t.Fatalf("%d chunks stored, want %d", len(stored), len(done))
	}
	for i, d := range done {
		want := buildlog.Chunk{First: d.res.FirstOffset, Count: d.batch.Len(), Data: wire.EncodeBatch(d.batch, b.ID, b.TemplateID, d.res.FirstOffset)}
		wantChunk(t, stored[i], want, fmt.Sprintf("chunk %d", i))
		wantChunk(t, d.res.Chunk, want, fmt.Sprintf("AppendResult.Chunk %d", i))
	}
}

// appendConcurrently runs workers goroutines, each appending n random-size
// batches to the build that pick(worker) names, and returns what each build
// got. Nothing in it depends on timing.
func appendConcurrently(t *testing.T, s buildlog.Store, workers, n int, pick func(worker int) string) map[string][]appended {
	t.Helper()
	var (
		mu   sync.Mutex
		done = map[string][]appended{}
		wg   sync.WaitGroup
	)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			id := pick(w)
			for i := range n {
				batch := BatchOf(Messages(fmt.Sprintf("w%d b%d %s", w, i, bytes.Repeat([]byte{'x'}, rng.IntN(100))), 1+rng.IntN(20))...)
				res, err := s.Append(t.Context(), id, batch, At(100+i))
				if err != nil {
					errs <- fmt.Errorf("worker %d, batch %d: %w", w, i, err)
					return
				}
				mu.Lock()
				done[id] = append(done[id], appended{batch, res})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	return done
}

func testConcurrentAppends(t *testing.T, s buildlog.Store) {
	b := NewBuild("busy", At(0))
	create(t, s, b)
	done := appendConcurrently(t, s, 8, 50, func(int) string { return b.ID })
	if len(done[b.ID]) != 400 {
		t.Fatalf("%d appends answered, want 400", len(done[b.ID]))
	}
	checkAppended(t, s, b, done[b.ID])
}

func testConcurrentBuilds(t *testing.T, s buildlog.Store) {
	builds := make([]*buildlog.Build, 4)
	for i := range builds {
		builds[i] = NewBuild(fmt.Sprintf("multi-%d", i), At(0))
		builds[i].TemplateID = fmt.Sprintf("tmpl_%d", i)
		create(t, s, builds[i])
	}
	// Two writers per build, so builds interleave and share writers.
	done := appendConcurrently(t, s, 8, 20, func(w int) string { return builds[w%4].ID })
	for _, b := range builds {
		t.Run(b.ID, func(t *testing.T) { checkAppended(t, s, b, done[b.ID]) })
	}
}
