package storetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"buildlog"
)

// Run runs the conformance suite against stores made by newStore, which
// returns a fresh, empty store for each subtest and registers its own
// cleanup. Subtests run one after another (never t.Parallel), so a factory
// may hand out one database emptied between subtests.
func Run(t *testing.T, newStore func(t *testing.T) buildlog.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s buildlog.Store)
	}{
		{"CreateBuild", testCreateBuild},
		{"Builds", testBuilds},
		{"BuildsPaging", testBuildsPaging},
		{"LatestBuild", testLatestBuild},
		{"Append", testAppend},
		{"AppendErrors", testAppendErrors},
		{"AppendRetry", testAppendRetry},
		{"Finish", testFinish},
		{"FinishStatuses", testFinishStatuses},
		{"FinishAgain", testFinishAgain},
		{"FinishQueued", testFinishQueued},
		{"FinishIdle", testFinishIdle},
		{"ReadLog", testReadLog},
		{"ReadLogPaging", testReadLogPaging},
		{"ReadLogBounds", testReadLogBounds},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConcurrentBuilds", testConcurrentBuilds},
		{"FinishRacesAppends", testFinishRacesAppends},
		{"Fleet", testFleet},
		{"GroupDuplicates", testGroupDuplicates},
		{"GroupSealed", testGroupSealed},
		{"AppendGuards", testAppendGuards},
		{"AppendCancelled", testAppendCancelled},
		{"IdleBuilds", testIdleBuilds},
		{"ActivityGranularity", testActivityGranularity},
		{"DeleteFinished", testDeleteFinished},
		{"Keys", testKeys},
		{"Secret", testSecret},
		{"Ping", testPing},
	}
	tests = append(tests, storageTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

func testCreateBuild(t *testing.T, s buildlog.Store) {
	// A zone other than UTC checks that the store keeps the instant and
	// hands it back in UTC.
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	tests := []struct {
		name  string
		build *buildlog.Build
	}{
		{"minimal", NewBuild("b-minimal", At(1))},
		{"every field", &buildlog.Build{
			ID: "b-full", TemplateID: "tmpl_full", Team: "other-team",
			Namespace: "ns", Name: "app", Version: "1.2.3-rc.1+meta",
			TotalSteps: ptr[int64](5), MaxAttempts: ptr[int64](3),
			Metadata:  json.RawMessage(`{"b":1,"a":{"c":[1,2,"x"]}}`),
			Status:    buildlog.StatusQueued,
			CreatedAt: At(2).In(zone), UpdatedAt: At(3).In(zone), LastActivity: At(4).In(zone),
			Secrets: []string{"s3cr3t", "token with spaces"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			create(t, s, tt.build)
			got := getBuild(t, s, tt.build.ID)
			// Absent optional fields (nil in the minimal build) must stay
			// absent: diffBuild tells nil from a zero value.
			wantBuild(t, got, tt.build, "Build after CreateBuild")
		})
	}

	t.Run("duplicate id", func(t *testing.T) {
		dup := NewBuild("b-minimal", At(9))
		dup.TemplateID = "tmpl_other"
		err := s.CreateBuild(t.Context(), dup)
		wantCode(t, err, buildlog.EConflict, "CreateBuild of an existing id")
		if got := getBuild(t, s, "b-minimal"); got.TemplateID != "tmpl_1" {
			t.Errorf("after duplicate CreateBuild: TemplateID = %q, want the original tmpl_1", got.TemplateID)
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		_, err := s.Build(t.Context(), "no-such-build")
		wantCode(t, err, buildlog.ENotFound, "Build of an unknown id")
	})
}

// listFixture creates five builds covering teams, templates, statuses and a
// tie in CreatedAt; newest first they are b5 b4 b3 b2 b1.
func listFixture(t *testing.T, s buildlog.Store) {
	t.Helper()
	mk := func(id, team, tmpl string, created time.Time) {
		b := NewBuild(id, created)
		b.Team, b.TemplateID = team, tmpl
		create(t, s, b)
	}
	mk("b1", "acme", "tmpl_a", At(1))
	mk("b2", "acme", "tmpl_b", At(2))
	mk("b3", "other", "tmpl_a", At(2)) // same time as b2: the id breaks the tie
	mk("b4", "acme", "tmpl_a", At(3))
	mk("b5", "other", "tmpl_b", At(4))
	appendOK(t, s, "b4", BatchOf("hello"), At(5))
	finishOK(t, s, "b5", buildlog.StatusReady, At(6))
}

func testBuilds(t *testing.T, s buildlog.Store) {
	listFixture(t, s)
	tests := []struct {
		name   string
		filter buildlog.BuildFilter
		want   []string
	}{
		{"all", buildlog.BuildFilter{Limit: 100}, []string{"b5", "b4", "b3", "b2", "b1"}},
		{"team", buildlog.BuildFilter{Team: "acme", Limit: 100}, []string{"b4", "b2", "b1"}},
		{"template", buildlog.BuildFilter{TemplateID: "tmpl_a", Limit: 100}, []string{"b4", "b3", "b1"}},
		{"status queued", buildlog.BuildFilter{Status: buildlog.StatusQueued, Limit: 100}, []string{"b3", "b2", "b1"}},
		{"status building", buildlog.BuildFilter{Status: buildlog.StatusBuilding, Limit: 100}, []string{"b4"}},
		{"status ready", buildlog.BuildFilter{Status: buildlog.StatusReady, Limit: 100}, []string{"b5"}},
		{"team and template", buildlog.BuildFilter{Team: "other", TemplateID: "tmpl_b", Limit: 100}, []string{"b5"}},
		{"limit", buildlog.BuildFilter{Limit: 2}, []string{"b5", "b4"}},
		{"limit with filter", buildlog.BuildFilter{Team: "acme", Limit: 1}, []string{"b4"}},
		{"after a tie", buildlog.BuildFilter{Limit: 100, After: &buildlog.BuildCursor{CreatedAt: At(2), ID: "b3"}}, []string{"b2", "b1"}},
		{"after a tie with filter", buildlog.BuildFilter{Team: "acme", Limit: 100, After: &buildlog.BuildCursor{CreatedAt: At(2), ID: "b3"}}, []string{"b2", "b1"}},
		{"after a position no build has", buildlog.BuildFilter{Limit: 100, After: &buildlog.BuildCursor{CreatedAt: At(3), ID: "zzz"}}, []string{"b4", "b3", "b2", "b1"}},
		{"after the last", buildlog.BuildFilter{Limit: 100, After: &buildlog.BuildCursor{CreatedAt: At(1), ID: "b1"}}, nil},
		{"no match", buildlog.BuildFilter{Team: "nobody", Limit: 100}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Builds(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("Builds: %v", err)
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("Builds = %q, want %q", ids(got), tt.want)
			}
		})
	}

	t.Run("builds are complete", func(t *testing.T) {
		got, err := s.Builds(t.Context(), buildlog.BuildFilter{Limit: 100})
		if err != nil {
			t.Fatalf("Builds: %v", err)
		}
		for _, b := range got {
			wantBuild(t, b, getBuild(t, s, b.ID), "Builds entry "+b.ID)
		}
	})
}

func testBuildsPaging(t *testing.T, s buildlog.Store) {
	// Many builds share each creation time, so only a cursor that breaks
	// ties by id visits each exactly once.
	for i := range 25 {
		create(t, s, NewBuild(fmt.Sprintf("p%02d", (i*7)%25), At(i%4)))
	}
	all, err := s.Builds(t.Context(), buildlog.BuildFilter{Limit: 100})
	if err != nil {
		t.Fatalf("Builds: %v", err)
	}
	if len(all) != 25 {
		t.Fatalf("Builds: %d builds, want 25", len(all))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.CreatedAt.Before(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID {
			t.Fatalf("Builds not newest first: %s (%v) before %s (%v)", a.ID, a.CreatedAt, b.ID, b.CreatedAt)
		}
	}
	for _, limit := range []int{1, 3, 10} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []string
			f := buildlog.BuildFilter{Limit: limit}
			for page := 0; ; page++ {
				if page > 30 {
					t.Fatalf("paging does not end; so far %q", got)
				}
				bs, err := s.Builds(t.Context(), f)
				if err != nil {
					t.Fatalf("Builds: %v", err)
				}
				if len(bs) > limit {
					t.Fatalf("Builds: %d builds, limit %d", len(bs), limit)
				}
				if len(bs) == 0 {
					break
				}
				got = append(got, ids(bs)...)
				last := bs[len(bs)-1]
				f.After = &buildlog.BuildCursor{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			if want := ids(all); !slices.Equal(got, want) {
				t.Errorf("paged = %q, want %q", got, want)
			}
		})
	}
}

func testLatestBuild(t *testing.T, s buildlog.Store) {
	mk := func(id, team, ns, name, version string, created time.Time) {
		b := NewBuild(id, created)
		b.Team, b.Namespace, b.Name, b.Version = team, ns, name, version
		create(t, s, b)
	}
	mk("l1", "acme", "default", "app", "1.0.0", At(1))
	mk("l2", "other", "default", "app", "1.0.0", At(3))
	mk("l3", "acme", "default", "app", "1.0.0", At(2))
	mk("l4", "acme", "default", "app", "1.0.0", At(2)) // ties l3; the greater id is newer
	// Newer builds of neighbouring templates must not be picked.
	mk("x1", "acme", "default", "app", "1.0.1", At(9))
	mk("x2", "acme", "default", "app2", "1.0.0", At(9))
	mk("x3", "acme", "ns2", "app", "1.0.0", At(9))
	create(t, s, NewBuild("x4", At(9))) // no template name at all

	tests := []struct {
		name, team, ns, tmpl, version string
		want                          string // "" for not_found
	}{
		{"any team", "", "default", "app", "1.0.0", "l2"},
		{"team acme", "acme", "default", "app", "1.0.0", "l4"},
		{"team other", "other", "default", "app", "1.0.0", "l2"},
		{"other version", "", "default", "app", "1.0.1", "x1"},
		{"other namespace", "", "ns2", "app", "1.0.0", "x3"},
		{"unknown version", "", "default", "app", "9.9.9", ""},
		{"unknown team", "nobody", "default", "app", "1.0.0", ""},
		{"team without that version", "other", "default", "app", "1.0.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.LatestBuild(t.Context(), tt.team, tt.ns, tt.tmpl, tt.version)
			if tt.want == "" {
				wantCode(t, err, buildlog.ENotFound, "LatestBuild")
				return
			}
			if err != nil {
				t.Fatalf("LatestBuild: %v", err)
			}
			if got.ID != tt.want {
				t.Errorf("LatestBuild = %s, want %s", got.ID, tt.want)
			}
			wantBuild(t, got, getBuild(t, s, tt.want), "LatestBuild")
		})
	}
}

func testAppend(t *testing.T, s buildlog.Store) {
	b := NewBuild("build-1", At(0))
	create(t, s, b)

	withPhase := Entries("compiling", "still compiling", "done")
	withPhase[1].Phase = "compile"
	batchA := buildlog.NewBatch(withPhase, nil, nil)
	installing := Entries("installing", "installed")
	installing[1].Phase = "install"
	batchB := buildlog.NewBatch(installing, nil, nil)
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
		wantC := buildlog.Chunk{First: st.first, Count: st.batch.Len(), Data: st.batch.Encode(b.ID, b.TemplateID, st.first)}
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
		wantChunk(t, res.Chunk, buildlog.Chunk{First: next, Count: 1, Data: c.Encode(id, "tmpl_1", next)}, "AppendResult.Chunk")
		if got := getBuild(t, s, id); got.NextOffset != next+1 {
			t.Errorf("NextOffset = %d, want %d", got.NextOffset, next+1)
		}
	})
}

