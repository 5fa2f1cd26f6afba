package storetest

import (
	"context"
	"testing"
	"time"

	"buildlog"
)

// testCommitWatcher runs for stores several processes share: every commit
// to a build's log (an append, a finish) is announced with the build's id,
// and WatchCommits returns once its context ends.
func testCommitWatcher(t *testing.T, s buildlog.Store) {
	cw, ok := s.(buildlog.CommitWatcher)
	if !ok {
		t.Skip("not a CommitWatcher")
	}
	ctx, cancel := context.WithCancel(t.Context())
	heard := make(chan string, 1024)
	returned := make(chan error, 1)
	go func() { returned <- cw.WatchCommits(ctx, func(id string) { heard <- id }) }()
	defer func() {
		cancel()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Error("WatchCommits still running 10s after its context ended")
		}
	}()
	// hear waits for a notice of id; "" (notices may have been missed)
	// and other builds' ids are passed over.
	hear := func(id string, within time.Duration) bool {
		deadline := time.After(within)
		for {
			select {
			case got := <-heard:
				if got == id {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	create(t, s, NewBuild("watched", At(0)))
	// The watcher listens some time after it starts: append until an
	// append is heard, then every commit must be.
	for i := 0; !hear("watched", 200*time.Millisecond); i++ {
		if i == 50 {
			t.Fatal("no append heard in 50 tries")
		}
		appendOK(t, s, "watched", BatchOf("warm-up"), At(1))
	}
	create(t, s, NewBuild("other", At(0)))
	appendOK(t, s, "other", BatchOf("a"), At(2))
	if !hear("other", 10*time.Second) {
		t.Error("append to other not heard")
	}
	finishOK(t, s, "other", buildlog.StatusReady, At(3))
	if !hear("other", 10*time.Second) {
		t.Error("finish of other not heard")
	}
}
