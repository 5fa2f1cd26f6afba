package httpapi

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"buildlog"
	"buildlog/internal/sqlite"
	"buildlog/internal/storetest"
)

// gatedStore is the real SQLite store with ReadLog counted and held at a
// gate, so a test can order reads precisely.
type gatedStore struct {
	buildlog.Store
	reads   atomic.Int32
	started chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) ReadLog(ctx context.Context, id string, from uint64, max int) ([]buildlog.Chunk, error) {
	s.reads.Add(1)
	s.started <- struct{}{}
	<-s.gate
	return s.Store.ReadLog(ctx, id, from, max)
}

func newGatedStore(t *testing.T) *gatedStore {
	t.Helper()
	st, err := sqlite.Open(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateBuild(t.Context(), storetest.NewBuild("b", storetest.At(0))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(t.Context(), "b", storetest.BatchOf("one", "two", "three"), storetest.At(1)); err != nil {
		t.Fatal(err)
	}
	return &gatedStore{Store: st, started: make(chan struct{}, 16), gate: make(chan struct{})}
}

// Followers woken by the same commit share one store read, and each gets
// a slice of its own.
func TestReadGroupShares(t *testing.T) {
	s := newGatedStore(t)
	var g readGroup
	wake := make(chan struct{})
	const readers = 8
	var wg sync.WaitGroup
	got := make([][]buildlog.Chunk, readers)
	errs := make([]error, readers)
	wg.Add(1)
	go func() {
		defer wg.Done()
		got[0], errs[0] = g.read(t.Context(), s, "b", 1, wake)
	}()
	<-s.started // the leader's read is under way
	for i := 1; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = g.read(t.Context(), s, "b", 1, wake)
		}()
	}
	// Give the others time to join; one that did not would be counted.
	time.Sleep(100 * time.Millisecond)
	close(s.gate)
	wg.Wait()
	if n := s.reads.Load(); n != 1 {
		t.Fatalf("%d store reads for %d readers at one offset, want 1", n, readers)
	}
	for i := range readers {
		if errs[i] != nil || len(got[i]) != 1 || got[i][0].Count != 3 {
			t.Fatalf("reader %d: %v, %v", i, got[i], errs[i])
		}
	}
	got[0][0] = got[0][0].From(2) // trimming one reader's result...
	if got[1][0].First != 0 {
		t.Fatal("...moved another's")
	}
}

// A follower holding a newer wake channel must not join a read begun for
// an older one: that read may miss the commit that woke it.
func TestReadGroupNeverSharesAnOlderRead(t *testing.T) {
	s := newGatedStore(t)
	var g readGroup
	older, newer := make(chan struct{}), make(chan struct{})
	done := make(chan error, 2)
	go func() {
		_, err := g.read(t.Context(), s, "b", 0, older)
		done <- err
	}()
	<-s.started
	go func() {
		_, err := g.read(t.Context(), s, "b", 0, newer)
		done <- err
	}()
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the newer follower joined a read begun for an older wake-up")
	}
	close(s.gate)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// buildCounter is the real SQLite store with Build counted and held at a
// gate.
type buildCounter struct {
	buildlog.Store
	builds  atomic.Int32
	started chan struct{}
	gate    chan struct{}
}

func (s *buildCounter) Build(ctx context.Context, id string) (*buildlog.Build, error) {
	s.builds.Add(1)
	s.started <- struct{}{}
	<-s.gate
	return s.Store.Build(ctx, id)
}

// Followers woken together with nothing at their offset share one status
// check; a newer wake-up gets one of its own.
func TestReadGroupSharesStatus(t *testing.T) {
	g0 := newGatedStore(t)
	s := &buildCounter{Store: g0.Store, started: make(chan struct{}, 16), gate: make(chan struct{})}
	var g readGroup
	wake, newer := make(chan struct{}), make(chan struct{})
	const followers = 8
	var wg sync.WaitGroup
	errs := make(chan error, followers+1)
	wg.Go(func() {
		b, err := g.status(t.Context(), s, "b", wake)
		if err == nil && b.NextOffset != 3 {
			err = errors.New("wrong build record")
		}
		errs <- err
	})
	<-s.started
	for range followers - 1 {
		wg.Go(func() { _, err := g.status(t.Context(), s, "b", wake); errs <- err })
	}
	wg.Go(func() { _, err := g.status(t.Context(), s, "b", newer); errs <- err })
	select {
	case <-s.started: // the newer wake-up's own check
	case <-time.After(10 * time.Second):
		t.Fatal("a newer wake-up joined an older status check")
	}
	time.Sleep(100 * time.Millisecond) // give the others time to join; one that did not would be counted
	close(s.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := s.builds.Load(); n != 2 {
		t.Fatalf("%d status checks for %d followers of one wake-up and 1 of another, want 2", n, followers)
	}
}
