package sweep_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/sqlite"
	"buildlog/internal/sweep"
	"buildlog/internal/testkit"
)

// countingStore counts DeleteFinished calls and their sizes.
type countingStore struct {
	*sqlite.Store
	calls []int
}

func (c *countingStore) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	n, err := c.Store.DeleteFinished(ctx, before, limit)
	c.calls = append(c.calls, n)
	return n, err
}

// Retention deletes finished builds older than Keep, in batches of at
// most Batch, and nothing else.
func TestRetentionDeletesOldFinishedBuilds(t *testing.T) {
	ctx := context.Background()
	st := testkit.OpenSQLite(t, t.TempDir())
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id string, at time.Time, finish bool) {
		t.Helper()
		if err := st.CreateBuild(ctx, (&buildlog.NewBuild{}).Build(id, "tmpl", "default", at)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Append(ctx, id, batch("x"), at); err != nil {
			t.Fatal(err)
		}
		if finish {
			if _, _, err := st.Finish(ctx, id, &buildlog.Finish{Status: buildlog.StatusFailed, Timestamp: buildlog.Timestamp(at)}, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 25 {
		mk(fmt.Sprintf("tb_old%d", i), t0, true)
	}
	mk("tb_old_running", t0, false)
	mk("tb_recent", t0.Add(29*24*time.Hour), true)

	cs := &countingStore{Store: st}
	r := &sweep.Retention{Store: cs, Keep: 30 * 24 * time.Hour, Batch: 10,
		Now: func() time.Time { return t0.Add(30*24*time.Hour + time.Minute) }}
	n, err := r.Once(ctx)
	if err != nil || n != 25 {
		t.Fatalf("deleted %d, %v; want 25", n, err)
	}
	if fmt.Sprint(cs.calls) != "[10 10 5]" {
		t.Fatalf("batches %v, want [10 10 5]", cs.calls)
	}
	for _, id := range []string{"tb_old0", "tb_old24"} {
		if _, err := st.Build(ctx, id); buildlog.ErrorCode(err) != buildlog.ENotFound {
			t.Fatalf("%s: %v, want not_found", id, err)
		}
		if chunks, err := st.ReadLog(ctx, id, 0, 1<<20); err != nil || len(chunks) != 0 {
			t.Fatalf("%s's log outlived it: %d chunks, %v", id, len(chunks), err)
		}
	}
	for _, id := range []string{"tb_old_running", "tb_recent"} {
		if _, err := st.Build(ctx, id); err != nil {
			t.Fatalf("%s deleted: %v", id, err)
		}
	}
}
