package sweep

import (
	"context"
	"log/slog"
	"time"
)

// Retention deletes finished builds, metadata and log, once they finished
// longer than Keep ago. It deletes in bounded batches, one transaction each,
// so a large backlog never holds the store's write lock for long. Several
// servers on one shared store may run it: a build is deleted once.
type Retention struct {
	Store interface {
		DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error)
	}
	Keep     time.Duration
	Interval time.Duration // 0: Keep/10, within [1s, 1h]
	Batch    int           // 0: DefaultRetentionBatch
	// Pause between batches of one sweep, leaving the store to producers.
	Pause time.Duration
	Now   func() time.Time
	Log   *slog.Logger
}

// DefaultRetentionBatch is how many builds one delete removes at most.
const DefaultRetentionBatch = 100

func (s *Retention) defaults() {
	s.Now, s.Log = clock(s.Now, s.Log)
	if s.Batch <= 0 {
		s.Batch = DefaultRetentionBatch
	}
}

// Run sweeps until ctx ends.
func (s *Retention) Run(ctx context.Context) {
	s.defaults()
	every := s.Interval
	if every <= 0 {
		every = min(max(s.Keep/10, time.Second), time.Hour)
	}
	repeat(ctx, every, func() {
		if n, err := s.Once(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("retention sweep failed", "err", err, "deleted", n)
		} else if n > 0 {
			s.Log.Info("retention: deleted finished builds", "count", n, "older_than", s.Keep.String())
		}
	})
}

// Once deletes every build finished before now-Keep, batch by batch; it
// returns how many it deleted.
func (s *Retention) Once(ctx context.Context) (int, error) {
	s.defaults()
	before := s.Now().UTC().Add(-s.Keep)
	total := 0
	for {
		n, err := s.Store.DeleteFinished(ctx, before, s.Batch)
		total += n
		if err != nil || n < s.Batch {
			return total, err
		}
		if s.Pause > 0 {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-time.After(s.Pause):
			}
		}
	}
}