// finishEntryChunk is the chunk Finish must store for f at offset first.
func finishEntryChunk(b *buildlog.Build, f *buildlog.Finish, first uint64) buildlog.Chunk {
	batch := buildlog.NewBatch([]buildlog.Entry{f.Entry()}, nil, nil)
	return buildlog.Chunk{First: first, Count: 1, Terminal: true, Data: batch.Encode(b.ID, b.TemplateID, first)}
}

func testFinish(t *testing.T, s buildlog.Store) {
	b := NewBuild("fin", At(0))
	create(t, s, b)
	phased := Entries("compiling")
	phased[0].Phase = "compile"
	appendOK(t, s, b.ID, buildlog.NewBatch(phased, nil, nil), At(10))
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
		lines = append(lines, Lines(t, []buildlog.Chunk{{First: res.FirstOffset, Count: n, Data: batch.Encode(id, b.TemplateID, res.FirstOffset)}})...)
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
		want := buildlog.Chunk{First: d.res.FirstOffset, Count: d.batch.Len(), Data: d.batch.Encode(b.ID, b.TemplateID, d.res.FirstOffset)}
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

func testIdleBuilds(t *testing.T, s buildlog.Store) {
	create(t, s, NewBuild("i1", At(1))) // idle since its creation
	create(t, s, NewBuild("i2", At(0))) // created first, but active at 5
	appendOK(t, s, "i2", BatchOf("a"), At(5))
	create(t, s, NewBuild("i3", At(2))) // finished builds are never idle
	finishOK(t, s, "i3", buildlog.StatusFailed, At(3))
	create(t, s, NewBuild("i4", At(8)))
	create(t, s, NewBuild("i5", At(1).Add(time.Second/2)))

	tests := []struct {
		name   string
		before time.Time
		limit  int
		want   []string
	}{
		{"oldest first", At(6), 10, []string{"i1", "i5", "i2"}},
		{"limit", At(6), 2, []string{"i1", "i5"}},
		{"strictly before", At(5), 10, []string{"i1", "i5"}},
		{"none", At(1), 10, nil},
		{"all unfinished", At(100), 10, []string{"i1", "i5", "i2", "i4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.IdleBuilds(t.Context(), tt.before, tt.limit)
			if err != nil {
				t.Fatalf("IdleBuilds: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("IdleBuilds(%v, %d) = %q, want %q", tt.before.Format(time.StampMicro), tt.limit, got, tt.want)
			}
		})
	}
}

// An append may leave the recorded activity alone when it is recent, but
// never once it is ActivityGranularity old.
func testActivityGranularity(t *testing.T, s buildlog.Store) {
	g := buildlog.ActivityGranularity
	create(t, s, NewBuild("g", At(0)))
	appendOK(t, s, "g", BatchOf("a"), At(10))
	appendOK(t, s, "g", BatchOf("b"), At(10).Add(g/2)) // may be left unrecorded
	idle := func(before time.Time) bool {
		t.Helper()
		ids, err := s.IdleBuilds(t.Context(), before, 10)
		if err != nil {
			t.Fatalf("IdleBuilds: %v", err)
		}
		return slices.Contains(ids, "g")
	}
	if idle(At(10)) {
		t.Errorf("idle before its append at 10s")
	}
	appendOK(t, s, "g", BatchOf("c"), At(10).Add(g)) // must be recorded
	if idle(At(10).Add(g)) {
		t.Errorf("idle before its append at 10s + %v: the activity was not recorded", g)
	}
	if !idle(At(10).Add(g + time.Microsecond)) {
		t.Errorf("not idle after its last append")
	}
	if b := getBuild(t, s, "g"); b.NextOffset != 3 || b.EntryCount != 3 || !b.UpdatedAt.Equal(At(10).Add(g)) {
		t.Errorf("after three appends: next offset %d, entries %d, updated %v", b.NextOffset, b.EntryCount, b.UpdatedAt)
	}
}

func testDeleteFinished(t *testing.T, s buildlog.Store) {
	for i, fin := range []int{1, 2, 3, 10} {
		id := fmt.Sprintf("d%d", i+1)
		create(t, s, NewBuild(id, At(0)))
		appendOK(t, s, id, BatchOf("a", "b"), At(fin-1))
		finishOK(t, s, id, buildlog.StatusReady, At(fin))
	}
	create(t, s, NewBuild("running", At(0)))
	appendOK(t, s, "running", BatchOf("a"), At(0))

	// Three builds finished before At(5); a limit of 2 leaves one.
	for _, want := range []int{2, 1, 0} {
		got, err := s.DeleteFinished(t.Context(), At(5), 2)
		if err != nil {
			t.Fatalf("DeleteFinished: %v", err)
		}
		if got != want {
			t.Errorf("DeleteFinished(At(5), 2) = %d, want %d", got, want)
		}
	}
	for _, id := range []string{"d1", "d2", "d3"} {
		_, err := s.Build(t.Context(), id)
		wantCode(t, err, buildlog.ENotFound, "Build of a deleted build")
		chunks, err := s.ReadLog(t.Context(), id, 0, 1<<20)
		if err != nil || len(chunks) != 0 {
			t.Errorf("ReadLog of deleted %s = %d chunks, %v; want none", id, len(chunks), err)
		}
	}
	for _, id := range []string{"d4", "running"} {
		getBuild(t, s, id)
		if got := ReadAll(t, s, id); len(got) == 0 {
			t.Errorf("log of kept build %s is gone", id)
		}
	}
	list, err := s.Builds(t.Context(), buildlog.BuildFilter{Limit: 100})
	if err != nil {
		t.Fatalf("Builds: %v", err)
	}
	if got, want := ids(list), []string{"running", "d4"}; !slices.Equal(got, want) {
		t.Errorf("Builds after DeleteFinished = %q, want %q", got, want)
	}
}

func testKeys(t *testing.T, s buildlog.Store) {
	k1 := &buildlog.Key{ID: "key_b", Team: "acme", Scopes: []buildlog.Scope{buildlog.ScopeRead, buildlog.ScopeWrite},
		Name: "ci", CreatedAt: At(2), Hash: buildlog.HashKey("secret-1")}
	k2 := &buildlog.Key{ID: "key_a", Team: "other", Scopes: []buildlog.Scope{buildlog.ScopeAdmin},
		Name: "", CreatedAt: At(1), Hash: buildlog.HashKey("secret-2")}
	for _, k := range []*buildlog.Key{k1, k2} {
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey(%s): %v", k.ID, err)
		}
	}
	wantKey := func(t *testing.T, got, want *buildlog.Key) {
		t.Helper()
		if got.ID != want.ID || got.Team != want.Team || got.Name != want.Name ||
			!slices.Equal(got.Scopes, want.Scopes) || !bytes.Equal(got.Hash, want.Hash) {
			t.Errorf("key = %+v, want %+v", got, want)
		}
		for _, d := range diffTime("CreatedAt", got.CreatedAt, want.CreatedAt) {
			t.Errorf("key %s: %s", want.ID, d)
		}
	}

	t.Run("by hash", func(t *testing.T) {
		got, err := s.KeyByHash(t.Context(), buildlog.HashKey("secret-1"))
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		wantKey(t, got, k1)
		_, err = s.KeyByHash(t.Context(), buildlog.HashKey("unknown"))
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of an unknown hash")
	})
	t.Run("oldest first", func(t *testing.T) {
		got, err := s.Keys(t.Context())
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		if len(got) != 2 {
			t.Fatalf("Keys: %d keys, want 2", len(got))
		}
		wantKey(t, got[0], k2)
		wantKey(t, got[1], k1)
	})
	t.Run("duplicate id", func(t *testing.T) {
		dup := *k1
		dup.Hash = buildlog.HashKey("secret-3")
		err := s.CreateKey(t.Context(), &dup)
		wantCode(t, err, buildlog.EConflict, "CreateKey of an existing id")
		_, err = s.KeyByHash(t.Context(), dup.Hash)
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of a refused key")
	})
	t.Run("delete", func(t *testing.T) {
		if err := s.DeleteKey(t.Context(), k1.ID); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		_, err := s.KeyByHash(t.Context(), k1.Hash)
		wantCode(t, err, buildlog.ENotFound, "KeyByHash of a deleted key")
		got, err := s.Keys(t.Context())
		if err != nil {
			t.Fatalf("Keys: %v", err)
		}
		if len(got) != 1 || got[0].ID != k2.ID {
			t.Errorf("Keys after delete: %d keys, want only %s", len(got), k2.ID)
		}
		wantCode(t, s.DeleteKey(t.Context(), k1.ID), buildlog.ENotFound, "DeleteKey of a deleted key")
		wantCode(t, s.DeleteKey(t.Context(), "key_unknown"), buildlog.ENotFound, "DeleteKey of an unknown key")
	})
}

func testSecret(t *testing.T, s buildlog.Store) {
	// Concurrent first uses must agree on one secret.
	secrets := make([][]byte, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range secrets {
		wg.Go(func() { secrets[i], errs[i] = s.Secret(t.Context()) })
	}
	wg.Wait()
	for i := range secrets {
		if errs[i] != nil {
			t.Fatalf("Secret: %v", errs[i])
		}
		if len(secrets[i]) < 32 {
			t.Fatalf("Secret: %d bytes, want at least 32", len(secrets[i]))
		}
		if !bytes.Equal(secrets[i], secrets[0]) {
			t.Fatalf("Secret: call %d returned another secret", i)
		}
	}
	if bytes.Count(secrets[0], secrets[0][:1]) == len(secrets[0]) {
		t.Errorf("Secret = %x: not random", secrets[0])
	}
	again, err := s.Secret(t.Context())
	if err != nil || !bytes.Equal(again, secrets[0]) {
		t.Errorf("Secret again = %x, %v; want %x", again, err, secrets[0])
	}
}

func testPing(t *testing.T, s buildlog.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
