// Package sweep runs the server's background upkeep: it finishes builds
// whose producer went silent (status timeout), so no reader waits forever.
package sweep

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"buildlog"
)

// Idle finishes builds idle for longer than timeout, checking every
// interval, until ctx ends. Several servers may run it on one shared store:
// Finish's IdleBefore condition makes each build end exactly once, and never
// right after an append that raced the sweep.
type Idle struct {
	Store    buildlog.Store // a publishing store, so followers see the end
	Timeout  time.Duration
	Interval time.Duration // 0: a quarter of Timeout, within [50ms, 30s]
	Now      func() time.Time
	Log      *slog.Logger
}

// batch bounds one sweep's query.
const batch = 100

func (s *Idle) defaults() { s.Now, s.Log = clock(s.Now, s.Log) }

// clock fills in the sweepers' defaults: the real time, and no log.
func clock(now func() time.Time, log *slog.Logger) (func() time.Time, *slog.Logger) {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return now, log
}

// Run sweeps until ctx ends.
func (s *Idle) Run(ctx context.Context) {
	s.defaults()
	every := s.Interval
	if every <= 0 {
		every = min(max(s.Timeout/4, 50*time.Millisecond), 30*time.Second)
	}
	repeat(ctx, every, func() {
		if _, err := s.Once(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("idle sweep failed", "err", err)
		}
	})
}

// repeat calls sweep at once and then every interval, until ctx ends.
func repeat(ctx context.Context, every time.Duration, sweep func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sweep()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once finishes every build idle at this moment; it returns how many.
func (s *Idle) Once(ctx context.Context) (int, error) {
	s.defaults()
	n := 0
	for {
		now := s.Now().UTC().Truncate(time.Microsecond)
		// Stores record activity to within ActivityGranularity; waiting
		// that much longer keeps a build from timing out early.
		before := now.Add(-s.Timeout - buildlog.ActivityGranularity)
		ids, err := s.Store.IdleBuilds(ctx, before, batch)
		if err != nil {
			return n, err
		}
		for _, id := range ids {
			msg := fmt.Sprintf("Build timed out: no log entries for %s", s.Timeout)
			f := &buildlog.Finish{Status: buildlog.StatusTimeout, Message: &msg,
				Timestamp: buildlog.Timestamp(now), IdleBefore: before}
			_, c, err := s.Store.Finish(ctx, id, f, now)
			switch buildlog.ErrorCode(err) {
			case "":
				if c.Count > 0 {
					n++
					s.Log.Info("build timed out", "build_id", id)
				}
			case buildlog.EConflict, buildlog.ENotFound:
				// Finished, resumed or deleted meanwhile: not idle after all.
			default:
				return n, err
			}
		}
		if len(ids) < batch {
			return n, nil
		}
	}
}
