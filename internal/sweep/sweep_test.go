package sweep_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/live"
	"buildlog/internal/sweep"
	"buildlog/internal/testkit"
	"buildlog/internal/wire"
)

func batch(msg string) *buildlog.Batch {
	return wire.NewBatch([]buildlog.Entry{{Timestamp: "2026-01-01T00:00:00Z", Kind: "message", Level: "info", Message: msg}}, nil, nil)
}

func TestIdleBuildsTimeOut(t *testing.T) {
	ctx := context.Background()
	st := testkit.OpenSQLite(t, t.TempDir())
	hub := live.New(0)
	store := hub.Publishing(st)

	now := time.Date(2026, 3, 17, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	never := (&buildlog.NewBuild{}).Build("tb_never", "tmpl", "default", clock())
	silent := (&buildlog.NewBuild{}).Build("tb_silent", "tmpl", "default", clock())
	busy := (&buildlog.NewBuild{}).Build("tb_busy", "tmpl", "default", clock())
	done := (&buildlog.NewBuild{}).Build("tb_done", "tmpl", "default", clock())
	for _, b := range []*buildlog.Build{never, silent, busy, done} {
		if err := store.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	f := hub.Follow("tb_silent")
	defer f.Close()
	wake := f.Wait()
	if _, err := store.Append(ctx, "tb_silent", batch("a"), clock()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Finish(ctx, "tb_done", &buildlog.Finish{Status: buildlog.StatusReady, Timestamp: "2026-01-01T00:00:00Z"}, clock()); err != nil {
		t.Fatal(err)
	}
	<-wake

	s := &sweep.Idle{Store: store, Timeout: 30 * time.Minute, Now: clock}
	advance(20 * time.Minute)
	if n, err := s.Once(ctx); err != nil || n != 0 {
		t.Fatalf("before the timeout: %d finished, %v", n, err)
	}
	if _, err := store.Append(ctx, "tb_busy", batch("b"), clock()); err != nil {
		t.Fatal(err)
	}
	wake = f.Wait()
	advance(11 * time.Minute)
	n, err := s.Once(ctx)
	if err != nil || n != 2 {
		t.Fatalf("after the timeout: %d finished (want never and silent), %v", n, err)
	}
	select {
	case <-wake:
	default:
		t.Fatal("followers of the timed-out build were not woken")
	}
	for id, want := range map[string]buildlog.Status{"tb_never": "timeout", "tb_silent": "timeout", "tb_busy": "building", "tb_done": "ready"} {
		b, err := store.Build(ctx, id)
		if err != nil || b.Status != want {
			t.Fatalf("%s: %v %v, want %s", id, b.Status, err, want)
		}
	}
	chunks, err := store.ReadLog(ctx, "tb_silent", 1, 1<<20)
	if err != nil || len(chunks) != 1 || !chunks[0].Terminal {
		t.Fatalf("terminal chunk: %+v %v", chunks, err)
	}
	// Sweeping again finishes nothing twice.
	advance(time.Hour)
	if n, err := s.Once(ctx); err != nil || n != 1 {
		t.Fatalf("second sweep: %d (want only tb_busy), %v", n, err)
	}
	if b, _ := store.Build(ctx, "tb_silent"); b.NextOffset != 2 {
		t.Fatalf("tb_silent has %d entries, want 2", b.NextOffset)
	}
}
