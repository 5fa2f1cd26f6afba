package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"buildlog"
)

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
