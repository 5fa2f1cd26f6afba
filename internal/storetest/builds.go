package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"buildlog"
)

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
