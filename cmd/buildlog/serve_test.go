package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/live"
	"buildlog/internal/metrics"
	"buildlog/internal/sqlite"
)

// slowStore is a real store whose background queries take a while to
// notice that their context has ended, as a query on a busy database does.
// busy counts the calls still running.
type slowStore struct {
	buildlog.Store
	busy    atomic.Int32
	started chan string
}

func (s *slowStore) linger(ctx context.Context, what string) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	select {
	case s.started <- what:
	default:
	}
	<-ctx.Done()
	time.Sleep(100 * time.Millisecond)
}

func (s *slowStore) IdleBuilds(ctx context.Context, before time.Time, limit int) ([]string, error) {
	s.linger(ctx, "idle sweep")
	return nil, ctx.Err()
}

func (s *slowStore) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	s.linger(ctx, "retention")
	return 0, ctx.Err()
}

func (s *slowStore) WatchCommits(ctx context.Context, fn func(string)) error {
	s.linger(ctx, "commit watcher")
	return ctx.Err()
}

// serve closes the store only once its background work has stopped: the
// idle sweep, retention and the commit watcher must all have returned when
// stop does, or the store is closed under their queries.
func TestBackgroundStopsBeforeStoreCloses(t *testing.T) {
	st, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &slowStore{Store: st, started: make(chan string, 3)}
	c := &serveConfig{idleTimeout: time.Minute, retention: time.Hour}
	stop := startBackground(s, s, live.New(0), c, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	for i := range 3 {
		select {
		case <-s.started:
		case <-time.After(10 * time.Second):
			stop()
			t.Fatalf("only %d of the 3 background tasks started", i)
		}
	}
	stop()
	if n := s.busy.Load(); n != 0 {
		t.Fatalf("%d background tasks still running after stop returned", n)
	}
}
